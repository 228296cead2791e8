"""Canaries: images planted in a training set a known number of times (issue 19).

A suite's ``canaries = { counts = [1, 2, 4, 8, 16, 32], per_count = 4 }`` (top level, beside
``[dataset]``) makes every cell's training set the scale's images plus, for each count d,
``per_count`` images from outside that subset and outside the held-out images, each inserted d
times (appended after the scale's images, copies of a canary together). Which images are
canaries, and their counts, enter the data identity (so the model cache key, the reference and
the cell hash, through the suite config), are written to the run folder
(``canaries/<scale>-<seed>.json``) and reach the metrics as ``CandidateScores.canaries``.

Where the canaries come from works for every dataset plugin: a dataset may provide
``canary_pool(scale, seed, n) -> (images, labels | None)``, n images in [-1, 1] outside the
scale's subset and the held-out split; without it, the contract's own promise is used: ``load``
returns the first ``scale`` images of a seed-fixed permutation (so scales nest), hence
``load(scale + n)``'s last n training images are outside ``load(scale)``'s and its held-out
images are the same. Both are checked (bit for bit), so a dataset that does not nest its scales
fails with one line instead of planting an image it already holds. The pool is the
permutation itself, so the choice is seeded by the cell's seed and the same for every attack of
a cell. An image bit-identical to one of the scale's images, a held-out image or an earlier
canary is skipped: a held-out image is never a canary, so the null baseline copies a canary
only where the copy criterion is fooled by a different image (none on digits' runs so far).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from side_bench.errors import BenchError
from side_bench.hookspecs import DataSplit
from side_bench.registry import traits_of

MAX_COUNT = 100_000  # copies of one canary; beyond it a suite is a typo
SPARE = 2  # the pool asked for holds SPARE x the canaries needed, for skipped duplicates


@dataclass(frozen=True)
class CanarySpec:
    counts: tuple[int, ...]  # the duplication counts d, ascending
    per_count: int  # canaries per count

    @property
    def n_canaries(self) -> int:
        return len(self.counts) * self.per_count

    def as_config(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "per_count": self.per_count}


def parse_canaries(value: Any, where: str) -> CanarySpec | None:
    """``canaries = { counts = [...], per_count = N }`` -> a spec (None when absent)."""
    if value is None:
        return None
    at = f"{where}: canaries"
    if not isinstance(value, dict):
        raise BenchError(f"{at}: expected a table {{ counts = [1, 2, 4], per_count = 4 }}, got {value!r}")
    unknown = sorted(set(value) - {"counts", "per_count"})
    if unknown:
        raise BenchError(f"{at}: unknown key {unknown[0]!r} (expected counts and per_count)")
    counts = value.get("counts")
    if not isinstance(counts, list) or not counts:
        raise BenchError(f"{at}: counts: expected a non-empty list of copies per canary, e.g. [1, 2, 4, 8]")
    for count in counts:
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
            raise BenchError(f"{at}: counts: expected integers 1..{MAX_COUNT:,}, got {count!r}")
    if len(set(counts)) != len(counts):
        raise BenchError(f"{at}: counts: {sorted(c for c in counts if counts.count(c) > 1)[0]} is listed twice")
    per_count = value.get("per_count", 1)
    if not isinstance(per_count, int) or isinstance(per_count, bool) or per_count < 1:
        raise BenchError(f"{at}: per_count: expected a positive integer, got {per_count!r}")
    return CanarySpec(tuple(sorted(counts)), per_count)


def spec_from_config(config: dict) -> CanarySpec | None:
    """The spec a cell's config holds (absent: a suite without canaries)."""
    table = config.get("canaries")
    return CanarySpec(tuple(table["counts"]), table["per_count"]) if table else None


