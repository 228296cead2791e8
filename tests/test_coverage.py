"""Coverage of every interval the project reports, and the false-positive rate of its tests.

Candidates are simulated from a known finite mixture, so the true value is computed, not
estimated: K training images, a candidate copies image i with probability w_i (w_i ~ 1/i, a
few images copied often and a long tail copied rarely, as in the digits runs) and then also
lands in the band of image i + 1 with probability R (near neighbours: hit sets of two, which
correlate images). So a candidate hits image i with p_i = w_i + R w_(i-1), and

- a rate (AMS-like: the candidate is within the band of some image) has truth sum w;
- UMS's estimand is E[D] / N_G at the run's N_G, with E[D] = sum_i 1 - (1 - p_i)^N_G: the
  expected share of distinct images that budget finds (not the number of images ever
  copyable, which no finite run estimates without a model of the unseen);
- p95's estimand is the 95% quantile of the best-similarity distribution, a mixture of two
  Beta laws (copies near 1, the rest lower), found by root-finding on its CDF;
- pooled over seeds (two seeds = two different models), the estimand is the mean over the
  seeds of each seed's own truth: the seeds' models are held fixed, as in the leaderboard.

1,000 repetitions at two sizes, fixed seeds; coverage must lie in [0.93, 0.97] (1,000 draws
of a 95% interval: standard error 0.007). Each case's measured coverage is in its comment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as sps

from side_bench.report.leaderboard import _pool, _test_group
from side_bench.scoring import stats

REPS = 1000
SIZES = (256, 1024)
K = 300  # training images


def mixture(mass: float, tail: float, neighbour: float, k: int = K):
    """(w, p): a candidate copies image i with w_i (sum = mass); hits image i with p_i."""
    w = 1.0 / np.arange(1, k + 1) ** tail
    w = w / w.sum() * mass
    return w, w + neighbour * np.roll(w, 1)


SEED0 = mixture(0.3, 1.0, 0.3)
SEED1 = mixture(0.2, 0.5, 0.3)  # another model: fewer copies, spread over more images


def draw_hits(rng, w, neighbour: float, n: int):
    """(candidate rows, training images) of every hit pair among n candidates."""
    k = len(w)
    centre = rng.choice(k + 1, size=n, p=np.append(w, 1 - w.sum()))  # k: no copy
    rows = np.flatnonzero(centre < k)
    index = centre[rows]
    also = rng.random(len(rows)) < neighbour
    return np.concatenate([rows, rows[also]]), np.concatenate([index, (index[also] + 1) % k])


def expected_ums(p: np.ndarray, n: int) -> float:
    return float(np.sum(1 - (1 - p) ** n) / n)


def covered(low, high, truth) -> float:
    return float(np.mean((np.asarray(low) <= truth) & (truth <= np.asarray(high))))


def test_wilson_covers_a_rate():
    rng = np.random.default_rng(1)
    for n in SIZES:
        truth = SEED0[0].sum()  # 0.3
        counts = rng.binomial(n, truth, REPS)
        intervals = np.array([stats.wilson(k, n) for k in counts])
        # measured: 0.961 (n 256), 0.947 (n 1024)
        assert 0.93 <= covered(intervals[:, 0], intervals[:, 1], truth) <= 0.97, n
    # a rare rate too (2%, five copies in 256), where the normal interval would fail
    counts = rng.binomial(256, 0.02, REPS)
    intervals = np.array([stats.wilson(k, 256) for k in counts])
    assert 0.93 <= covered(intervals[:, 0], intervals[:, 1], 0.02) <= 0.97  # measured 0.954


def ums_values(rng, mix, n: int, reps: int = REPS):
    (w, _), values = mix, []
    for _ in range(reps):
        rows, index = draw_hits(rng, w, 0.3, n)
        values.append(stats.distinct(rows, index, n, K))
    return values


def test_the_ums_interval_covers_and_holds_its_value():
    rng = np.random.default_rng(2)
    for n in SIZES:
        values = ums_values(rng, SEED0, n)
        truth = expected_ums(SEED0[1], n)  # 0.209 (n 256), 0.129 (n 1024)
        assert all(v.ci_low <= v.value <= v.ci_high and v.interval == stats.OCCUPANCY_INTERVAL for v in values)
        # measured: 0.960 (n 256), 0.949 (n 1024); the old percentile bootstrap: ~0.03 and 0.00
        assert 0.93 <= covered([v.ci_low for v in values], [v.ci_high for v in values], truth) <= 0.97, n
        # the standard error is the spread of the value (measured 1.07 and 1.02 of it): the z-tests rely on it
        spread = np.std([v.value for v in values])
        assert np.mean([v.se for v in values]) == pytest.approx(spread, rel=0.15), n


def test_the_ums_variance_by_hand():
    # 10 candidates, 64 images; pairs (0,3) (0,4) (1,4) (2,5): images 3 and 5 are hit once
    # (by 0 and by 2), 4 twice. Unseen 61 share Q1 / n: 61 (1 - (1 - 2 / 612)^10) = 1.9649;
    # cross terms 0.9 (0 - 2 x 1 / 10) = -0.18. D = 3.
    value = stats.distinct(np.array([0, 0, 1, 2]), np.array([3, 4, 4, 5]), 10, 64)
    variance = 61 * (1 - (1 - 2 / 612) ** 10) - 0.18
    assert (value.count, value.n, value.value) == (3, 10, 0.3)
    assert value.se == pytest.approx(np.sqrt(variance) / 10, rel=1e-12)
    assert (value.ci_low, value.ci_high) == pytest.approx((0.3 - stats.Z * value.se, 0.3 + stats.Z * value.se))
    # every image hit ten times of 40: missed by another 40 with chance q = 0.75^40 = 1.0057e-5
    # each (seen_missed), no image hit once (no cross terms): se sqrt(4 q (1 - q)) / 40 = 1.586e-4
    saturated = stats.distinct(np.arange(40), np.arange(40) % 4, 40, 4)
    q = 0.75**40
    assert saturated.se == pytest.approx(np.sqrt(4 * q * (1 - q)) / 40, rel=1e-12)
    assert saturated.se == pytest.approx(1.586e-4, rel=1e-3)
    assert (saturated.value, saturated.ci_high) == (0.1, 0.1) and saturated.ci_low < 0.1
    # an image still unseen but none hit once: not exact (floor of one hit once), so no
    # z-test treats it as certain: 1 (1 - (1 - 1 / 41)^40) = 0.6283 - 0 cross terms
    unsure = stats.distinct(np.arange(40), np.arange(40) % 4, 40, 5)
    assert unsure.se == pytest.approx(np.sqrt(1 - (1 - 1 / 41) ** 40) / 40, rel=1e-12)
    # the interval never leaves [0, n_train / n]
    sparse = stats.distinct(np.array([0]), np.array([0]), 5, 100)
    assert sparse.ci_low == 0.0 and sparse.ci_high > sparse.value


def lognormal_mixture(mass: float, sigma: float, k: int, neighbour: float = 0.3):
    """(w, p) as ``mixture``, w_i at the k quantiles of a lognormal law (sd sigma of log w): a
    few images copied tens of times more than the median one, the least down at one or two
    hits, as in the digits runs near saturation (sorted hits 1, 4, 6, 6, ... median 23)."""
    w = np.exp(sigma * sps.norm.ppf((np.arange(k) + 0.5) / k))[::-1]
    w = w / w.sum() * mass
    return w, w + neighbour * np.roll(w, 1)


# N_G 4,096 candidates against 64-160 training images, lognormal sd 1 (the median image's
# expected hits 19 / 14 / 11, the least's 1.9 / 1.2 / 0.8); masses set so that sum_i q_i, the
# images expected missed, is 0.3, 1.0 and 3.0 (found with scipy's brentq)
SATURATED = {
    "64 images, 0.3 expected missed": (lognormal_mixture(0.36724, 1.0, 64), 4096),
    "96 images, 1.0 expected missed": (lognormal_mixture(0.41246, 1.0, 96), 4096),
    "160 images, 3.0 expected missed": (lognormal_mixture(0.53256, 1.0, 160), 4096),
}


@pytest.mark.parametrize("case", SATURATED)
def test_the_ums_interval_covers_at_saturation(case):
    # every training image hit in 73% / 38% / 5% of the repetitions, often with an image hit only
    # once (435 / 346 / 48 of them), as in 24 of the 133 published rows that were a point at
    # n_train / N_G. Without seen_missed (the unseen side alone): coverage 0.286 / 0.602 / 0.829,
    # a point interval in 71% / 35% / 4% of the repetitions
    (w, p), n = SATURATED[case]
    k = len(w)
    truth = float(np.sum(1 - (1 - p) ** n)) / n
    rng = np.random.default_rng(4)
    values, saturated, least = [], [], []
    for _ in range(REPS):
        rows, index = draw_hits(rng, w, 0.3, n)
        values.append(stats.distinct(rows, index, n, k))
        hits = np.bincount(np.unique(np.stack([rows, index]), axis=1)[1], minlength=k)
        saturated.append(hits.min() > 0)
        least.append(hits.min())
    saturated, least = np.array(saturated), np.array(least)
    assert all(v.ci_low <= v.value <= v.ci_high <= k / n for v in values)
    # the regime is the one described: all images hit often, an image hit only once in some
    assert saturated.mean() >= 0.03 and np.any(saturated & (least == 1)), case
    # no point interval where an image was hit once or twice
    assert all(v.ci_low < v.ci_high for v, m in zip(values, least, strict=True) if 1 <= m <= 2), case
    lows, highs = [v.ci_low for v in values], [v.ci_high for v in values]
    # measured: 0.998 / 0.956 / 0.976 (the saturated repetitions alone: 1.0 / 1.0 / 0.979).
    # One-sided at saturation (cut at n_train / n), the interval there covers about always or
    # never, so the floor is asserted, not the ceiling; mean se 1.38 / 1.15 / 1.15 of the spread
    assert covered(lows, highs, truth) >= 0.93, case
    assert covered(np.array(lows)[saturated], np.array(highs)[saturated], truth) >= 0.93, case
    spread = np.std([v.value for v in values])
    assert spread <= np.mean([v.se for v in values]) <= 2.5 * spread, case


def test_the_seen_side_by_hand():
    # 10 candidates, 4 images, all hit: image 0 by candidates 0-4 (5 hits), image 1 by 5 and 6,
    # images 2 and 3 once each (by 7 and by 8; 9 hits nothing). q = (1 - k / 10)^10:
    # 0.5^10 = 0.0009765625, 0.8^10 = 0.1073741824, 0.9^10 = 0.3486784401 (twice), so
    # sum q (1 - q) = 0.0009756088 + 0.0958449674 + 2 x 0.2271017855 = 0.5510241472.
    # Cross terms: 7 and 8 alone hit one image each, 0.9 (0 - 2 x 1 / 10) = -0.18. D = 4.
    hits = np.array([5, 2, 1, 1])
    assert stats.seen_missed(hits, 10) == pytest.approx(0.5510241472, abs=1e-10)
    rows = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8])
    index = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3])
    assert stats.distinct_variance(rows, index, 10, 4) == pytest.approx(0.5510241472 - 0.18, abs=1e-10)
    value = stats.distinct(rows, index, 10, 4)
    assert value.se == pytest.approx(np.sqrt(0.3710241472) / 10, rel=1e-9)
    assert (value.ci_low, value.ci_high) == pytest.approx((0.4 - stats.Z * value.se, 0.4))
    # an image hit by every candidate is certain: a point interval
    assert stats.seen_missed(np.array([10, 10]), 10) == 0.0
    certain = stats.distinct(np.repeat(np.arange(10), 2), np.tile([0, 1], 10), 10, 2)
    assert (certain.ci_low, certain.ci_high, certain.se) == (0.2, 0.2, 0.0)


BETAS = ((40.0, 2.0), (8.0, 4.0))  # copies near 1 (weight 0.3), the rest around 0.67


def best_similarities(rng, copy: float, shape: tuple[int, ...]) -> np.ndarray:
    is_copy = rng.random(shape) < copy
    return np.where(is_copy, rng.beta(*BETAS[0], shape), rng.beta(*BETAS[1], shape))


def true_p95(copy: float) -> float:
    cdf = lambda x: copy * sps.beta.cdf(x, *BETAS[0]) + (1 - copy) * sps.beta.cdf(x, *BETAS[1])  # noqa: E731
    return float(optimize.brentq(lambda x: cdf(x) - 0.95, 0.0, 1.0, xtol=1e-12))


def p95_values(best: np.ndarray):
    return [stats.quantile(row, 0.95) for row in best]


def test_the_p95_interval_covers_and_holds_its_value():
    rng = np.random.default_rng(4)
    truth = true_p95(0.3)  # 0.982, inside the copies' component
    for n in SIZES:
        values = p95_values(best_similarities(rng, 0.3, (REPS, n)))
        assert all(v.ci_low <= v.value <= v.ci_high and v.interval == stats.QUANTILE_INTERVAL for v in values)
        # measured: 0.956 (n 256), 0.959 (n 1024); the percentile bootstrap it replaces: 0.928, 0.947
        assert 0.93 <= covered([v.ci_low for v in values], [v.ci_high for v in values], truth) <= 0.97, n


def test_the_quantile_interval_by_hand():
    # n = 100, q = 0.95, B ~ Binomial(100, 0.95): its 2.5% and 97.5% points give [X_(90), X_(100)]
    # (coverage P(90 <= B <= 99) = 0.983); moving in, [X_(91), X_(100)] keeps 1 - P(B = 100) -
    # P(B <= 90) = 1 - 0.0059 - 0.0282 = 0.966 (X_(99) instead: 0.951, less), and no further
    # move keeps 0.95. On the values 1..100: [91, 100]; np.percentile gives 95.05.
    value = stats.quantile(np.arange(1, 101, dtype=float), 0.95)
    assert (value.value, value.ci_low, value.ci_high) == pytest.approx((95.05, 91.0, 100.0))
    assert value.se == pytest.approx(9 / (2 * stats.Z)) and value.n == 100


def pooled(seeds: list[dict]) -> dict:
    return _pool(pd.DataFrame(seeds), unit=seeds[0].get("unit"))


@pytest.mark.slow  # ~20 s: 8,000 pooled estimates
def test_pooled_over_seeds_intervals_cover_the_mean_of_the_seeds():
    rng = np.random.default_rng(5)
    for n in SIZES:
        # a rate: counts pooled, Wilson (seeds 0.3 and 0.2: truth 0.25)
        rate_hits = [[], []]
        ums_lines = [[], []]
        for seed, (w, _) in enumerate((SEED0, SEED1)):
            rate_hits[seed] = rng.binomial(n, w.sum(), REPS)
            ums_lines[seed] = ums_values(rng, (SEED0, SEED1)[seed], n)
        rate_truth = (SEED0[0].sum() + SEED1[0].sum()) / 2
        lows, highs = [], []
        for k0, k1 in zip(*rate_hits, strict=True):
            line = pooled([{"value": k / n, "count": k, "n": n, "se": None, "unit": "rate"} for k in (k0, k1)])
            lows.append(line["ci_low"])
            highs.append(line["ci_high"])
        # measured: 0.942 (n 256), 0.950 (n 1024) (Wilson on the pooled count; it is
        # conservative when the seeds' rates differ: a sum of binomials spreads less)
        assert 0.93 <= covered(lows, highs, rate_truth) <= 0.97, n
        # UMS: mean of the seeds, standard error sqrt(sum se^2) / seeds, normal interval
        ums_truth = (expected_ums(SEED0[1], n) + expected_ums(SEED1[1], n)) / 2
        lows, highs = [], []
        for a, b in zip(*ums_lines, strict=True):
            line = pooled([{"value": v.value, "count": v.count, "n": v.n, "se": v.se, "ci_low": v.ci_low,
                            "ci_high": v.ci_high, "unit": "fraction"} for v in (a, b)])
            lows.append(line["ci_low"])
            highs.append(line["ci_high"])
        # measured: 0.941 (n 256), 0.954 (n 1024)
        assert 0.93 <= covered(lows, highs, ums_truth) <= 0.97, n


@pytest.mark.slow  # ~10 s
def test_pooled_p95_covers_the_mean_of_the_seeds():
    rng = np.random.default_rng(6)
    truth = (true_p95(0.3) + true_p95(0.1)) / 2
    for n in SIZES:
        seeds = [p95_values(best_similarities(rng, copy, (REPS, n))) for copy in (0.3, 0.1)]
        lines = [pooled([{"value": v.value, "count": None, "n": None, "se": v.se, "unit": "similarity"} for v in pair])
                 for pair in zip(*seeds, strict=True)]
        # measured: 0.958 (n 256), 0.964 (n 1024)
        assert 0.93 <= covered([x["ci_low"] for x in lines], [x["ci_high"] for x in lines], truth) <= 0.97, n


def rejected(estimates: list[list], metric: str, unit: str, n: int) -> float:
    """Share of repetitions in which the leaderboard's tests (``_test_group``: pairwise, Holm)
    rank any attack below another; ``estimates[r]`` holds repetition r's MetricValues."""
    columns = {"metric": metric, "direction": "higher", "unit": unit, "null_value": 0.0, "null_count": 0,
               "null_n": 256, "null_se": None, "n_generations": n}
    ranked_apart = 0
    for values in estimates:
        part = pd.DataFrame([{**columns, "attack": f"a{i}", "value": v.value, "count": v.count, "n": v.n,
                              "se": v.se} for i, v in enumerate(values)])
        ranked_apart += int(_test_group(part)["rank"].max() > 1)
    return ranked_apart / len(estimates)


