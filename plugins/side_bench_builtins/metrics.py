"""Metrics of method.md section 3: AMS, UMS, 95th percentile, Gu et al.'s ratio, Carlini's l2.

Each returns a ``MetricValue`` with what is behind it (method.md section 7): a rate as k of
N_G with a Wilson interval; UMS with the occupancy interval of distinct images; p95 with the
order-statistic interval of a quantile (``side_bench.scoring.stats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from side_bench.plugin_api import BenchError, MetricValue, distinct, hookimpl, quantile, rate


class AMS:
    """Share of candidates whose best similarity to a training image lies in the band."""

    uses_bands = True
    direction = "higher"
    unit = "rate"
    description = "average memorization score: share of candidates whose nearest training image is in the band"
    default_copy_criterion = True  # compare's copy without --by: a best similarity in the band

    def compute(self, scores, band) -> MetricValue:
        return rate(scores.candidates_in_band(band), scores.n_candidates)

    def memorized(self, scores, band) -> np.ndarray:
        """Per candidate: is its best similarity in the band (a copy for ``compare``'s default)."""
        return scores.in_band(band)


class UMS:
    """Training images within the band of some candidate, / N_G.

    Counts every training image in the band, not only the nearest, so it can exceed AMS. Its
    interval is the occupancy interval of ``stats.distinct`` (method.md section 7): distinct
    hits are not a count of independent trials, and a bootstrap over candidates finds fewer
    distinct images in every resample, so its interval sits below the value.
    """

    uses_bands = True
    direction = "higher"
    unit = "fraction"  # distinct training images / N_G: not k of N_G, may exceed 1
    description = "unique memorization score: distinct training images within the band of some candidate, / N_G"

    def compute(self, scores, band) -> MetricValue:
        hit_rows, hit_index = scores.band_pairs(band)
        # the candidates were scored against the distinct images: with duplicates, a copy of an
        # image already hit is not an unseen image (n_train would widen the interval past n_distinct)
        return distinct(hit_rows, hit_index, scores.n_candidates, scores.n_distinct)


class P95:
    """95th percentile of the candidates' best similarity (linear interpolation)."""

    uses_bands = False
    direction = "higher"
    unit = "similarity"
    description = "95th percentile of each candidate's best similarity to the training set"

    def compute(self, scores, band) -> MetricValue:
        # the order-statistic interval: a percentile bootstrap of a tail quantile undercovers
        # (0.93 at 256 candidates in tests/test_coverage.py)
        return quantile(scores.best_similarity, 0.95)


class GuRatio:
    """Gu et al. 2023: share of candidates with ||g - NN1|| / ||g - NN2|| < 1/3 in pixel space."""

    uses_bands = False
    direction = "higher"
    unit = "rate"
    description = "Gu et al.: share of candidates with pixel distance ratio NN1/NN2 < 1/3"
    threshold = 1.0 / 3.0

    def compute(self, scores, band) -> MetricValue:
        if scores.n_train < 2:
            return MetricValue(None, reason="needs at least 2 training images (nearest and second-nearest)")
        return rate(int(self.memorized(scores).sum()), scores.n_candidates)

    @classmethod
    def memorized(cls, scores, band=None) -> np.ndarray:
        """Per candidate: is it a copy by Gu et al.'s test (the rankers' metrics and ``compare --by gu`` use it).
        With one training image only exact copies are (the ratio has no second neighbour)."""
        nearest = np.asarray(scores.pixel_d1, dtype=np.float64)
        second = np.asarray(scores.pixel_d2, dtype=np.float64)
        # An exact copy (nearest = 0) is memorized even when two training images coincide.
        ratio = np.where(nearest == 0, 0.0, nearest / np.maximum(second, 1e-12))
        return ratio < cls.threshold


class CarliniL2:
    """Carlini et al. 2023: l = ||g - NN1|| / (alpha * mean ||g - s|| over the 50 nearest s);
    the share of candidates with l < delta. alpha = 0.5, delta a setting (default 0.5)."""

    uses_bands = False
    direction = "higher"
    unit = "rate"
    description = "Carlini et al.: share of candidates with l2 to NN1 / (alpha x mean l2 to the 50 nearest) < delta"

    @dataclass
    class Settings:
        alpha: float = 0.5
        delta: float = 0.5
        neighbours: int = 50

    def __init__(self, settings: CarliniL2.Settings = None):
        self.settings = settings or CarliniL2.Settings()

    def compute(self, scores, band) -> MetricValue:
        if reason := self._cannot(scores):
            return MetricValue(None, reason=reason)
        return rate(int(self.memorized(scores, band).sum()), scores.n_candidates)

    def _cannot(self, scores) -> str | None:
        """Why l cannot be computed on these scores (None: it can)."""
        if scores.n_train < self.settings.neighbours or scores.knn_neighbours != self.settings.neighbours:
            return (f"needs the {self.settings.neighbours} nearest training images; "
                    f"{scores.knn_neighbours} were kept (training set of {scores.n_train})")
        return None

    def memorized(self, scores, band=None) -> np.ndarray:
        """Per candidate: l < delta (a copy by Carlini et al.'s test)."""
        if reason := self._cannot(scores):
            raise BenchError(f"metric 'carlini-l2': {reason}")
        denominator = self.settings.alpha * scores.pixel_knn_mean
        l2 = np.where(denominator > 0, scores.pixel_d1 / np.maximum(denominator, 1e-12), 0.0)
        return l2 < self.settings.delta


@hookimpl
def register_metrics(register):
    register("ams", AMS)
    register("ums", UMS)
    register("p95", P95, aliases=("percentile-95",))
    register("gu-ratio", GuRatio, aliases=("gu",))
    register("carlini-l2", CarliniL2, aliases=("carlini",))
