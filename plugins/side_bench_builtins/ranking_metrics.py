"""Metrics over a ranker's ranking against the ground truth: what an attacker can claim.

A ranker (``clique``, ``denoise-loss``, ...) scores every candidate without the training set;
the runner stores its scores beside the nearest-neighbour results. These metrics read
``scores.ranker_scores[ranker]`` and ``scores.ranker_thresholds[ranker]`` and ask how many of
the candidates the attacker would pick really are copies.

**A copy** is Gu et al. (2023)'s criterion, the same as the ``gu-ratio`` metric: the pixel
distance to the nearest training image is below 1/3 of the distance to the second nearest
(d1 / d2 < 1/3; an exact copy, d1 = 0, counts even when two training images coincide). It
needs no band, so the rankers' metrics do not depend on the feature extractor's bands.

**Order.** Candidates are ranked by score, highest first; ties keep candidate order, which is
a random order (candidate i's noise is drawn from (seed, i)), so ties are broken at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from side_bench.plugin_api import BenchError, MetricValue, hookimpl, ranker_auc, rate
from side_bench_builtins.metrics import GuRatio


def is_copy(scores) -> np.ndarray:
    """Gu et al.'s test per candidate: d1 / d2 < 1/3 (d1 = 0 always a copy), as ``gu-ratio``."""
    return GuRatio.memorized(scores)


def ranker_column(scores, ranker: str, who: str):
    """(scores (n,), threshold) of one ranker, or a MetricValue saying why there are none."""
    columns = getattr(scores, "ranker_scores", None) or {}
    if ranker not in columns:
        return None, None, MetricValue(None, reason=f"no scores of ranker {ranker!r} (add it to the suite's rankers)")
    values = np.asarray(columns[ranker], dtype=np.float64)
    if len(values) != scores.n_candidates:
        raise BenchError(f"{who}: ranker {ranker!r} has {len(values)} scores for {scores.n_candidates} candidates")
    thresholds = getattr(scores, "ranker_thresholds", None) or {}
    return values, thresholds.get(ranker), None


def ranking(values: np.ndarray) -> np.ndarray:
    """Candidate indices by score, highest first; ties in candidate order (stable sort)."""
    return np.argsort(-values, kind="stable")


def not_a_gu_set(scores) -> MetricValue | None:
    if scores.n_train < 2:
        return MetricValue(None, reason="needs at least 2 training images (Gu et al.'s ratio)")
    return None


@dataclass
class RankerSettings:
    ranker: str = "clique"


class PrecisionAtK:
    """Precision at k: the share of copies (Gu ratio < 1/3) among the ranker's top k candidates.

    ``k`` = 0 means "as many as the ranker flags" (score >= its own threshold): the precision of
    the attacker's actual claim. Count / k with a Wilson 95% interval.
    """

    uses_bands = False
    direction = "higher"
    unit = "rate"
    description = "share of copies (Gu ratio < 1/3) among a ranker's top k (k = 0: those it flags)"

    @dataclass
    class Settings(RankerSettings):
        k: int = 10

        def validate(self, where: str) -> None:
            if self.k < 0:
                raise BenchError(f"{where}: k: expected 0 (the flagged count) or a positive integer")

    def __init__(self, settings: PrecisionAtK.Settings = None):
        self.settings = settings or PrecisionAtK.Settings()

    def compute(self, scores, band) -> MetricValue:
        values, threshold, missing = ranker_column(scores, self.settings.ranker, "precision-at-k")
        if missing is not None:
            return missing
        if (bad := not_a_gu_set(scores)) is not None:
            return bad
        k = self.settings.k
        if k == 0:
            if threshold is None:
                return MetricValue(None, reason=f"ranker {self.settings.ranker!r} has no flag threshold")
            k = int(np.sum(values >= threshold))
            if k == 0:
                return MetricValue(None, count=0, n=0, reason=f"ranker {self.settings.ranker!r} flagged no candidate")
        if k > len(values):
            return MetricValue(None, reason=f"k = {k} is more than the {len(values)} candidates")
        top = ranking(values)[:k]
        return rate(int(is_copy(scores)[top].sum()), k)