@pytest.mark.slow  # ~25 s: 4,000 leaderboard test groups
def test_pairwise_tests_of_attacks_from_one_distribution_reject_at_most_5_percent():
    rng = np.random.default_rng(7)
    for n in SIZES:
        # three attacks, three pairs, Holm: the family-wise rate is what is bounded
        rates = [[stats.rate(int(k), n) for k in rng.binomial(n, SEED0[0].sum(), 3)] for _ in range(REPS)]
        # Fisher's exact test: measured 0.041 (n 256), 0.034 (n 1024)
        assert rejected(rates, "ams", "rate", n) <= 0.05, n
        ums = list(zip(*(ums_values(rng, SEED0, n) for _ in range(3)), strict=True))
        # the z-test on the occupancy standard errors: measured 0.033 (n 256), 0.039 (n 1024)
        assert rejected(ums, "ums", "fraction", n) <= 0.05, n


# ------------------------------------------------------------------------------------------
# Membership inference at the edges: the AUC's score interval and the TPR's Clopper-Pearson
# interval, with 64 members and 1,024 non-members (the digits runs at scale 64). The true AUC
# of each law is known in closed form; the percentile bootstrap these replace gave [1, 1] to
# every separable sample (most samples at AUC 0.999).
# ------------------------------------------------------------------------------------------

