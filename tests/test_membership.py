"""Membership metrics: each statistic against a hand-written float64 version, AUC and TPR@FPR on
constructed scores, and leakage shown by a model trained on 16 images."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from side_bench.hookspecs import ModelContext, RunContext, TargetModel
from side_bench.plugin_api import BenchError, sample_generator
from side_bench.registry import load_registry
from side_bench.scoring.rows import metric_rows
from side_bench_builtins import membership_metrics as mm


def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8).eval()


def three_images() -> torch.Tensor:
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1


def by_hand(kind: str, unet, images, t: int, interval: int = 10, seed: int = 0, purpose: str = "p") -> np.ndarray:
    """The statistics written out from the papers' code, one image at a time, all in float64."""
    unet64 = copy.deepcopy(unet).double()
    ab = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()

    def eps(x, step):
        return unet64(x[None], torch.tensor([step])).sample[0]

    out = []
    with torch.no_grad():
        for i, x in enumerate(images.double()):
            if kind == "loss":
                noise = torch.randn(x.shape, generator=sample_generator(seed, purpose, i)).double()
                out.append(float(((noise - eps(ab[t].sqrt() * x + (1 - ab[t]).sqrt() * noise, t)) ** 2).sum()))
            elif kind == "secmi":
                def step(y, a, b):
                    e = eps(y, a)
                    return ab[b].sqrt() * (y - (1 - ab[a]).sqrt() * e) / ab[a].sqrt() + (1 - ab[b]).sqrt() * e
                y = x
                for a in range(0, t - interval, interval):  # 0 -> 10 -> ... -> t - interval
                    y = step(y, a, a + interval)
                back = step(step(y, t - interval, t), t, t - interval)
                out.append(float(((y - back) ** 2).sum()))
            elif kind in ("pia", "pian"):
                e0 = eps(x, 0)
                if kind == "pian":
                    e0 = e0 / e0.abs().mean() * math.sqrt(2 / math.pi)
                xt = ab[t].sqrt() * x + (1 - ab[t]).sqrt() * e0
                out.append(float(((e0 - eps(xt, t)).abs() ** 4).sum()))
            else:  # sima
                out.append(float((eps(x, t).abs() ** 4).sum()))
    return np.array(out)


@pytest.mark.parametrize("kind,t", [("loss", 100), ("secmi", 100), ("pia", 200), ("pian", 200), ("sima", 100)])
def test_each_statistic_equals_the_float64_version(kind, t):
    unet, images = tiny_unet(), three_images()
    ab = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    got = mm.statistics(kind, unet, ab, images, t=t, interval=10, seed=0, purpose="p", batch_size=2,
                        device=torch.device("cpu"))
    expected = by_hand(kind, unet, images, t)
    assert got.shape == (3,) and np.all(expected > 0)
    np.testing.assert_allclose(got, expected, rtol=2e-4)


def test_auc_and_tpr_on_constructed_scores():
    members, nonmembers = np.arange(100, 200, dtype=float), np.arange(0, 100, dtype=float)
    assert mm.auc(members, nonmembers) == 1.0
    assert mm.tpr_at_fpr(members, nonmembers, 0.01) == 1.0 and mm.tpr_at_fpr(members, nonmembers, 0.001) == 1.0
    same = np.ones(50)
    assert mm.auc(same, same) == 0.5
    assert mm.tpr_at_fpr(same, same, 0.01) == 0.0  # nothing is strictly above a tied threshold
    # by hand: members {1, 3}, non-members {0, 2}: pairs won 1>0, 3>0, 3>2 of 4 -> 0.75
    assert mm.auc(np.array([1.0, 3.0]), np.array([0.0, 2.0])) == 0.75
    # 200 non-members 0..199, FPR 1%: k = 2 flagged at most, threshold = the 3rd highest (197)
    nonmembers = np.arange(200, dtype=float)
    assert mm.tpr_at_fpr(np.array([196.0, 197.0, 198.0, 199.5]), nonmembers, 0.01) == 0.5
    # a separable sample is not a certain one: the score interval of AUC 1 with 100 and 100
    # solves (1 - t)^2 = 1.96^2 t (1 - t) [1 + 99 (1 - t) / (2 - t) + 99 t / (1 + t)] / 10^4,
    # t = 0.9805 by hand (two fixed-point steps from 0.96); the bootstrap it replaces said [1, 1]
    value = mm.separation(members, np.arange(0, 100, dtype=float), "auc")
    assert (value.value, value.ci_high, value.n, value.se, value.interval) == (1.0, 1.0, 200, None, "score-hanley-mcneil")
    assert value.ci_low == pytest.approx(0.9805, abs=5e-4)
    # the TPR: 100 of 100 members above the threshold, Clopper-Pearson: 0.025^(1/100) = 0.96378
    value = mm.separation(members, np.arange(0, 100, dtype=float), "tpr@1%")
    assert (value.value, value.count, value.n, value.ci_high, value.interval) == (1.0, 100, 100, 1.0, "clopper-pearson")
    assert value.ci_low == pytest.approx(0.025 ** (1 / 100), rel=1e-9)


def test_settings_are_checked_and_rows_declare_direction_and_unit():
    registry = load_registry()
    with pytest.raises(BenchError, match="report: expected one of auc"):
        registry.build("metrics", "pia", {"report": "tpr@5%"}, "suite.toml: metrics.pia")
    auc_metric = registry.build("metrics", "secmi", {})
    tpr_metric = registry.build("metrics", "sima", {"report": "tpr@1%"})
    assert (auc_metric.direction, auc_metric.unit, auc_metric.settings.t) == ("higher", "ratio", 100)
    assert (tpr_metric.unit, registry.build("metrics", "pia", {}).settings.t) == ("rate", 200)
    assert auc_metric.needs_model and not auc_metric.uses_bands


def model_context(unet, train, heldout):
    target = TargetModel(unet=unet, scheduler_config=dict(DDPMScheduler(num_train_timesteps=1000).config),
                         num_classes=0, trained_with="none", image_shape=(1, 8, 8), identity={"test": id(unet)})
    ctx = RunContext(device=torch.device("cpu"), seed=0, cache_dir=Path("."), features=None)
    return ModelContext(target=target, train=train, heldout=heldout, ctx=ctx)


def test_no_model_or_too_few_nonmembers_is_a_reason_not_an_error():
    metric = load_registry().build("metrics", "loss", {})
    row, = metric_rows(SimpleNamespace(n_candidates=3), {"loss": metric}, [])  # no model: the core says so
    assert row["value"] is None and "needs the target model" in row["reason"]
    assert "2 held-out" in metric.compute_model(model_context(tiny_unet(), three_images(), three_images()[:1])).reason


@pytest.mark.slow
def test_a_model_trained_on_16_images_leaks_their_membership_to_the_loss_attack():
    from sklearn.datasets import load_digits

    from side_bench.plugin_api import train_denoiser

    digits = torch.from_numpy(load_digits().images).float().unsqueeze(1) / 8.0 - 1
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    train, heldout = digits[order[:16]], digits[order[16:216]]
    unet = train_denoiser(tiny_unet(), DDPMScheduler(num_train_timesteps=1000), train, None, steps=600,
                          batch_size=16, learning_rate=3e-3, ema_decay=0.99, seed=0, device=torch.device("cpu"),
                          progress=lambda *a: None)
    value = load_registry().build("metrics", "loss", {}).compute_model(model_context(unet, train, heldout))
    assert value.value > 0.7 and value.ci_low > 0.5, value
