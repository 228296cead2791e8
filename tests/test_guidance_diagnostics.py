"""Issue 10: attack diagnostics and the paper's open choices as settings (constructed cases)."""

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from torch import nn

from side_bench import BenchError
from side_bench.hookspecs import Candidates, DataSplit, LabelledImages, RunContext, TargetModel
from side_bench.sampling.classifier import (
    TimeConditionedResNet,
    accuracy_by_noise,
    expected_calibration_error,
    holdout_split,
    target_hit_rate,
    train_classifier,
)
from side_bench.sampling.diffusion import ddim_sample
from side_bench_builtins.conditions import Surrogate, surrogate_clusters, surrogate_pool
from side_bench_builtins.extractors import ClassifierGuidance, Sample, Side, draw_targets
from side_bench_builtins.features import PixelFeatures

SCHEDULER = {"num_train_timesteps": 1000}


def tiny_target(num_classes=0):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, num_class_embeds=num_classes or None)
    return TargetModel(unet=unet, scheduler_config=SCHEDULER, num_classes=num_classes,
                       trained_with="informative" if num_classes else "none", image_shape=(1, 8, 8),
                       identity={"test": num_classes})


def context(tmp_path):
    return RunContext(device=torch.device("cpu"), seed=0, cache_dir=tmp_path, features=PixelFeatures())


def test_target_hit_rate_on_a_constructed_case():
    train_targets = torch.tensor([0, 0, 1, 2, 2])
    targets = torch.tensor([0, 1, 2, 2, 1, -1])  # the last one was not guided: not counted
    nearest = torch.tensor([1, 2, 0, 4, 3, 0])
    # candidate 0 -> image 1 (class 0): hit; 1 -> image 2 (1): hit; 2 -> image 0 (0): miss;
    # 3 -> image 4 (2): hit; 4 -> image 3 (2): miss
    assert target_hit_rate(targets, nearest, train_targets) == (3, 5)
    assert target_hit_rate(np.array([1]), np.array([0]), np.array([1])) == (1, 1)
    with pytest.raises(ValueError, match="2 targets but 1 nearest"):
        target_hit_rate([0, 1], [0], [0])


class PerfectThenRandom(nn.Module):
    """Reads the class from the sign of the image mean below t = 100; random logits above."""

    noise_aware = True

    def forward(self, x, t):
        mean = x.mean(dim=(1, 2, 3))
        perfect = torch.stack([-mean, mean], dim=1) * 100
        noise = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(int(t.sum())))
        return torch.where((t < 100)[:, None], perfect, noise)


def test_accuracy_by_noise_band_is_perfect_at_low_t_and_chance_at_high_t():
    labels = torch.arange(400) % 2
    images = torch.where(labels[:, None, None, None] == 1, 1.0, -1.0).expand(400, 1, 8, 8).clone()
    out = accuracy_by_noise(PerfectThenRandom(), images, labels, SCHEDULER, seed=0, device=torch.device("cpu"))
    assert set(out["accuracy"]) == {"0-100", "100-300", "300-600", "600-1000"}
    assert out["accuracy"]["0-100"] == 1.0
    assert out["ece"]["0-100"] < 0.01  # confident and right
    assert abs(out["accuracy"]["600-1000"] - 0.5) < 0.06
    assert out["evaluations"]["600-1000"] == 1600  # 4 noise draws per image


def test_expected_calibration_error_of_an_overconfident_classifier():
    probabilities = torch.tensor([[0.9, 0.1]] * 10)
    labels = torch.tensor([0] * 5 + [1] * 5)  # right half the time at confidence 0.9
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)


def test_holdout_split_is_seeded_and_disjoint():
    train, held = holdout_split(100, 0.15, seed=3)
    assert len(held) == 15 and len(train) == 85 and not set(train.tolist()) & set(held.tolist())
    assert torch.equal(held, holdout_split(100, 0.15, seed=3)[1])
    assert not torch.equal(held, holdout_split(100, 0.15, seed=4)[1])
    assert len(holdout_split(10, 0.0, seed=0)[1]) == 0