MEMBERS, NONMEMBERS = 64, 1024


def member_laws(auc: float) -> dict:
    """Score laws (members, non-members; higher = member) whose AUC is exactly ``auc``."""
    scale = auc / (1 - auc)  # Exp(mean s) above Exp(1): P = s / (1 + s)
    wide = sps.norm.ppf(auc) * np.sqrt(1 + 2.0 ** 2)  # N(mu, 2) above N(0, 1): Phi(mu / sqrt(5))
    equal = sps.norm.ppf(auc) * np.sqrt(2)
    share = 2 * (1 - auc)  # this share of members is drawn like a non-member (AUC 1/2), the rest far above

    def contaminated(rng, shape):
        base = rng.normal(0, 1, shape)
        return np.where(rng.random(shape) < share, base, base + 100)

    return {
        "exponential": (lambda rng, shape: rng.exponential(scale, shape), lambda rng, shape: rng.exponential(1, shape)),
        "binormal, member sd 2": (lambda rng, shape: rng.normal(wide, 2, shape), lambda rng, shape: rng.normal(0, 1, shape)),
        "binormal, equal sd": (lambda rng, shape: rng.normal(equal, 1, shape), lambda rng, shape: rng.normal(0, 1, shape)),
        "contaminated": (contaminated, lambda rng, shape: rng.normal(0, 1, shape)),
    }


