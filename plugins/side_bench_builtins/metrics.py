"""Metrics of method.md section 3: AMS, UMS, 95th percentile, Gu et al.'s ratio, Carlini's l2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from side_bench.hookspecs import hookimpl


class AMS:
    """Average memorization score: share of candidates whose best similarity is in the band."""

    uses_bands = True

    def compute(self, scores, band) -> float:
        return scores.candidates_in_band(band) / scores.n_candidates


class UMS:
    """Unique memorization score: training images within the band of some candidate, / N_G.

    Counts every training image in the band, not only the nearest, so it can exceed AMS.
    """

    uses_bands = True

    def compute(self, scores, band) -> float:
        return scores.train_images_in_band(band) / scores.n_candidates


class P95:
    """95th percentile of the candidates' best similarity (linear interpolation)."""

    uses_bands = False

    def compute(self, scores, band) -> float:
        return float(np.percentile(scores.best_similarity, 95))


class GuRatio:
    """Gu et al. 2023: share of candidates with ||g - NN1|| / ||g - NN2|| < 1/3 in pixel space."""

    uses_bands = False
    threshold = 1.0 / 3.0

    def compute(self, scores, band) -> float:
        if scores.n_train < 2:
            return float("nan")
        distances = scores.pixel_neighbours(2)
        nearest, second = distances[:, 0], distances[:, 1]
        # An exact copy (nearest = 0) is memorized even when two training images coincide.
        ratio = np.where(nearest == 0, 0.0, nearest / np.maximum(second, 1e-12))
        return float(np.mean(ratio < self.threshold))


class CarliniL2:
    """Carlini et al. 2023: l = ||g - NN1|| / (alpha * mean ||g - s|| over the 50 nearest s);
    the share of candidates with l < delta. alpha = 0.5, delta a setting (default 0.5)."""

    uses_bands = False

    @dataclass
    class Settings:
        alpha: float = 0.5
        delta: float = 0.5
        neighbours: int = 50

    def __init__(self, settings: CarliniL2.Settings = None):
        self.settings = settings or CarliniL2.Settings()

    def compute(self, scores, band) -> float:
        distances = scores.pixel_neighbours(min(self.settings.neighbours, scores.n_train))
        denominator = self.settings.alpha * distances.mean(axis=1)
        l2 = np.where(denominator > 0, distances[:, 0] / np.maximum(denominator, 1e-12), 0.0)
        return float(np.mean(l2 < self.settings.delta))


@hookimpl
def register_metrics(register):
    register("ams", AMS)
    register("ums", UMS)
    register("p95", P95, aliases=("percentile-95",))
    register("gu-ratio", GuRatio, aliases=("gu",))
    register("carlini-l2", CarliniL2, aliases=("carlini",))
