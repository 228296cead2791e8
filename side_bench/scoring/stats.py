"""Intervals and tests behind every number (method.md section 7), all from scipy.stats.

- A rate k of n gets a Wilson 95% interval (``binomtest(k, n).proportion_ci``).
- A statistic that is not a count (UMS: distinct training images hit; p95) gets a seeded
  percentile bootstrap over candidates (``scipy.stats.bootstrap``) and its standard error.
- Two rates are compared with Fisher's exact test on the 2x2 table (two-sided; one-sided
  against the null baseline); two bootstrapped statistics with a two-sided z-test on their
  difference, using the bootstrap standard errors (the candidate sets are independent).
- A family of tests is corrected with Holm's step-down procedure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from side_bench.hookspecs import MetricValue

CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

RATE_TEST = "Fisher's exact test"
BOOTSTRAP_TEST = "z-test on bootstrap standard errors"
CORRECTION = "Holm"


def wilson(count: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a proportion count / n."""
    interval = stats.binomtest(int(count), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(interval.low), float(interval.high)


def rate(count: int, n: int) -> MetricValue:
    """``count`` of ``n`` as a MetricValue with its Wilson interval (None when n is 0)."""
    if n <= 0:
        return MetricValue(None, count=int(count), n=int(n), reason="no candidates")
    low, high = wilson(count, n)
    return MetricValue(count / n, count=int(count), n=int(n), ci_low=low, ci_high=high, interval="wilson")


def bootstrap(value: float, n: int, statistic: Callable[[np.ndarray], float], *,
              seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES,
              count: int | None = None) -> MetricValue:
    """``value`` with a seeded percentile bootstrap over the n candidates.

    ``statistic(indices)`` recomputes the value on a resample given as candidate indices
    (with repeats); the same seed gives the same interval, so rescoring reproduces it.
    """
    if n <= 0:
        return MetricValue(None, count=count, n=int(n), reason="no candidates")
    if n == 1:
        return MetricValue(value, count=count, n=1, ci_low=value, ci_high=value, se=0.0,
                           interval="bootstrap-percentile")
    result = stats.bootstrap((np.arange(n),), statistic, n_resamples=resamples, vectorized=False,
                             method="percentile", confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    se = float(result.standard_error)
    return MetricValue(value, count=count, n=int(n), ci_low=low, ci_high=high, se=se,
                       interval="bootstrap-percentile")


def rate_test(k1: int, n1: int, k2: int, n2: int, alternative: str = "two-sided") -> float:
    """p-value of Fisher's exact test that two rates differ (or that the first is greater/less)."""
    table = [[int(k1), int(n1) - int(k1)], [int(k2), int(n2) - int(k2)]]
    return float(stats.fisher_exact(table, alternative=alternative).pvalue)


def z_test(value1: float, se1: float, value2: float, se2: float, alternative: str = "two-sided") -> float:
    """p-value that two independent estimates with standard errors differ (normal approximation)."""
    spread = math.hypot(se1, se2)
    if spread == 0:
        return 1.0 if value1 == value2 else 0.0
    z = (value1 - value2) / spread
    if alternative == "greater":
        return float(stats.norm.sf(z))
    if alternative == "less":
        return float(stats.norm.cdf(z))
    return float(2 * stats.norm.sf(abs(z)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare(a: dict, b: dict, alternative: str = "two-sided") -> float | None:
    """p-value that estimate ``a`` differs from ``b`` (or is greater/less), by the test their
    data allow: Fisher's exact test when both are counts, else the z-test on standard errors.

    ``a`` and ``b`` hold ``value``, ``count``, ``n`` and ``se`` (None where unknown). None when
    neither test applies (no counts and no standard errors).
    """
    if a.get("value") is None or b.get("value") is None:
        return None
    if _known(a.get("count")) and _known(b.get("count")) and _known(a.get("n")) and _known(b.get("n")) \
            and a.get("se") is None and b.get("se") is None:
        return rate_test(a["count"], a["n"], b["count"], b["n"], alternative)
    if _known(a.get("se")) and _known(b.get("se")):
        return z_test(a["value"], a["se"], b["value"], b["se"], alternative)
    return None


def test_name(estimate: dict) -> str | None:
    if estimate.get("se") is None and _known(estimate.get("count")):
        return RATE_TEST
    if _known(estimate.get("se")):
        return BOOTSTRAP_TEST
    return None


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