def simulated_aucs(rng, law, reps: int = REPS) -> np.ndarray:
    """``reps`` Mann-Whitney AUCs of MEMBERS against NONMEMBERS drawn from ``law`` (no ties)."""
    members, nonmembers = law[0](rng, (reps, MEMBERS)), law[1](rng, (reps, NONMEMBERS))
    ranks = np.concatenate([members, nonmembers], axis=1).argsort(axis=1).argsort(axis=1) + 1
    return (ranks[:, :MEMBERS].sum(axis=1) - MEMBERS * (MEMBERS + 1) / 2) / (MEMBERS * NONMEMBERS)


# (floor asserted, measured coverage at AUC 0.99, 0.995, 0.999); in the comments the share of
# samples with an AUC of exactly 1, where the bootstrap said [1, 1]
AUC_COVERAGE = {
    "exponential": (0.93, (0.948, 0.955, 0.948)),  # the variance's own law (0.01, 0.10, 0.64 at 1)
    "binormal, member sd 2": (0.93, (0.958, 0.967, 0.971)),  # (0, 0, 0.16 at 1)
    "binormal, equal sd": (0.93, (0.996, 0.998, 0.996)),  # conservative: light tails on both sides
    # a share of members indistinguishable from non-members (each far above or among them): a
    # placement law heavier than the variance assumes, a little below 95% (0.28, 0.53, 0.88 at 1)
    "contaminated": (0.90, (0.938, 0.942, 0.925)),
}


