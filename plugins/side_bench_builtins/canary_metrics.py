"""Metrics of planted canaries (issue 19): which of the images planted d times come back.

A suite with ``canaries = { counts = [...], per_count = N }`` plants, for each count d, N
images d times in every cell's training set; ``scores.canaries`` gives each distinct training
image's planted count (0: not a canary). These metrics need it (``needs_canaries``: a suite
without canaries is refused at validation).

**A copy** is, by default (``criterion = "gu"``), Gu et al. (2023)'s test, the ``gu-ratio``
metric's ``memorized``: the candidate's nearest distinct training image is copied when its
pixel distance is below 1/3 of the second nearest's. With ``criterion = "band"`` the metric is
computed per similarity band and a candidate copies its nearest image when its best similarity
lies in the band (``ams``'s test).

- ``canary-recall``: canaries of count d (``count``; 0: every canary) copied by at least one
  candidate, out of the canaries of that count, with a Wilson interval. One row per count: give
  the metric once per d with an ``id`` (``{ id = "canary-recall-d8", name = "canary-recall",
  count = 8 }``); the leaderboard draws rows of one metric that differ in one setting as a curve
  against it (recall against d).
- ``canary-share``: of the copies, the share whose copied image is a canary.
- ``non-canary-rate``: copies of images that are not canaries, out of N_G (``gu-ratio`` counting
  only them): what the attack extracts of the data set itself.
- ``canary-precision-at-k``: of a ranker's top k candidates, the share that copy a canary.

The null baseline (the held-out images, never canaries) copies a canary only when the criterion
is fooled by a different image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from side_bench.plugin_api import BenchError, MetricValue, hookimpl, rate
from side_bench_builtins.metrics import GuRatio
from side_bench_builtins.ranking_metrics import ranker_column, ranking

CRITERIA = ("gu", "band")
NO_CANARIES = "no canaries in this cell (the suite plants none)"


@dataclass
class CriterionSettings:
    criterion: str = "gu"  # "gu": Gu et al.'s ratio < 1/3; "band": best similarity in the band

    def validate(self, where: str) -> None:
        if self.criterion not in CRITERIA:
            raise BenchError(f"{where}: criterion: expected one of {', '.join(CRITERIA)}, got {self.criterion!r}")


class _CanaryMetric:
    """What the canary metrics share: the copy criterion and the canary of each candidate."""

    direction = "higher"
    unit = "rate"
    needs_canaries = True
    Settings = CriterionSettings

    def __init__(self, settings=None):
        self.settings = settings or self.Settings()
        self.uses_bands = self.settings.criterion == "band"  # per band only when the band decides

    def copies(self, scores, band) -> np.ndarray:
        """Per candidate: is it a copy of its nearest distinct training image, by the criterion."""
        if self.settings.criterion == "band":
            return scores.in_band(band)
        return GuRatio.memorized(scores)

    @staticmethod
    def canary_of(scores) -> np.ndarray:
        """Per candidate: the planted count of its nearest training image (0: not a canary)."""
        return scores.canaries[scores.distinct_of[scores.nearest_index]]

    def cannot(self, scores) -> MetricValue | None:
        if getattr(scores, "canaries", None) is None:
            return MetricValue(None, reason=NO_CANARIES)
        if self.settings.criterion == "gu" and scores.n_train < 2:
            return MetricValue(None, reason="needs at least 2 training images (Gu et al.'s ratio)")
        return None


class CanaryRecall(_CanaryMetric):
    """Canaries of count d copied at least once, out of the canaries of count d."""

    description = "canaries of a duplication count copied by at least one candidate, out of those planted"

    @dataclass
    class Settings(CriterionSettings):
        count: int = 0  # the duplication count d; 0: every canary whatever its count

        def validate(self, where: str) -> None:
            CriterionSettings.validate(self, where)
            if self.count < 0:
                raise BenchError(f"{where}: count: expected 0 (every canary) or a planted count d >= 1")

    def planted(self, scores) -> np.ndarray:
        """Per distinct training image: a canary of this metric's count."""
        return scores.canaries == self.settings.count if self.settings.count else scores.canaries > 0

    def compute(self, scores, band) -> MetricValue:
        if (missing := self.cannot(scores)) is not None:
            return missing
        planted = self.planted(scores)
        if not planted.any():
            return MetricValue(None, count=0, n=0, reason=f"no canary planted {self.settings.count} times")
        copied = np.zeros(len(planted), dtype=bool)
        copied[scores.distinct_of[scores.nearest_index[self.copies(scores, band)]]] = True
        return rate(int((copied & planted).sum()), int(planted.sum()))

    def memorized(self, scores, band) -> np.ndarray:
        """Per candidate: a copy of a canary of this count (``compare --by``)."""
        if (missing := self.cannot(scores)) is not None:
            raise BenchError(f"metric 'canary-recall': {missing.reason}")
        planted = self.planted(scores)
        return self.copies(scores, band) & planted[scores.distinct_of[scores.nearest_index]]


class CanaryShare(_CanaryMetric):
    """Of the candidates that are copies, the share whose copied image is a canary."""

    description = "share of the copies whose copied training image is a canary"

    def compute(self, scores, band) -> MetricValue:
        if (missing := self.cannot(scores)) is not None:
            return missing
        copies = self.copies(scores, band)
        if not copies.any():
            return MetricValue(None, count=0, n=0, reason="no candidate is a copy")
        return rate(int((copies & (self.canary_of(scores) > 0)).sum()), int(copies.sum()))


class NonCanaryRate(_CanaryMetric):
    """Copies of training images that are not canaries, out of N_G."""

    description = "share of candidates that copy a training image other than a canary"

    def compute(self, scores, band) -> MetricValue:
        if (missing := self.cannot(scores)) is not None:
            return missing
        return rate(int(self.memorized(scores, band).sum()), scores.n_candidates)

    def memorized(self, scores, band) -> np.ndarray:
        if (missing := self.cannot(scores)) is not None:
            raise BenchError(f"metric 'non-canary-rate': {missing.reason}")
        return self.copies(scores, band) & (self.canary_of(scores) == 0)


class CanaryPrecisionAtK(_CanaryMetric):
    """Of a ranker's top k candidates, the share that copy a canary (Gu ratio by default)."""

    description = "share of a ranker's top k candidates that copy a canary"

    @dataclass
    class Settings(CriterionSettings):
        ranker: str = "clique"
        k: int = 10

        def validate(self, where: str) -> None:
            CriterionSettings.validate(self, where)
            if self.k < 1:
                raise BenchError(f"{where}: k: expected a positive integer")

    def compute(self, scores, band) -> MetricValue:
        values, _, missing = ranker_column(scores, self.settings.ranker, "canary-precision-at-k")
        if missing is not None:
            return missing
        if (missing := self.cannot(scores)) is not None:
            return missing
        if self.settings.k > len(values):
            return MetricValue(None, reason=f"k = {self.settings.k} is more than the {len(values)} candidates")
        top = ranking(values)[: self.settings.k]
        hits = self.copies(scores, band) & (self.canary_of(scores) > 0)
        return rate(int(hits[top].sum()), self.settings.k)


@hookimpl
def register_metrics(register):
    register("canary-recall", CanaryRecall)
    register("canary-share", CanaryShare)
    register("non-canary-rate", NonCanaryRate)
    register("canary-precision-at-k", CanaryPrecisionAtK, aliases=("canary-precision",))