def test_uniform_and_frequency_draws():
    labels = torch.tensor([0] * 90 + [1] * 10)
    uniform = draw_targets(2000, labels, 2, "uniform", seed=0)
    frequency = draw_targets(2000, labels, 2, "frequency", seed=0)
    assert abs(float((uniform == 0).float().mean()) - 0.5) < 0.04
    assert abs(float((frequency == 0).float().mean()) - 0.9) < 0.03
    # each draw depends only on (seed, i): a prefix is the same draw
    assert torch.equal(draw_targets(7, labels, 2, "frequency", seed=0), frequency[:7])
    assert int(draw_targets(500, torch.tensor([2, 2, 2]), 3, "frequency", seed=1).unique().numel()) == 1
    with pytest.raises(BenchError, match="class_draw"):
        draw_targets(3, labels, 2, "zipf", seed=0)


def test_guidance_window_outside_it_samples_follow_the_unguided_update_exactly():
    target = tiny_target()
    labels = torch.arange(6) % 3
    called = []

    def guidance(x, t, c):
        called.append(int(t[0]))
        return torch.ones_like(x)

    common = dict(seed=0, num_steps=10, batch_size=6, device=torch.device("cpu"), class_labels=labels)
    plain, _ = ddim_sample(target, 6, **common)
    # the 10 DDIM timesteps are 900, 800, ..., 0: a window between them guides no step
    empty, _ = ddim_sample(target, 6, guidance=guidance, guidance_scale=3.0, guidance_t_min=901,
                           guidance_t_max=1000, **common)
    assert called == [] and torch.equal(plain, empty)
    low, _ = ddim_sample(target, 6, guidance=guidance, guidance_scale=3.0, guidance_t_min=0,
                         guidance_t_max=300, **common)
    assert called == [200, 100, 0] and not torch.allclose(plain, low)
    called.clear()
    everywhere, _ = ddim_sample(target, 6, guidance=guidance, guidance_scale=3.0, **common)
    assert len(called) == 10 and not torch.allclose(low, everywhere)


def test_guidance_window_and_draw_settings_are_validated_with_one_line_naming_the_setting():
    with pytest.raises(BenchError, match="guidance_t_min, guidance_t_max"):
        Side.Settings(guidance_t_min=500, guidance_t_max=300).validate("x")
    with pytest.raises(BenchError, match="class_draw"):
        Side.Settings(class_draw="zipf").validate("x")
    with pytest.raises(BenchError, match="classifier_steps"):
        Side.Settings(classifier_steps=0).validate("x")
    with pytest.raises(BenchError, match="classifier_holdout"):
        Side.Settings(classifier_holdout=1.0).validate("x")
    with pytest.raises(BenchError, match="dropped"):
        Surrogate.Settings(dropped="keep").validate("x")


def test_dropped_clusters_are_removed_or_relabelled():
    rng = np.random.default_rng(0)
    dim = 16
    centres = np.eye(dim)[:3] * 10
    tight = np.concatenate([c + rng.normal(0, 0.3, (40, dim)) for c in centres])
    diffuse = rng.normal(0, 1, (40, dim)) * np.r_[np.zeros(3), np.ones(dim - 3)]
    embeddings = np.concatenate([tight, diffuse])
    found = surrogate_clusters(embeddings, 4, 0.5, seed=0)
    assert len(found.kept) == 3 and found.centroids.shape == (3, dim)
    keep, labels = surrogate_pool(embeddings, found, "remove")
    assert sorted(keep.tolist()) == list(range(120)) and labels.max() == 2  # the diffuse 40 are gone
    every, relabelled = surrogate_pool(embeddings, found, "relabel")
    assert len(every) == 160 and len(relabelled) == 160 and relabelled.max() == 2
    assert np.array_equal(relabelled[:120], labels)