@pytest.mark.slow  # ~15 s: 12,000 AUCs of 1,088 scores and their intervals
@pytest.mark.parametrize("law", list(AUC_COVERAGE))
def test_the_auc_score_interval_covers_at_auc_099_to_0999(law):
    rng = np.random.default_rng(8)
    floor, _ = AUC_COVERAGE[law]
    for auc in (0.99, 0.995, 0.999):
        values = simulated_aucs(rng, member_laws(auc)[law])
        intervals = np.array([stats.auc_interval(v, MEMBERS, NONMEMBERS) for v in values])
        assert np.all((intervals[:, 0] <= values) & (values <= intervals[:, 1]))
        # never [1, 1]: a separable sample keeps a lower bound below 1 (0.9712 at these sizes)
        assert np.all(intervals[values == 1.0, 0] < 0.972)
        assert covered(intervals[:, 0], intervals[:, 1], auc) >= floor, auc


@pytest.mark.slow  # ~5 s
def test_the_pooled_auc_of_two_models_covers_the_mean_of_their_aucs():
    from side_bench.report.leaderboard import membership_pool

    rng = np.random.default_rng(9)
    seeds = [simulated_aucs(rng, member_laws(auc)["exponential"]) for auc in (0.995, 0.999)]
    lines = [membership_pool(pd.DataFrame({"value": pair, "interval": stats.AUC_INTERVAL, "n_train": MEMBERS,
                                           "n_null": NONMEMBERS, "n": MEMBERS + NONMEMBERS, "count": None}))
             for pair in zip(*seeds, strict=True)]
    # measured 0.954 (truth 0.997; 7% of the pairs are both at 1)
    assert 0.93 <= covered([x["ci_low"] for x in lines], [x["ci_high"] for x in lines], 0.997) <= 0.97