def image_digest(image: torch.Tensor) -> str:
    """sha256 of an image's float32 bits: names a canary in the identity and the run folder."""
    return hashlib.sha256(image.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


@dataclass
class PlantedCanaries:
    """Which training images of a cell are canaries: ``first_index[j]`` is the training index of
    canary j's first copy, ``count[j]`` its copies (they follow it), ``digest[j]`` its bits' hash,
    ``pool_position[j]`` where it was in the pool (the dataset's permutation after the scale)."""

    first_index: np.ndarray  # (K,) int64
    count: np.ndarray  # (K,) int64
    digest: list[str]
    pool_position: list[int]
    source: str  # "canary_pool" or "nested-load"

    def identity(self, spec: CanarySpec) -> dict[str, Any]:
        return {**spec.as_config(), "source": self.source,
                "images": [[int(p), int(c), d] for p, c, d in zip(self.pool_position, self.count, self.digest,
                                                                    strict=True)]}

    def by_training_index(self) -> dict[int, int]:
        """Training index of every canary's first copy -> its count (what ``Reference`` takes)."""
        return {int(i): int(c) for i, c in zip(self.first_index, self.count, strict=True)}

    def record(self, spec: CanarySpec, scale: int, seed: int) -> dict[str, Any]:
        """What ``canaries/<scale>-<seed>.json`` holds."""
        return {"scale": scale, "seed": seed, **spec.as_config(), "source": self.source,
                "canaries": [{"train_index": int(i), "count": int(c), "sha256": d, "pool_position": int(p)}
                             for i, c, d, p in zip(self.first_index, self.count, self.digest, self.pool_position,
                                                   strict=True)]}


def _pool(dataset, split: DataSplit, scale: int, seed: int, n: int, name: str):
    """(images, labels | None, source): at least ``n`` images outside the scale's and held-out sets."""
    traits = traits_of("datasets", dataset)
    if traits.canary_pool is not None:
        images, labels = traits.canary_pool(scale, seed, n)
        return images, labels, "canary_pool"
    available = traits.max_scale
    larger = scale + n if available is None else min(scale + n, available)
    if larger <= scale:
        raise BenchError(f"canaries: dataset {name!r} holds no image outside scale {scale} and its held-out "
                         f"split (max_scale {available}); use a smaller scale or held-out split")
    bigger = dataset.load(larger, seed)
    nested = (len(bigger.train) == larger and torch.equal(bigger.train[:scale], split.train)
              and torch.equal(bigger.heldout, split.heldout))
    if not nested:
        raise BenchError(f"canaries: dataset {name!r} does not nest its scales (load({larger}) does not begin "
                         f"with load({scale})'s images beside the same held-out ones); give it a "
                         "canary_pool(scale, seed, n) method (side_bench/hookspecs.py, Dataset)")
    labels = bigger.train_labels[scale:] if bigger.train_labels is not None else None
    return bigger.train[scale:], labels, "nested-load"


def plant(dataset, split: DataSplit, spec: CanarySpec, scale: int, seed: int, name: str
          ) -> tuple[DataSplit, PlantedCanaries]:
    """The split with its canaries planted, and which they are (see the module docstring)."""
    needed = spec.n_canaries
    images, labels, source = _pool(dataset, split, scale, seed, SPARE * needed, name)
    if images.shape[1:] != split.train.shape[1:]:
        raise BenchError(f"canaries: dataset {name!r}: pool images of shape {tuple(images.shape[1:])}, "
                         f"the training images {tuple(split.train.shape[1:])}")
    if (labels is None) != (split.train_labels is None):
        raise BenchError(f"canaries: dataset {name!r}: the pool and the training set disagree on labels")
    taken = {image_digest(image) for image in (*split.train, *split.heldout)}
    chosen, digests = [], []
    for position, image in enumerate(images):
        digest = image_digest(image)
        if digest in taken:  # already a training or held-out image, or an earlier canary
            continue
        taken.add(digest)
        chosen.append(position)
        digests.append(digest)
        if len(chosen) == needed:
            break
    if len(chosen) < needed:
        raise BenchError(f"canaries: dataset {name!r} has only {len(chosen)} distinct images outside scale "
                         f"{scale} and its held-out split; {needed} are needed ({len(spec.counts)} counts x "
                         f"{spec.per_count}); use a smaller scale, held-out split or per_count")
    counts = np.repeat(np.array(spec.counts, dtype=np.int64), spec.per_count)  # canary j -> its d
    index = torch.tensor(chosen, dtype=torch.long)
    copies = torch.repeat_interleave(index, torch.from_numpy(counts))
    first = len(split.train) + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    planted = PlantedCanaries(first_index=first, count=counts, digest=digests, pool_position=chosen, source=source)
    train_labels = (torch.cat([split.train_labels, labels[copies].long()])
                    if split.train_labels is not None else None)
    # replace, not a new DataSplit: optional fields a dataset sets (a reserve) carry over
    return dataclasses.replace(
        split, train=torch.cat([split.train, images[copies].float()]), train_labels=train_labels,
        identity={**split.identity, "canaries": planted.identity(spec)},
        train_source=None,  # the planted copies are no index into the package's data
    ), planted