def test_classifier_steps_trains_exactly_that_many_steps():
    classifier = TimeConditionedResNet(1, num_classes=3, width=8, stages=2)
    steps = []
    classifier.register_forward_hook(lambda module, args, out: steps.append(1) if module.training else None)
    images, labels = torch.rand(50, 1, 8, 8) * 2 - 1, torch.arange(50) % 3
    record = {}
    train_classifier(classifier, images, labels, SCHEDULER, steps=7, batch_size=16, learning_rate=1e-3, seed=0,
                     device=torch.device("cpu"), progress=lambda *a: None, record=record)
    assert len(steps) == 7 and record["steps"] == 7 and record["final_loss"] > 0


def test_guided_extractors_return_targets_and_classifier_diagnostics(tmp_path):
    target = tiny_target()
    labelled = LabelledImages(images=torch.rand(40, 1, 8, 8) * 2 - 1, labels=torch.arange(40) % 4, num_classes=4,
                              identity={"test": 1})
    settings = dict(ddim_steps=3, batch_size=8, guidance_scale=1.0, classifier_steps=3, classifier_width=8,
                    classifier_stages=2)
    outs = {}
    for extractor in (Side(Side.Settings(**settings)), ClassifierGuidance(ClassifierGuidance.Settings(**settings))):
        out = outs[extractor.name] = extractor.extract(target, labelled, 10, context(tmp_path))
        assert isinstance(out, Candidates) and out.targets.shape == (10,) and out.targets.dtype == torch.int64
        record = out.diagnostics["classifier"]
        assert record["steps"] == 3 and record["heldout_images"] == 6 and record["train_images"] == 34
        assert set(record["heldout"]["accuracy"]) == {"0-100", "100-300", "300-600", "600-1000"}
        assert out.diagnostics["class_draw"] == "uniform"
    # the cached classifier brings its record back
    again = Side(Side.Settings(**settings)).extract(target, labelled, 10, context(tmp_path))
    assert again.diagnostics["classifier"] == outs["side"].diagnostics["classifier"]
    assert outs["side"].diagnostics["classifier"]["noise_aware"] is True
    conditional = Sample(Sample.Settings(ddim_steps=2, batch_size=4)).extract(tiny_target(3), None, 5,
                                                                           context(tmp_path))
    assert isinstance(conditional, Candidates) and conditional.targets.max() < 3


def test_surrogate_gives_train_targets_and_cluster_diagnostics(tmp_path):
    target = tiny_target()
    data = DataSplit(train=torch.rand(12, 1, 8, 8) * 2 - 1, train_labels=None, heldout=torch.zeros(2, 1, 8, 8),
                     num_classes=0, identity={"test": 12})
    surrogate = Surrogate(Surrogate.Settings(clusters=3, tau=-1.0, n_syn=30, ddim_steps=2, batch_size=16))
    labelled = surrogate.attack_labels(target, data, context(tmp_path))
    assert labelled.train_targets.shape == (12,) and labelled.train_targets.max() < labelled.num_classes
    diagnostics = labelled.diagnostics["surrogate"]
    assert diagnostics["clusters"] == 3 and diagnostics["clusters_kept"] == 3 and diagnostics["pool_kept"] == 30
    assert set(diagnostics["cohesion"]) == {"q0", "q25", "q50", "q75", "q100"}
    # another tau reuses the sampled pool (no second sampling) and can drop clusters
    stages = []
    strict = Surrogate(Surrogate.Settings(clusters=3, tau=0.999, n_syn=30, ddim_steps=2, batch_size=16))
    ctx = RunContext(device=torch.device("cpu"), seed=0, cache_dir=tmp_path, features=PixelFeatures(),
                     progress=lambda stage, done, total: stages.append(stage))
    with pytest.raises(BenchError, match="lower tau"):
        strict.attack_labels(target, data, ctx)
    assert "sampling" not in stages