CANDIDATES = 256
# (law, share of candidates that are copies): (floor asserted, measured coverage at AUC 0.99,
# 0.995, 0.999); in the comments the share of runs whose ranker put every copy first (AUC 1),
# where the percentile bootstrap it replaces said [1, 1]
RANKER_AUC_COVERAGE = {
    ("exponential", 0.1): (0.93, (0.939, 0.938, 0.960)),  # ~26 copies (0.25, 0.48, 0.85 at 1)
    ("binormal, member sd 2", 0.1): (0.93, (0.951, 0.964, 0.972)),  # (0.06, 0.18, 0.60 at 1)
    ("binormal, equal sd", 0.1): (0.93, (0.994, 0.992, 0.996)),  # conservative, as for membership
    ("contaminated", 0.1): (0.90, (0.920, 0.907, 0.960)),  # below 95%, as for membership (0.58, 0.79, 0.95 at 1)
    ("exponential", 0.03): (0.93, (0.950, 0.957, 0.980)),  # ~8 copies (0.64, 0.79, 0.94 at 1)
    ("contaminated", 0.03): (0.90, (0.929, 0.943, 0.991)),  # (0.87, 0.92, 0.99 at 1)
}


@pytest.mark.slow  # ~6 s a case: 3,000 runs of the ranker-auc metric on 256 candidates
@pytest.mark.parametrize("law, share", list(RANKER_AUC_COVERAGE))
def test_the_ranker_auc_interval_covers_at_auc_099_to_0999(law, share):
    # The ranker-auc metric itself on simulated candidates: each a copy with probability
    # ``share`` (so the number of copies varies between runs, as in a real one), its ranker
    # score drawn from the law's member (copy) or non-member side; the truth is the law's AUC.
    from types import SimpleNamespace

    from side_bench_builtins.ranking_metrics import RankerAUC

    rng = np.random.default_rng(11)
    floor, _ = RANKER_AUC_COVERAGE[(law, share)]
    metric = RankerAUC()
    for auc in (0.99, 0.995, 0.999):
        copy_law, other_law = member_laws(auc)[law]
        found = []
        for _ in range(REPS):
            copies = rng.random(CANDIDATES) < share
            score = np.empty(CANDIDATES)
            score[copies], score[~copies] = copy_law(rng, (copies.sum(),)), other_law(rng, ((~copies).sum(),))
            candidates = SimpleNamespace(ranker_scores={"clique": score}, ranker_thresholds={},
                                         pixel_d1=np.where(copies, 0.1, 0.5), pixel_d2=np.ones(CANDIDATES),
                                         n_candidates=CANDIDATES, n_train=K)
            if (value := metric.compute(candidates, None)).value is not None:  # None: no copy drawn (rare)
                found.append((value.value, value.ci_low, value.ci_high))
        values, low, high = np.array(found).T
        assert len(values) >= 0.99 * REPS
        assert np.all((low <= values) & (values <= high))
        assert np.all(low[values == 1.0] < 1.0)  # never [1, 1]
        assert covered(low, high, auc) >= floor, auc


