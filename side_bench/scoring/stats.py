"""Intervals and tests behind every number (docs/method.md section 7), all from scipy.stats.

- A rate k of n gets a Wilson 95% interval (``binomtest(k, n).proportion_ci``).
- A count of distinct training images (UMS's numerator, compare's distinct copies) gets the
  occupancy interval of ``distinct``: its value plus or minus 1.96 standard errors, the variance
  estimated from the images hit once, or, at and near saturation, from the images hit few times
  (see ``distinct_variance``). A bootstrap is wrong for it: a
  resample holds ~63% distinct candidates, so it finds fewer images, and its interval sits below
  the value it should contain.
- A quantile (p95) gets the distribution-free order-statistic interval of ``quantile``: the
  order statistics the binomial law of "how many fall below the quantile" brackets with 95%
  (the percentile bootstrap covered the 95th percentile 0.93 of the time at 256 candidates).
- Any other statistic of the candidates (a plugin's) gets a seeded percentile bootstrap over
  candidates (``scipy.stats.bootstrap``) and its standard error.
- A membership attack's ROC AUC (``membership_auc``) gets a score interval, the set of AUCs theta whose
  Hanley-McNeil standard error, at theta itself, puts the observed value within 1.96 of them
  (Newcombe 2006, method 5, with the two groups' own sizes): it stays wide at 1.000 where
  the percentile bootstrap collapses to [1, 1] (every resample of a separable sample is
  separable), and it needs only the value and the two group sizes. A ranker's AUC for "is a
  copy" (``ranker_auc``) gets the same interval, the copies among the candidates in the
  members' place and the other candidates in the non-members'.
- Its TPR at a fixed FPR (``membership_tpr``: members above the threshold, of the members) gets the
  Clopper-Pearson interval: at least 95% at every true rate, where Wilson's dips to 0.88 at
  a rate of 0.2% of 64 members. It covers the TPR at the threshold found (set by the
  non-members); the threshold's own uncertainty is not in it (see ``membership_tpr``).
- The difference of two rates (a plot's panel against UnCond) gets Newcombe's hybrid score
  interval, built from the two Wilson intervals (``newcombe``); of two other statistics, the
  normal interval of their standard errors (``difference``), as the z-test below.
- Two rates are compared with Fisher's exact test on the 2x2 table (two-sided; one-sided
  against the null baseline); two other statistics with a two-sided z-test on their
  difference, using their standard errors (the candidate sets are independent).

Each method's coverage is checked by simulation in tests/test_coverage.py.
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
BOOTSTRAP_TEST = "z-test on standard errors"
OCCUPANCY_INTERVAL = "occupancy-normal"
QUANTILE_INTERVAL = "order-statistic"
AUC_INTERVAL = "score-hanley-mcneil"
# the same interval over a ranker's candidates: its own name, because a membership AUC's
# group sizes are its row's n_train and n_null (pooling and verify read them), a ranker's are not
RANKER_AUC_INTERVAL = "score-hanley-mcneil-copies"
TPR_INTERVAL = "clopper-pearson"
Z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))  # 1.959964
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
              count: int | None = None, vectorized: bool = False) -> MetricValue:
    """``value`` with a seeded percentile bootstrap over the n candidates.

    ``statistic(indices)`` recomputes the value on a resample given as candidate indices
    (with repeats); the same seed gives the same interval, so rescoring reproduces it. With
    ``vectorized``, ``statistic(indices, axis=-1)`` takes a stack of resamples at once (the same
    resamples, so the same interval, without a Python call per resample). Not for a count of
    distinct images: use ``distinct``.
    """
    if n <= 0:
        return MetricValue(None, count=count, n=int(n), reason="no candidates")
    if n == 1:
        return MetricValue(value, count=count, n=1, ci_low=value, ci_high=value, se=0.0,
                           interval="bootstrap-percentile")
    result = stats.bootstrap((np.arange(n),), statistic, n_resamples=resamples, vectorized=vectorized,
                             method="percentile", confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    se = float(result.standard_error)
    return MetricValue(value, count=count, n=int(n), ci_low=low, ci_high=high, se=se,
                       interval="bootstrap-percentile")


def distinct_variance(hit_rows: np.ndarray, hit_index: np.ndarray, n: int, n_train: int) -> float:
    """Estimated variance of D, the number of distinct training images hit by n candidates.

    ``hit_rows[k]`` (a candidate, 0..n-1) hit ``hit_index[k]`` (a training image, 0..n_train-1).
    D = sum over images of "hit by some candidate", so Var D = sum_i q_i (1 - q_i) + the
    covariances, with q_i = P(image i is missed by all n). The first sum is exactly the number
    of images a second, independent set of n candidates would add, E[D_2n] - E[D_n]; it is
    estimated as Chao et al. (2014) extrapolate the accumulation curve to 2n (reliable up to
    doubling): the f0 = n_train - D images not hit share the unseen mass Q1 / n (Good-Turing; Q1
    images hit once), f0 (1 - (1 - Q1 / (n f0 + Q1))^n). f0 is known here (the training set is
    finite and counted), where Chao's Q1^2 / 2 Q2 guesses it and undercovers near saturation.
    The same sum is also the number of images hit that a second n would miss: ``seen_missed``
    estimates it from the hit images' own hits, and the larger of the two is used. Far from
    saturation that is always the unseen side (none of 4,000 repetitions differs in the
    coverage test's mixtures). With every image hit the unseen side is 0 and the interval was a
    point although an image hit once is missed by the next n with chance ~e^-1; near saturation
    with a few images unseen it is small by chance. test_the_ums_interval_covers_at_saturation
    (0.3, 1 and 3 images expected missed): 0.286 / 0.602 / 0.829 with the unseen side alone,
    0.998 / 0.956 / 0.976 with both. One-sided with every image hit (cut at n_train), the
    interval there covers about always or never, so it is wider than the spread (se ~1.4x).
    The covariances are the jackknife's cross terms: candidates that alone hit several images
    (positive), and one candidate's sole hits against another's (negative, as in a multinomial).

    Why not the jackknife alone: leaving one candidate out changes D by the images it alone hit,
    so its variance is ~Q1, which equals sum q_i (1 - q_i) only when every image is rare; with
    images hit a few times each (most UMS rows) it is up to twice too wide (coverage 0.99 in
    tests/test_coverage.py's simulation).
    """
    n, n_train = int(n), int(n_train)
    if n <= 0:
        return 0.0
    pairs = np.unique(np.asarray(hit_rows, np.int64) * max(n_train, 1) + np.asarray(hit_index, np.int64))
    rows, index = pairs // max(n_train, 1), pairs % max(n_train, 1)
    _, inverse, counts = np.unique(index, return_inverse=True, return_counts=True)
    distinct = len(counts)
    once = int(np.sum(counts == 1))
    # images each candidate alone hit: what leaving it out would lose
    alone = np.bincount(rows[counts[inverse] == 1], minlength=n).astype(np.float64)
    cross = (n - 1) / n * (float(np.sum(alone * (alone - 1))) - once * (once - 1) / n)
    unseen = max(n_train - distinct, 0)
    # Q1 = 0 with images still unseen says "no unseen mass", which is only an estimate: a floor
    # of one image hit once keeps such a value from being treated as exact (se 0) by the z-tests
    # (a published run had 63 of 64 images, none hit once, ranked apart from 64 at p = 0)
    seen_once = max(once, 1)
    new = unseen * (1 - (1 - seen_once / (n * unseen + seen_once)) ** n) if unseen > 0 else 0.0
    # the same sum seen from the other side: images hit that another n would miss. Near
    # saturation the unseen side says little (nothing at all with every image hit, a point
    # interval although an image hit once is missed by the next n with chance ~e^-1)
    return max(max(new, seen_missed(counts, n)) + cross, 0.0)


def seen_missed(hits: np.ndarray, n: int) -> float:
    """Plug-in estimate of sum over the hit images of q_i (1 - q_i), q_i = (1 - k_i / n)^n.

    ``hits[i]`` candidates of n hit image i (every entry >= 1). Var D's first sum, sum_i q_i (1 -
    q_i), is also the number of images hit by n candidates that a second, independent n would
    miss; q_i, the chance image i is missed, is estimated from its own hits. ``distinct_variance``
    takes the larger of this and the unseen side's estimate: far from saturation the unseen side
    is the larger (the images hit once dominate both, and this counts each at ~0.23, e^-1 (1 - e^-1),
    not 1); with every image hit it is the only one (0 on the unseen side). Biased high for images
    hit many times (E[e^-k] = e^(-0.63 lambda), not e^-lambda, for k ~ Poisson(lambda)), so wide
    there, and ~0 only where every image was hit often (an image hit 20 times of 4,096: 2e-9).
    """
    missed = (1 - np.asarray(hits, np.float64) / max(int(n), 1)) ** int(n)
    return float(np.sum(missed * (1 - missed)))


def distinct(hit_rows: np.ndarray, hit_index: np.ndarray, n: int, n_train: int) -> MetricValue:
    """UMS: distinct training images hit by n candidates, / n, with its occupancy interval.

    The estimand is E[D] / n at this n (D's expectation is sum_i 1 - (1 - p_i)^n, p_i the chance
    one candidate hits training image i): D / n is unbiased for it, and the interval is D / n +-
    1.96 sqrt(``distinct_variance``) / n, cut to [0, n_train / n], so it always holds its value.
    """
    n = int(n)
    if n <= 0:
        return MetricValue(None, count=0, n=n, reason="no candidates")
    count = int(np.unique(np.asarray(hit_index)).size)
    value = count / n
    se = math.sqrt(distinct_variance(hit_rows, hit_index, n, n_train)) / n
    low, high = max(value - Z * se, 0.0), min(value + Z * se, max(n_train / n, value))
    return MetricValue(value, count=count, n=n, ci_low=low, ci_high=high, se=se, interval=OCCUPANCY_INTERVAL)


def quantile(values: np.ndarray, q: float) -> MetricValue:
    """The q-quantile of ``values`` (linear interpolation, as ``np.percentile``) with its
    distribution-free 95% interval [X_(l), X_(u)]: with B ~ Binomial(n, q) the number of values
    below the true quantile, P(l <= B < u) >= 95% whatever the distribution (continuous); l
    and u start at the 2.5% and 97.5% points of B (+1) and move inwards while the coverage
    stays >= 95% (the 2.5% points alone give 0.970 at n = 256, exact: discreteness). The standard error, for the z-tests, is the
    interval's half-width / 1.96 (the normal approximation it converges to).

    With too few values for a bound (n q < ~4 or n (1 - q) < ~4) that side is the sample's
    extreme, and the interval may cover less than 95%.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    n = len(ordered)
    if n == 0:
        return MetricValue(None, n=0, reason="no candidates")
    value = float(np.percentile(ordered, 100 * q))
    low_rank, high_rank = _order_ranks(n, q)
    low = float(ordered[min(max(low_rank, 1), n) - 1])
    high = float(ordered[min(max(high_rank, 1), n) - 1])
    low, high = min(low, value), max(high, value)
    return MetricValue(value, n=n, ci_low=low, ci_high=high, se=(high - low) / (2 * Z), interval=QUANTILE_INTERVAL)


def _order_ranks(n: int, q: float) -> tuple[int, int]:
    """1-based ranks (l, u) of the order statistics bracketing the q-quantile with >= 95%."""
    def coverage(low, high):  # P(low <= B <= high - 1)
        return stats.binom.cdf(high - 1, n, q) - stats.binom.cdf(low - 1, n, q)

    low = int(stats.binom.ppf((1 - CONFIDENCE) / 2, n, q))
    high = int(stats.binom.ppf((1 + CONFIDENCE) / 2, n, q)) + 1
    while True:
        inward = [(c, pair) for pair in ((low + 1, high), (low, high - 1)) if pair[0] < pair[1]
                  and (c := coverage(*pair)) >= CONFIDENCE]
        if not inward:
            return low, high
        low, high = max(inward)[1]  # the move that keeps more coverage: the tails stay balanced


def hanley_mcneil_variance(theta, members: int, nonmembers: int):
    """Variance of the Mann-Whitney AUC of ``members`` (m) against ``nonmembers`` (n) when the
    AUC is ``theta`` (Hanley and McNeil 1982):
    [theta (1 - theta) + (m - 1)(Q1 - theta^2) + (n - 1)(Q2 - theta^2)] / (m n), with
    Q1 = theta / (2 - theta) (two members both above one non-member) and Q2 = 2 theta^2 / (1 + theta)
    (one member above two non-members). Exact when the scores are exponential; 0 at 0 and 1."""
    theta = np.asarray(theta, dtype=np.float64)
    m, n = float(members), float(nonmembers)
    q1, q2 = theta / (2 - theta), 2 * theta ** 2 / (1 + theta)
    return (theta * (1 - theta) + (m - 1) * (q1 - theta ** 2) + (n - 1) * (q2 - theta ** 2)) / (m * n)


def auc_interval(values: float | Sequence[float], members: int | Sequence[int],
                 nonmembers: int | Sequence[int]) -> tuple[float, float]:
    """95% score interval of an AUC, or of the mean of several independent AUCs (one per target
    model: ``values``, ``members`` and ``nonmembers`` given per model).

    The interval is every theta with (A - theta)^2 <= 1.96^2 V(theta), A the (mean) value and
    V(theta) = sum_i hanley_mcneil_variance(theta, m_i, n_i) / k^2: the variance at the AUC
    tested, not at the one observed, so a value of 1 (a separable sample) keeps a lower bound
    below 1 (64 members, 1,024 non-members: 0.9705), and the interval never leaves [0, 1].

    Coverage, simulated with 64 members and 1,024 non-members at AUC 0.99, 0.995 and 0.999
    (tests/test_coverage.py): 0.95 where the scores are exponential (the variance's own law),
    0.96-0.97 binormal with a member sd of 2, 0.996-0.998 (conservative) binormal with equal
    sds; 0.93-0.94 when a share of the members is indistinguishable from the non-members (each
    member either far above them or among them: a placement law heavier than the variance
    assumes). The mean of two models' AUCs: 0.95. Newcombe's own method 5 replaces m - 1 and
    n - 1 by their mean; with 64 members against 1,024 it covered 0.88-0.93 in the exponential
    and mixed laws, so the groups' own sizes are kept.
    """
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    members = np.broadcast_to(np.asarray(members, dtype=np.float64), values.shape)
    nonmembers = np.broadcast_to(np.asarray(nonmembers, dtype=np.float64), values.shape)
    k = len(values)
    mean = float(np.clip(values.mean(), 0.0, 1.0))

    def excess(theta: float) -> float:  # <= 0 inside the interval
        variance = sum(float(hanley_mcneil_variance(theta, m, n)) for m, n in zip(members, nonmembers, strict=True))
        return (mean - theta) ** 2 - Z ** 2 * variance / k ** 2

    from scipy import optimize

    edge = 1e-12  # V is 0 at 0 and 1: at a value of 1, theta = 1 solves trivially; the bound is below it
    low = 0.0 if mean <= 0 or excess(0.0) <= 0 else float(optimize.brentq(excess, 0.0, min(mean, 1 - edge), xtol=1e-14))
    high = 1.0 if mean >= 1 or excess(1.0) <= 0 else float(optimize.brentq(excess, max(mean, edge), 1.0, xtol=1e-14))
    return min(low, mean), max(high, mean)


def membership_auc(value: float, members: int, nonmembers: int) -> MetricValue:
    """A membership attack's AUC (``members`` against ``nonmembers``) as a MetricValue with its
    score interval (``auc_interval``); ``n`` is members + non-members. No standard error: near 1
    the plug-in one is 0 and would call the value certain; the interval is what is reported."""
    if members < 1 or nonmembers < 1:
        return MetricValue(None, n=int(members) + int(nonmembers), reason="needs members and non-members")
    low, high = auc_interval(value, members, nonmembers)
    return MetricValue(float(value), n=int(members) + int(nonmembers), ci_low=low, ci_high=high, interval=AUC_INTERVAL)


def ranker_auc(value: float, copies: int, others: int) -> MetricValue:
    """A ranker's AUC for "is a copy" (``copies`` against the ``others`` among the candidates) as a
    MetricValue with the score interval of ``auc_interval``, as a membership AUC's (the copies
    in the members' place): 26 copies ranked above all of 230 other candidates give [0.932, 1],
    where the percentile bootstrap over candidates said [1, 1]. ``n`` is copies + others.

    Its standard error, for the leaderboard's z-tests between attacks, is the interval's
    half-width / 1.96 (as ``quantile``'s): near 1/2 it is the Hanley-McNeil standard error; near
    1, where the plug-in one is 0 and would call the value certain, it stays above 0. The copies
    are counted among the candidates, so their number varies from run to run; the interval is
    conditional on it (coverage in tests/test_coverage.py)."""
    if copies < 1 or others < 1:
        return MetricValue(None, n=int(copies) + int(others), reason="the AUC needs both classes")
    low, high = auc_interval(value, copies, others)
    return MetricValue(float(value), n=int(copies) + int(others), ci_low=low, ci_high=high, se=(high - low) / (2 * Z),
                       interval=RANKER_AUC_INTERVAL)


def clopper_pearson(count: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson (exact) 95% interval of a proportion count / n: at least 95% at every true rate."""
    interval = stats.binomtest(int(count), int(n)).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return float(interval.low), float(interval.high)


def membership_tpr(count: int, members: int) -> MetricValue:
    """A membership attack's TPR at a fixed FPR: ``count`` of the ``members`` score above the
    threshold the non-members set, with the Clopper-Pearson interval of count / members.

    What it covers: the TPR at that threshold. The threshold is itself an order statistic of
    the non-members (at 1% of 1,024, the 11th highest; its true FPR is about 0.5-1.8%), and
    that uncertainty is not in the interval. Simulated (binormal scores, 64 members, 1,024
    non-members), the interval still covers the TPR at exactly 1% FPR 0.99-1.0 of the time for
    TPRs of 0.001-0.01 and 0.99-0.999 (the ROC is flat there), but only 0.91 at a TPR of 0.5,
    where the ROC is steep (the TPR at the threshold found: 0.965).
    """
    if members < 1:
        return MetricValue(None, count=0, n=0, reason="needs members")
    low, high = clopper_pearson(count, members)
    return MetricValue(count / members, count=int(count), n=int(members), ci_low=low, ci_high=high,
                       interval=TPR_INTERVAL)


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


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """(difference, low, high): k1/n1 - k2/n2 with Newcombe's hybrid score 95% interval (his
    method 10, Stat. Med. 1998), from the two Wilson intervals: unlike the normal interval it
    stays inside [-1, 1] and keeps its coverage at 0 of n (a rate of 0 is common at large scales)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def difference(a: dict, b: dict) -> tuple[float, float, float] | None:
    """(difference, low, high): estimate ``a`` minus ``b`` with a 95% interval by what their data
    allow, as ``compare`` tests them: Newcombe's interval when both are counts, else the normal
    interval of the standard errors. None when neither applies."""
    if a.get("value") is None or b.get("value") is None:
        return None
    if _known(a.get("count")) and _known(b.get("count")) and _known(a.get("n")) and _known(b.get("n")) \
            and a.get("se") is None and b.get("se") is None and a["n"] > 0 and b["n"] > 0:
        return newcombe(int(a["count"]), int(a["n"]), int(b["count"]), int(b["n"]))
    if _known(a.get("se")) and _known(b.get("se")):
        d, spread = a["value"] - b["value"], Z * math.hypot(a["se"], b["se"])
        return d, d - spread, d + spread
    return None


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
