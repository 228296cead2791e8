"""Scoring candidates against a training set: k-NN once, then every metric from it.

``Reference`` holds what is computed once per training set (its features, its indices);
``Scores`` holds what the metrics read for one set of candidates. Both are library objects
(no printing); ``score_images`` is the whole stage, used by the runner and by ``score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from side_bench.errors import BenchError
from side_bench.knn import ExactIndex, in_band


@dataclass(frozen=True)
class Band:
    name: str
    low: float
    high: float

    @property
    def edges(self) -> tuple[float, float]:
        return (self.low, self.high)


def make_bands(table: dict, where: str) -> list[Band]:
    """Bands from {"name": [low, high]}: edges ordered, bands disjoint (checked here)."""
    bands = []
    for name, edges in table.items():
        if (
            not isinstance(edges, (list, tuple))
            or len(edges) != 2
            or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
        ):
            raise BenchError(f"{where}: bands.{name}: expected [low, high], got {edges!r}")
        low, high = float(edges[0]), float(edges[1])
        if not low < high:
            raise BenchError(f"{where}: bands.{name}: low edge {low} must be below high edge {high}")
        bands.append(Band(name, low, high))
    ordered = sorted(bands, key=lambda b: b.low)
    for first, second in zip(ordered, ordered[1:], strict=False):
        if second.low < first.high:
            raise BenchError(
                f"{where}: bands {first.name!r} and {second.name!r} overlap "
                f"([{first.low}, {first.high}) and [{second.low}, {second.high}))"
            )
    return ordered


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (samples can overshoot a little)."""
    return ((images.float() + 1) / 2).clamp(0, 1)


class Reference:
    """A training set prepared for search: features embedded once, exact indices built."""

    def __init__(self, train01: torch.Tensor, features, *, backend: str = "auto",
                 device: torch.device | str = "cpu", batch_size: int = 512):
        self.train01 = train01.float().cpu()
        self.features = features
        self.backend = backend
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.index = ExactIndex(self.embed(self.train01), features.similarity, backend, self.device)

    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(images01), self.batch_size):
                batch = images01[start : start + self.batch_size]
                parts.append(self.features.embed(batch).float().cpu())
        return torch.cat(parts) if parts else torch.empty(0, 0)

    @cached_property
    def pixel_index(self) -> ExactIndex:
        """Pixel-space index, for Gu et al.'s ratio and Carlini et al.'s distance."""
        return ExactIndex(self.train01.reshape(len(self.train01), -1), "l2", self.backend, self.device)


class Scores:
    """Nearest-neighbour results of candidates against a Reference, computed lazily once."""

    def __init__(self, candidates01: torch.Tensor, reference: Reference, bands: list[Band]):
        if candidates01.shape[1:] != reference.train01.shape[1:]:
            raise BenchError(
                f"candidates have shape {tuple(candidates01.shape[1:])} per image, "
                f"the training set {tuple(reference.train01.shape[1:])}"
            )
        self.candidates01 = candidates01.float().cpu()
        self.reference = reference
        self.bands = bands
        self.n_candidates = len(candidates01)
        self.n_train = len(reference.train01)

    @cached_property
    def embedded(self) -> torch.Tensor:
        return self.reference.embed(self.candidates01)

    @cached_property
    def _fused(self):
        """Nearest neighbours and band hits from one pass over the distances (torch backend)."""
        (sims, idx), masks = self.reference.index.search_with_hits(self.embedded, 1, [b.edges for b in self.bands])
        return (sims[:, 0], idx[:, 0]), dict(zip(self.bands, masks, strict=False))

    @cached_property
    def nearest(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarity, index) of each candidate's nearest training image."""
        if self.reference.index.backend == "torch" and self.bands:
            return self._fused[0]
        sims, idx = self.reference.index.search(self.embedded, 1)
        return sims[:, 0], idx[:, 0]

    @property
    def best_similarity(self) -> np.ndarray:
        return self.nearest[0].numpy().astype(np.float64)

    @cached_property
    def _band_masks(self) -> dict[Band, torch.Tensor]:
        if self.reference.index.backend == "torch":
            return self._fused[1]
        masks = self.reference.index.base_hits(self.embedded, [b.edges for b in self.bands])
        return dict(zip(self.bands, masks, strict=False))

    def candidates_in_band(self, band: Band) -> int:
        """How many candidates have their best similarity in the band (AMS numerator)."""
        return int(in_band(self.nearest[0], band.edges).sum())

    def train_images_in_band(self, band: Band) -> int:
        """How many training images some candidate is within the band of (UMS numerator)."""
        return int(self._band_masks[band].sum())

    def pixel_neighbours(self, k: int) -> np.ndarray:
        """Normalised pixel distances ||g - x|| / sqrt(C*H*W) to the k nearest, (N_G, k)."""
        cached = getattr(self, "_pixel", None)
        if cached is None or cached.shape[1] < k:
            flat = self.candidates01.reshape(self.n_candidates, -1)
            sims, _ = self.reference.pixel_index.search(flat, k)
            self._pixel = (1.0 - sims).clamp_min(0).numpy().astype(np.float64)
        return self._pixel[:, :k]


def score_images(candidates01: torch.Tensor, reference: Reference, metrics: dict,
                 bands: list[Band]) -> list[dict]:
    """Rows {metric, band, band_low, band_high, value} for every metric (x band)."""
    if len(candidates01) == 0:
        raise BenchError("no candidate images to score")
    return metric_rows(Scores(candidates01, reference, bands), metrics)


def metric_rows(scores: Scores, metrics: dict) -> list[dict]:
    """Every metric (x band) of one set of Scores."""
    bands = scores.bands
    rows = []
    for name, metric in metrics.items():
        for band in bands if metric.uses_bands else [None]:
            value = float(metric.compute(scores, band))
            rows.append({
                "metric": name,
                "band": band.name if band else None,
                "band_low": band.low if band else None,
                "band_high": band.high if band else None,
                "value": value,
            })
    return rows


def with_null(rows: list[dict], null_rows: list[dict]) -> list[dict]:
    """Put each null-baseline value beside the value of the same metric and band."""
    null = {(r["metric"], r["band"]): r["value"] for r in null_rows}
    return [{**row, "null_value": null[(row["metric"], row["band"])]} for row in rows]