def exact_coverage(interval, n: int, p: float) -> float:
    """P(the interval of k of n holds p), k ~ Binomial(n, p), summed exactly."""
    ks = np.arange(n + 1)
    bounds = np.array([interval(k, n) for k in ks])
    return float(np.sum(sps.binom.pmf(ks, n, p) * ((bounds[:, 0] <= p) & (p <= bounds[:, 1]))))


def test_the_tpr_interval_covers_at_every_rate_near_0_and_1():
    # at the threshold the non-members set, the members above it are Binomial(64, TPR): exact sums
    for p in (0.0005, 0.002, 0.005, 0.01, 0.99, 0.995, 0.998, 0.9995):
        assert exact_coverage(stats.clopper_pearson, MEMBERS, p) >= 0.95, p
    # why not Wilson: it dips to 0.880 at a TPR of 0.2% (or 99.8%) of 64 members
    assert exact_coverage(stats.wilson, MEMBERS, 0.002) == pytest.approx(0.880, abs=0.001)
    assert stats.membership_tpr(0, MEMBERS).ci_high == pytest.approx(1 - 0.025 ** (1 / 64), rel=1e-9)


@pytest.mark.slow  # ~10 s
def test_the_tpr_interval_covers_the_tpr_at_exactly_1_percent_near_0_and_1():
    # The full procedure, threshold included: binormal scores, the threshold the 11th highest of
    # 1,024 non-members (its true FPR ~0.5-1.8%), the truth the TPR at exactly 1% FPR.
    from side_bench_builtins.membership_metrics import members_above

    rng = np.random.default_rng(10)
    cut = sps.norm.ppf(0.99)  # the non-members' true 1% threshold
    # measured: 0.993 (TPR 0.001), 0.992 (0.01), 0.996 (0.99), 0.999 (0.999); at 0.5, where the
    # ROC is steep, the threshold's uncertainty shows: 0.913 (the interval is for the TPR at the
    # threshold found, which it covers 0.965 of the time)
    for tpr, floor in ((0.001, 0.95), (0.01, 0.95), (0.99, 0.95), (0.999, 0.95), (0.5, 0.89)):
        mu = cut - sps.norm.ppf(1 - tpr)  # P(N(mu, 1) > cut) = tpr
        members, nonmembers = rng.normal(mu, 1, (REPS, MEMBERS)), rng.normal(0, 1, (REPS, NONMEMBERS))
        values = [stats.membership_tpr(members_above(m, n, 0.01), MEMBERS) for m, n in zip(members, nonmembers,
                                                                                              strict=True)]
        assert covered([v.ci_low for v in values], [v.ci_high for v in values], tpr) >= floor, tpr