class FlaggedDistinct:
    """Distinct training images recovered by the attacker's claim: among the candidates the
    ranker flags (score >= its threshold) that are copies (Gu ratio < 1/3), the number of
    distinct nearest training images. ``n`` is the number flagged."""

    uses_bands = False
    direction = "higher"
    unit = "count"
    description = "distinct training images among a ranker's flagged candidates that are copies"

    Settings = RankerSettings

    def __init__(self, settings: RankerSettings = None):
        self.settings = settings or RankerSettings()

    def compute(self, scores, band) -> MetricValue:
        values, threshold, missing = ranker_column(scores, self.settings.ranker, "flagged-distinct")
        if missing is not None:
            return missing
        if threshold is None:
            return MetricValue(None, reason=f"ranker {self.settings.ranker!r} has no flag threshold")
        if (bad := not_a_gu_set(scores)) is not None:
            return bad
        flagged = values >= threshold
        nearest = np.asarray(scores.nearest_index, dtype=np.int64)
        distinct = len(np.unique(nearest[flagged & is_copy(scores)]))
        return MetricValue(float(distinct), count=distinct, n=int(flagged.sum()))


class RankerAUC:
    """ROC AUC of a ranker's score for "is a copy" (Gu ratio < 1/3), sklearn's
    ``roc_auc_score`` (ties count one half). 0.5 = the ranker knows nothing; 1 = it puts every
    copy first. Its 95% interval is the score interval of a membership AUC (``ranker_auc``: the
    copies against the other candidates), which stays below 1 when the ranker separates the
    copies perfectly: the percentile bootstrap over candidates it replaces said [1, 1] there, and
    had no interval at all with one or two copies (most resamples held one class). None when
    the candidates are all copies or all not."""

    uses_bands = False
    direction = "higher"
    unit = "ratio"
    description = "ROC AUC of a ranker's score for 'is a copy' (Gu ratio < 1/3)"

    @dataclass
    class Settings(RankerSettings):
        # Both fields are in every existing cell's config (hence its hash) from when the interval
        # was a bootstrap, so they stay: resamples 0 still means "no interval"; any other value
        # gives the score interval, which draws nothing, so the seed no longer changes a number.
        resamples: int = 1000
        seed: int = 0

    def __init__(self, settings: RankerAUC.Settings = None):
        self.settings = settings or RankerAUC.Settings()

    def compute(self, scores, band) -> MetricValue:
        from sklearn.metrics import roc_auc_score

        values, _, missing = ranker_column(scores, self.settings.ranker, "ranker-auc")
        if missing is not None:
            return missing
        if (bad := not_a_gu_set(scores)) is not None:
            return bad
        truth = is_copy(scores)
        copies = int(truth.sum())
        if copies in (0, len(truth)):
            which = "no candidate is" if copies == 0 else "every candidate is"
            return MetricValue(None, reason=f"{which} a copy: the AUC needs both classes")
        auc = float(roc_auc_score(truth, values))
        if self.settings.resamples <= 0:
            return MetricValue(auc)
        return ranker_auc(auc, copies, len(truth) - copies)


class BaseCopies:
    """Copies of a fine-tuned target's *base* training images: candidates whose Gu ratio against
    the images the base was pre-trained on is below 1/3, as a count of N_G with a Wilson
    interval. The ratio comes from the ``base-gu`` ranker (score = -ratio, in the per-candidate
    records), so the test is ``gu-ratio``'s with the base's images as the reference; the
    headline rows keep the fine-tuning set as theirs. None on the null baseline (no ranker scores)."""

    uses_bands = False
    direction = "higher"
    unit = "rate"
    description = "share of candidates that copy the base model's training images (Gu ratio < 1/3 against them)"

    @dataclass
    class Settings:
        ranker: str = "base-gu"

    def __init__(self, settings: BaseCopies.Settings = None):
        self.settings = settings or BaseCopies.Settings()

    def compute(self, scores, band) -> MetricValue:
        values, _, missing = ranker_column(scores, self.settings.ranker, "base-copies")
        if missing is not None:
            return missing
        return rate(int(np.sum(-values < GuRatio.threshold)), scores.n_candidates)


@hookimpl
def register_metrics(register):
    register("precision-at-k", PrecisionAtK, aliases=("precision",))
    register("flagged-distinct", FlaggedDistinct)
    register("ranker-auc", RankerAUC)
    register("base-copies", BaseCopies)
