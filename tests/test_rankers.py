"""Rankers (clique, denoise-loss) and the ranking metrics, on constructed inputs with hand answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from side_bench.hookspecs import Ranker, RunContext, TargetModel
from side_bench_builtins.rankers import Clique, DenoiseLoss
from side_bench_builtins.ranking_metrics import FlaggedDistinct, PrecisionAtK, RankerAUC


def stand_in(scores, copies, *, threshold=None, nearest=None, ranker="clique"):
    """A CandidateScores stand-in: copies get d1/d2 = 0.1, the others 0.5."""
    n = len(scores)
    copies = np.asarray(copies, dtype=bool)
    return SimpleNamespace(
        ranker_scores={ranker: np.asarray(scores, dtype=np.float64)},
        ranker_thresholds={ranker: threshold},
        pixel_d1=np.where(copies, 0.1, 0.5), pixel_d2=np.ones(n),
        best_similarity=np.where(copies, 0.97, 0.8),
        nearest_index=np.asarray(nearest if nearest is not None else np.arange(n), dtype=np.int64),
        n_candidates=n, n_train=50,
    )


# scores fall with the index; copies at 0, 1, 3, 6
SCORES = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
COPIES = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]


@pytest.mark.parametrize("k, expected", [(1, 1), (3, 2), (5, 3), (10, 4)])
def test_precision_at_k_by_hand(k, expected):
    value = PrecisionAtK(PrecisionAtK.Settings(k=k)).compute(stand_in(SCORES, COPIES), None)
    assert (value.count, value.n) == (expected, k)
    assert value.value == pytest.approx(expected / k)
    interval = binomtest(expected, k).proportion_ci(method="wilson")
    assert (value.ci_low, value.ci_high) == pytest.approx((interval.low, interval.high))
    assert value.interval == "wilson"


def test_precision_at_flagged_uses_the_rankers_threshold():
    # threshold 4.5 flags the scores 9, 8, 7, 6, 5: copies 0, 1, 3 -> 3 of 5
    value = PrecisionAtK(PrecisionAtK.Settings(k=0)).compute(stand_in(SCORES, COPIES, threshold=4.5), None)
    assert (value.count, value.n, value.value) == (3, 5, 0.6)
    none_flagged = PrecisionAtK(PrecisionAtK.Settings(k=0)).compute(stand_in(SCORES, COPIES, threshold=99), None)
    assert none_flagged.value is None and "flagged no candidate" in none_flagged.reason
    no_threshold = PrecisionAtK(PrecisionAtK.Settings(k=0)).compute(stand_in(SCORES, COPIES), None)
    assert no_threshold.value is None and "threshold" in no_threshold.reason


def test_precision_ties_keep_candidate_order_and_reasons():
    # all tied: the top 2 are candidates 0 and 1 (stable order), both copies
    value = PrecisionAtK(PrecisionAtK.Settings(k=2)).compute(stand_in([1.0] * 4, [1, 1, 0, 0]), None)
    assert value.count == 2
    too_many = PrecisionAtK(PrecisionAtK.Settings(k=11)).compute(stand_in(SCORES, COPIES), None)
    assert too_many.value is None and "more than" in too_many.reason
    other = PrecisionAtK(PrecisionAtK.Settings(ranker="denoise-loss")).compute(stand_in(SCORES, COPIES), None)
    assert other.value is None and "denoise-loss" in other.reason


def test_auc_by_hand():
    # positives 0.9, 0.7; negatives 0.8, 0.6: pairs won 0.9>0.8, 0.9>0.6, 0.7>0.6; lost 0.7<0.8 -> 3/4
    value = RankerAUC().compute(stand_in([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]), None)
    assert value.value == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    tied = RankerAUC(RankerAUC.Settings(resamples=0)).compute(stand_in([0.9, 0.5, 0.5], [1, 1, 0]), None)
    assert tied.value == pytest.approx(0.75) and tied.ci_low is None and tied.interval is None


def test_auc_interval_is_the_score_interval_of_the_copies_against_the_rest():
    # 40 candidates, copies at 0, 3, ..., 39 (14) ranked above every other (26): AUC 1. The lower
    # bound t solves (1 - t)^2 = 1.96^2 V(t), V Hanley-McNeil's with m = 14, n = 26, written out:
    copies = np.arange(40) % 3 == 0
    perfect = RankerAUC().compute(stand_in(np.where(copies, 2.0, 1.0) + np.linspace(0, 0.1, 40), copies), None)
    assert (perfect.value, perfect.ci_high, perfect.n) == (1.0, 1.0, 40)
    assert perfect.interval == "score-hanley-mcneil-copies"
    t, m, n = perfect.ci_low, 14, 26
    v = (t * (1 - t) + (m - 1) * (t / (2 - t) - t ** 2) + (n - 1) * (2 * t ** 2 / (1 + t) - t ** 2)) / (m * n)
    assert (1 - t) ** 2 == pytest.approx(1.959964 ** 2 * v, rel=1e-6)
    assert 0.85 < t < 0.95  # not [1, 1], as the percentile bootstrap said
    # its standard error (for the z-tests between attacks) is the half-width / 1.96, never 0 here
    assert perfect.se == pytest.approx((1 - t) / (2 * 1.959964), rel=1e-6)
    # one copy among 40: the bootstrap had no interval (most resamples held no copy); this one does
    one = RankerAUC().compute(stand_in(np.linspace(1, 0, 40), np.arange(40) == 5), None)
    assert one.value == pytest.approx(34 / 39) and one.ci_low < one.value < one.ci_high < 1


def test_auc_needs_both_classes():
    value = RankerAUC().compute(stand_in([0.9, 0.8], [0, 0]), None)
    assert value.value is None and "both classes" in value.reason


def test_flagged_distinct_counts_training_images_of_flagged_copies():
    # flagged (score >= 5): candidates 0..4; copies among them 0, 1, 3 with nearest 7, 7, 2
    nearest = [7, 7, 9, 2, 4, 1, 3, 3, 3, 3]
    value = FlaggedDistinct().compute(stand_in(SCORES, COPIES, threshold=5, nearest=nearest), None)
    assert (value.value, value.count, value.n) == (2.0, 2, 5)


def test_ranking_metrics_describe_themselves():
    for metric in (PrecisionAtK, FlaggedDistinct, RankerAUC):
        assert metric.uses_bands is False and metric.direction == "higher" and metric.description
    assert PrecisionAtK.unit == "rate" and FlaggedDistinct.unit == "count" and RankerAUC.unit == "ratio"


def test_clique_sizes_on_constructed_near_duplicates():
    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.rand(1, 8, 8, generator=generator) for _ in range(3))
    jitter = lambda image, s: (image + s * torch.randn(image.shape, generator=generator)).clamp(0, 1)  # noqa: E731
    # RMS of the jitter ~0.02: near-duplicates; a, b and c are ~0.4 RMS apart
    candidates = torch.stack([jitter(a, 0.02), jitter(a, 0.02), jitter(a, 0.02), jitter(b, 0.02), jitter(b, 0.02), c])
    ranker = Clique(Clique.Settings(distance=0.1, min_size=3))
    assert isinstance(ranker, Ranker)
    scores, threshold = ranker.score(candidates, None, None)
    assert scores.dtype == np.float64
    assert scores.tolist() == [3, 3, 3, 2, 2, 1] and threshold == 3
    # a tiny distance leaves every candidate alone
    assert Clique(Clique.Settings(distance=1e-4)).score(candidates, None, None)[0].tolist() == [1] * 6


def tiny_target(num_classes=0):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=num_classes or None).eval()
    return TargetModel(unet=unet, scheduler_config=dict(DDPMScheduler(num_train_timesteps=1000).config),
                       num_classes=num_classes, trained_with="none" if not num_classes else "informative",
                       image_shape=(1, 8, 8), identity={})


def context(seed=0):
    return RunContext(device=torch.device("cpu"), seed=seed, cache_dir=None, features=None)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_denoise_loss_is_deterministic_and_batch_independent(num_classes):
    target = tiny_target(num_classes)
    candidates = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole, threshold = DenoiseLoss(DenoiseLoss.Settings(draws=3, batch_size=512)).score(candidates, target, context())
    small, _ = DenoiseLoss(DenoiseLoss.Settings(draws=3, batch_size=2)).score(candidates, target, context())
    head, _ = DenoiseLoss(DenoiseLoss.Settings(draws=3, batch_size=512)).score(candidates[:2], target, context())
    assert threshold is None and whole.shape == (5,) and whole.dtype == np.float64
    assert np.all(whole <= 0)
    np.testing.assert_allclose(small, whole, rtol=1e-5)
    np.testing.assert_allclose(head, whole[:2], rtol=1e-5)
    other_seed, _ = DenoiseLoss(DenoiseLoss.Settings(draws=3)).score(candidates, target, context(seed=1))
    assert not np.allclose(other_seed, whole)


def test_rankers_are_registered():
    from side_bench.registry import load_registry

    registry = load_registry()
    assert {"clique", "denoise-loss"} <= set(registry.by_kind["rankers"])
    assert {"precision-at-k", "flagged-distinct", "ranker-auc"} <= set(registry.by_kind["metrics"])
    built = registry.build("metrics", "precision-at-k", {"k": 0, "ranker": "denoise-loss"})
    assert (built.settings.k, built.settings.ranker) == (0, "denoise-loss")
