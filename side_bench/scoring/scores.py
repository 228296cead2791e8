"""Scoring candidates against a training set: k-NN once, then every metric reads it (``rows.py``).

``Reference`` holds what is computed once per training set (its distinct images, their
features, the indices); ``CandidateScores`` holds what the metrics read for one set of
candidates, per candidate, so that it can be stored and every metric recomputed later.
Library objects (no printing).

Candidates are scored against the *distinct* images of the training set: bit-identical
training images (a duplicated image, a planted canary) are collapsed into one before the
indices are built, with their multiplicity kept. So an exact copy of a duplicated image has
d1 = 0 and d2 > 0 (a Gu copy, where scoring every copy would give 0/0), and UMS counts
distinct images. Every neighbour index reported is a training-set index: the first of the
image's copies (``Reference.representatives``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from side_bench.errors import BenchError
from side_bench.scoring.knn import ExactIndex, in_band


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


# Per candidate, the training images at or above the lowest band edge are kept (for UMS and
# rescoring) up to this many, the most similar first; a candidate with more is marked.
HITS_CAP = 1024
# Pixel neighbours averaged for Carlini et al.'s l2 (their 50 nearest training images).
KNN_NEIGHBOURS = 50


def _f64(values) -> np.ndarray:
    """float64, the precision the exact distances are computed and stored in (records written
    before they were are float32, and are read back as those float32 values)."""
    return np.array(values, dtype=np.float64)  # a writable copy (Parquet columns are read-only views)


def distinct_images(flat: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit-identical rows of ``flat`` (N, D) collapsed: ``(distinct_of, representatives,
    multiplicity)``, where row i is distinct image ``distinct_of[i]``, distinct image j is row
    ``representatives[j]`` (the first of its copies; ascending) and has ``multiplicity[j]`` copies.

    Rows are grouped by two exact integer keys of their bits (a sum and a weighted sum, mod
    2^64: order-free, so no float rounding can split two copies), then the members of a group
    are compared exactly, so a key collision never merges different images. -0.0 and 0.0 are
    the same value and count as equal. O(N x D), chunked.
    """
    n = len(flat)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    bits = (flat.detach().float().reshape(n, -1) + 0.0).contiguous().cpu().numpy().view(np.uint32)
    weights = np.random.default_rng(0).integers(1, 2**63, size=bits.shape[1], dtype=np.uint64)
    keys = np.empty((n, 2), dtype=np.uint64)
    step = max(1, (64 * 2**20) // (8 * max(1, bits.shape[1])))
    with np.errstate(over="ignore"):  # unsigned wrap-around is the intended mod 2^64
        for start in range(0, n, step):
            block = bits[start : start + step].astype(np.uint64)
            keys[start : start + step, 0] = block.sum(axis=1)
            keys[start : start + step, 1] = (block * weights).sum(axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    first_of = np.full(group.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first_of, group, np.arange(n))
    rep_of = first_of[group]
    for row in np.flatnonzero(rep_of != np.arange(n)):  # a duplicate by its keys: check its bits
        if not np.array_equal(bits[row], bits[rep_of[row]]):
            same = [r for r in range(row) if rep_of[r] == r and np.array_equal(bits[r], bits[row])]
            rep_of[row] = same[0] if same else row
    representatives = np.unique(rep_of)
    distinct_of = np.searchsorted(representatives, rep_of).astype(np.int64)
    return distinct_of, representatives.astype(np.int64), np.bincount(distinct_of).astype(np.int64)


@dataclass
class CandidateScores:
    """Per-candidate nearest-neighbour results against a training set: what metrics read.

    Built fresh by ``Reference.score`` or from a cell's stored records
    (``side_bench.results.candidates.load_scores``): the same float64 values either way, so every
    metric gives bit-identical results on both, and ``rescore`` reproduces a run exactly.

    Band hits are kept as flat pairs: candidate ``hit_rows[j]`` has similarity
    ``hit_similarity[j]`` to training image ``hit_index[j]``, for every pair at or above
    ``hits_floor`` (the lowest band edge when scored), at most ``HITS_CAP`` per candidate.

    Neighbours are distinct training images (module docstring): ``nearest_index`` and
    ``hit_index`` name the first copy of each; ``distinct_of`` maps every training index to
    its distinct image and ``multiplicity`` says how many copies each distinct image has (a
    canary's duplication count). Scores made before duplicates were collapsed have neither
    and read as every image distinct.
    """

    best_similarity: np.ndarray  # (n,) float64: exact similarity to the nearest
    nearest_index: np.ndarray  # (n,) int64: the nearest training image
    second_similarity: np.ndarray  # (n,) float64; NaN when the training set has one image
    pixel_d1: np.ndarray  # (n,) normalised pixel distance ||g - NN1|| / sqrt(C*H*W)
    pixel_d2: np.ndarray  # (n,) the same to the second-nearest (NaN with one training image)
    pixel_knn_mean: np.ndarray  # (n,) mean pixel distance to the ``knn_neighbours`` nearest
    knn_neighbours: int
    hit_rows: np.ndarray  # (P,) int64
    hit_index: np.ndarray  # (P,) int64
    hit_similarity: np.ndarray  # (P,) float64
    hits_floor: float | None  # pairs below it were not kept (None: no bands, no pairs)
    hits_truncated: int  # candidates that had more than HITS_CAP pairs above the floor
    n_train: int
    sample_index: np.ndarray  # (n,) int64: the generation each candidate is (its noise seed index)
    targets: np.ndarray | None = None  # (n,) int64: class/cluster each was guided to (-1: none)
    ranker_scores: dict[str, np.ndarray] = field(default_factory=dict)
    ranker_thresholds: dict[str, float | None] = field(default_factory=dict)
    model: Any = None  # the target model context for model-level metrics; None when rescoring
    distinct_of: np.ndarray | None = None  # (n_train,) int64: training image -> its distinct image
    multiplicity: np.ndarray | None = None  # (n_distinct,) int64: copies of each distinct image
    # (n_distinct,) int64: each distinct image's planted canary count d (0: not a canary); None
    # when the cell planted no canaries (run/canaries.py). A canary's multiplicity is d too,
    # unless the data set held the image already (then it is not planted).
    canaries: np.ndarray | None = None
    # (n,) int64: the 1-based draw of the sampler that made candidate i, in the order the
    # extraction sampled (side_bench/cost.py): a prefix of k candidates needed draws up to
    # max(draws[:k]). None: candidate i was draw i + 1 (or the attack's cost was not measured).
    draws: np.ndarray | None = None
    # band -> its (rows, training indices): UMS's bootstrap asks for them once per resample
    _band_pairs: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        for name in ("best_similarity", "second_similarity", "pixel_d1", "pixel_d2", "pixel_knn_mean",
                     "hit_similarity"):
            setattr(self, name, _f64(getattr(self, name)))
        for name in ("nearest_index", "hit_rows", "hit_index", "sample_index"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        if self.targets is not None:
            self.targets = np.asarray(self.targets, dtype=np.int64)
        if self.distinct_of is None:  # every training image its own distinct image
            self.distinct_of = np.arange(self.n_train, dtype=np.int64)
            self.multiplicity = np.ones(self.n_train, dtype=np.int64)
        self.distinct_of = np.asarray(self.distinct_of, dtype=np.int64)
        self.multiplicity = np.asarray(self.multiplicity, dtype=np.int64)
        if self.canaries is not None:
            self.canaries = np.asarray(self.canaries, dtype=np.int64)
        if self.draws is not None:
            self.draws = np.asarray(self.draws, dtype=np.int64)

    @property
    def n_candidates(self) -> int:
        return len(self.best_similarity)

    @property
    def n_distinct(self) -> int:
        """Distinct training images: what the candidates were scored against."""
        return len(self.multiplicity)

    @property
    def representatives(self) -> np.ndarray:
        """(n_distinct,) the training index standing for each distinct image (its first copy)."""
        first = np.full(self.n_distinct, self.n_train, dtype=np.int64)
        np.minimum.at(first, self.distinct_of, np.arange(self.n_train))
        return first

    def in_band(self, band: Band) -> np.ndarray:
        """Boolean mask: which candidates have their best similarity in the band."""
        return in_band(torch.from_numpy(self.best_similarity), band.edges).numpy()

    def candidates_in_band(self, band: Band) -> int:
        """How many candidates have their best similarity in the band (AMS numerator)."""
        return int(self.in_band(band).sum())

    def band_pairs(self, band: Band) -> tuple[np.ndarray, np.ndarray]:
        """(candidate rows, training indices) of every pair whose similarity is in the band."""
        if self.hits_floor is None or band.low < self.hits_floor - 1e-12:
            raise BenchError(f"band {band.name} [{band.low}, {band.high}): training images below "
                             f"{self.hits_floor} were not kept for these candidates; UMS needs them")
        if band not in self._band_pairs:
            mask = in_band(torch.from_numpy(self.hit_similarity), band.edges).numpy()
            self._band_pairs[band] = (self.hit_rows[mask], self.hit_index[mask])
        return self._band_pairs[band]

    def train_images_in_band(self, band: Band, rows: np.ndarray | None = None) -> int:
        """Distinct training images some candidate is within the band of (UMS numerator);
        ``rows``: only these candidates (indices, repeats allowed)."""
        hit_rows, hit_index = self.band_pairs(band)
        if rows is not None:
            chosen = np.zeros(self.n_candidates, dtype=bool)
            chosen[rows] = True
            hit_index = hit_index[chosen[hit_rows]]
        return int(np.unique(hit_index).size)

    def pixel_neighbours(self, k: int) -> np.ndarray:
        """Normalised pixel distances to the nearest and second-nearest, (n, k) for k <= 2."""
        if k > 2:
            raise BenchError(f"pixel_neighbours({k}): only the 2 nearest are kept; use pixel_knn_mean")
        return np.stack([self.pixel_d1, self.pixel_d2], axis=1)[:, :k]


class Reference:
    """A training set prepared for search: duplicates collapsed, the distinct images'
    features embedded once, exact indices built over them.

    ``distinct_of`` (n_train,) maps each training image to its distinct image,
    ``representatives`` (n_distinct,) gives each distinct image's first training index and
    ``multiplicity`` (n_distinct,) its number of copies. ``canaries`` (training index -> planted
    count, for each canary's first copy) becomes ``canary_count`` (n_distinct,), 0 elsewhere.
    """

    def __init__(self, train01: torch.Tensor, features, *, backend: str = "auto",
                 device: torch.device | str = "cpu", batch_size: int = 512,
                 canaries: dict[int, int] | None = None):
        self.train01 = train01.float().cpu()
        self.features = features
        self.backend = backend
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.distinct_of, self.representatives, self.multiplicity = distinct_images(
            self.train01.reshape(len(self.train01), -1))
        # without duplicates (the usual case) the images themselves, not a copy of them
        self.distinct01 = (self.train01 if len(self.representatives) == len(self.train01)
                           else self.train01[torch.from_numpy(self.representatives)])
        self.index = ExactIndex(self.embed(self.distinct01), features.similarity, backend, self.device)
        self.canary_count = None
        if canaries is not None:
            self.canary_count = np.zeros(len(self.representatives), dtype=np.int64)
            for index, count in canaries.items():
                self.canary_count[self.distinct_of[index]] = count

    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(images01), self.batch_size):
                batch = images01[start : start + self.batch_size]
                parts.append(self.features.embed(batch).float().cpu())
        return torch.cat(parts) if parts else torch.empty(0, 0)

    @cached_property
    def pixel_index(self) -> ExactIndex:
        """Pixel-space index of the distinct images, for Gu et al.'s ratio and Carlini et al.'s distance."""
        return ExactIndex(self.distinct01.reshape(len(self.distinct01), -1), "l2", self.backend, self.device)

    def score(self, candidates01: torch.Tensor, bands: list[Band], *, targets=None) -> CandidateScores:
        """Every candidate's neighbours: features (nearest two, band pairs) and pixels (50 nearest)."""
        if len(candidates01) == 0:
            raise BenchError("no candidate images to score")
        if candidates01.shape[1:] != self.train01.shape[1:]:
            raise BenchError(
                f"candidates have shape {tuple(candidates01.shape[1:])} per image, "
                f"the training set {tuple(self.train01.shape[1:])}"
            )
        candidates01 = candidates01.float().cpu()
        n, n_distinct = len(candidates01), len(self.representatives)
        floor = min((b.low for b in bands), default=None)
        (sims, idx), pairs = self.index.search_with_pairs(self.embed(candidates01), 2, floor)
        flat = candidates01.reshape(n, -1)
        distances, _ = self.pixel_index.nearest_distances(flat, max(2, KNN_NEIGHBOURS))
        distances = distances.numpy()  # float64, exact: a copy is at 0
        nan = np.full(n, np.nan)
        knn = min(KNN_NEIGHBOURS, n_distinct)
        if pairs is not None:  # distinct indices -> training indices (the first copy)
            pairs = (pairs[0], torch.from_numpy(self.representatives)[pairs[1]], pairs[2])
        hit_rows, hit_index, hit_sims, truncated = _cap_pairs(pairs)
        return CandidateScores(
            best_similarity=sims[:, 0].numpy(), nearest_index=self.representatives[idx[:, 0].numpy()],
            second_similarity=sims[:, 1].numpy() if n_distinct > 1 else nan,
            pixel_d1=distances[:, 0], pixel_d2=distances[:, 1] if n_distinct > 1 else nan,
            pixel_knn_mean=distances[:, :knn].mean(axis=1),
            knn_neighbours=knn, hit_rows=hit_rows, hit_index=hit_index, hit_similarity=hit_sims,
            hits_floor=floor, hits_truncated=truncated, n_train=len(self.train01), sample_index=np.arange(n),
            targets=None if targets is None else np.asarray(targets),
            distinct_of=self.distinct_of, multiplicity=self.multiplicity, canaries=self.canary_count,
        )


def _cap_pairs(pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pairs sorted by candidate then similarity (best first), at most HITS_CAP per candidate."""
    if pairs is None:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float64), 0
    rows, cols, sims = (part.numpy() for part in pairs)
    order = np.lexsort((cols, -sims.astype(np.float64), rows))
    rows, cols, sims = rows[order], cols[order], sims[order].astype(np.float64)
    starts = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - starts
    keep = rank < HITS_CAP
    truncated = int(np.unique(rows[~keep]).size)
    return rows[keep], cols[keep], sims[keep], truncated