def test_newcombe_by_hand():
    # Newcombe (Stat. Med. 1998, Table II), method 10: 56/70 - 48/80 and 9/10 - 3/10
    d, low, high = stats.newcombe(56, 70, 48, 80)
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    assert tuple(round(v, 4) for v in stats.newcombe(9, 10, 3, 10)[1:]) == (0.1705, 0.8090)
    # 0 of n against 0 of n: a zero difference with a non-zero width, symmetric
    d, low, high = stats.newcombe(0, 4096, 0, 4096)
    assert d == 0 and low == -high and 0 < high < 0.001
    # other statistics: the normal interval of the standard errors; no data, no interval
    assert stats.difference({"value": 0.5, "se": 0.03}, {"value": 0.4, "se": 0.04}) == \
        pytest.approx((0.1, 0.1 - 0.05 * stats.Z, 0.1 + 0.05 * stats.Z))
    assert stats.difference({"value": 0.5}, {"value": 0.4}) is None


def test_newcombe_covers_a_difference_of_rates():
    rng = np.random.default_rng(7)
    # a leaderboard's comparison: two attacks at one scale, common and rare copy rates
    for n, p1, p2 in ((256, 0.30, 0.25), (1024, 0.02, 0.01)):
        k1, k2 = rng.binomial(n, p1, REPS), rng.binomial(n, p2, REPS)
        intervals = np.array([stats.newcombe(a, n, b, n)[1:] for a, b in zip(k1, k2, strict=True)])
        # measured: 0.950 (256, 0.30 - 0.25), 0.948 (1024, 0.02 - 0.01)
        assert 0.93 <= covered(intervals[:, 0], intervals[:, 1], p1 - p2) <= 0.97, (n, p1, p2)
