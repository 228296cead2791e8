"""SIDE and the conditions: guidance, surrogate clustering, labels, classifier cache, refusals."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import UNet2DModel
from optional_packages import FAISS

from side_bench import BenchError, run_suite
from side_bench.hookspecs import DataSplit, LabelledImages, RunContext, TargetDeclaration, TargetModel
from side_bench.sampling.classifier import TimeConditionedResNet, log_prob_gradient
from side_bench_builtins.conditions import Informative, RandomLabels, Surrogate, UniqueLabels, surrogate_labels
from side_bench_builtins.extractors import Sample, Side
from side_bench_builtins.features import PixelFeatures


def tiny_target(num_classes=0, trained_with="none"):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8, num_class_embeds=num_classes or None)
    return TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=num_classes,
                       trained_with=trained_with, image_shape=(1, 8, 8), identity={"test": num_classes})


def context(tmp_path, progress=None):
    return RunContext(device=torch.device("cpu"), seed=0, cache_dir=tmp_path, features=PixelFeatures(),
                      progress=progress or (lambda *a: None))


def test_guidance_is_the_gradient_of_log_p():
    torch.manual_seed(0)
    classifier = TimeConditionedResNet(1, num_classes=3, width=8, stages=2).double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([10, 500])
    labels = torch.tensor([0, 2])
    grad = log_prob_gradient(classifier)(x, t, labels)

    def log_p(images):
        return torch.log_softmax(classifier(images, t), dim=1)[torch.arange(2), labels]

    step = 1e-6
    for index in [(0, 0, 3, 4), (1, 0, 7, 0), (1, 0, 2, 2)]:
        bumped_up, bumped_down = x.clone(), x.clone()
        bumped_up[index] += step
        bumped_down[index] -= step
        finite_difference = (log_p(bumped_up) - log_p(bumped_down))[index[0]] / (2 * step)
        assert grad[index].item() == pytest.approx(finite_difference.item(), rel=1e-5, abs=1e-8)


def test_lambda_zero_gives_exactly_the_unguided_samples(tmp_path):
    target = tiny_target()
    labelled = LabelledImages(images=torch.rand(16, 1, 8, 8) * 2 - 1, labels=torch.arange(16) % 4, num_classes=4,
                              identity={"test": 1})
    ctx = context(tmp_path)
    # same batch size: on CPU a batch of 3 and one of 5 differ in the last bits (about 1e-5)
    plain = Sample(Sample.Settings(ddim_steps=4, batch_size=5)).extract(target, None, 5, ctx)
    unguided = Side(Side.Settings(ddim_steps=4, batch_size=5, guidance_scale=0.0)).extract(target, labelled, 5, ctx).images
    assert torch.equal(plain, unguided)
    guided = Side(Side.Settings(ddim_steps=4, batch_size=5, guidance_scale=5.0, classifier_steps=2,
                                classifier_width=8, classifier_stages=2)).extract(target, labelled, 5, ctx).images
    assert not torch.allclose(plain, guided)


@pytest.mark.parametrize("backend", ["sklearn", FAISS])
def test_kmeans_recovers_separated_clusters_and_cohesion_drops_a_diffuse_one(backend):
    rng = np.random.default_rng(0)
    dim = 16
    centres = np.eye(dim)[:3] * 10
    tight = np.concatenate([c + rng.normal(0, 0.3, (40, dim)) for c in centres])
    truth = np.repeat(np.arange(3), 40)
    labels, cohesion, kept = surrogate_labels(tight, 3, 0.5, seed=0, backend=backend)
    assert len(kept) == 3
    # the same partition up to renaming: each true cluster maps to exactly one label
    pairs = {(t, p) for t, p in zip(truth, labels, strict=True)}
    assert len(pairs) == 3 and len({p for _, p in pairs}) == 3
    # add a diffuse cluster: random directions, mean cosine to their centroid far below 0.5
    diffuse = rng.normal(0, 1, (40, dim)) * np.r_[np.zeros(3), np.ones(dim - 3)]
    labels, cohesion, kept = surrogate_labels(np.concatenate([tight, diffuse]), 4, 0.5, seed=0)
    assert sorted(np.round(np.sort(cohesion)[1:], 1) > 0.9) == [True, True, True]
    assert np.sort(cohesion)[0] < 0.5 and len(kept) == 3
    assert labels.max() == 2  # every image labelled with one of the three kept clusters


def split(n=12):
    images = torch.rand(n, 1, 8, 8) * 2 - 1
    return DataSplit(train=images, train_labels=torch.arange(n) % 3, heldout=images[:2], num_classes=3,
                     identity={"test": n})


def test_random_labels_depend_on_seed_only_and_unique_labels_are_one_per_image():
    data = split(50)
    random = RandomLabels(RandomLabels.Settings(classes=5))
    a, b, c = random.make_labels(data, 0), random.make_labels(data, 0), random.make_labels(data, 1)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert a.num_classes == 5 and a.labels.max() < 5
    assert RandomLabels(RandomLabels.Settings()).make_labels(data, 0).num_classes == 3  # the true class count
    unique = UniqueLabels(UniqueLabels.Settings()).make_labels(data, 0)
    assert unique.num_classes == 50 and len(set(unique.labels.tolist())) == 50


def test_conditional_targets_refuse_conditions_they_were_not_trained_for():
    conditional = tiny_target(num_classes=3, trained_with="informative")
    Informative(Informative.Settings()).check_target(conditional)
    with pytest.raises(BenchError, match="condition 'random' needs a target trained with 'random' labels"):
        RandomLabels(RandomLabels.Settings()).check_target(conditional)
    with pytest.raises(BenchError, match="condition 'surrogate' needs a target trained with 'none'"):
        Surrogate(Surrogate.Settings()).check_target(TargetDeclaration("informative", 3))


DECLARED_PLUGIN = '''
from dataclasses import dataclass
from side_bench.hookspecs import TargetDeclaration, hookimpl

class Loaded:
    """A model that declares it was trained with informative labels (as a loaded checkpoint does)."""
    def declared_target(self):
        return TargetDeclaration("informative", 10)
    def prepare(self, data, labels, cache_key, ctx):
        raise RuntimeError("not reached: validation refuses first")

@hookimpl
def register_models(register):
    register("declared-informative", Loaded)
'''


def test_a_declared_conditional_target_refuses_a_condition_with_exit_2(write_suite, tmp_path, entry_point_plugin):
    entry_point_plugin("declared-plugin", DECLARED_PLUGIN)
    suite = write_suite(replace={'name = "bench-unet"\nblock_out_channels = [8, 16]\nsteps = 12\nbatch_size = 16':
                                 'name = "declared-informative"', 'condition = "none"': 'condition = "random"'})
    from side_bench.cli import main

    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "attacks[0]" in message
    assert "condition 'random' needs a target trained with 'random' labels; this target was trained with 'informative'" in message
    assert not (tmp_path / "r").exists()


SIDE_ATTACKS = """
[[attacks]]
name = "side"
condition = "surrogate"
extractor = "side"
condition_settings = { clusters = 3, n_syn = 24, ddim_steps = 3, batch_size = 24 }
extractor_settings = { ddim_steps = 3, classifier_width = 8, classifier_stages = 2, classifier_steps = 4 }
sweep = { "extractor.guidance_scale" = [0.0, 2.0] }

[[attacks]]
name = "cond"
condition = "informative"
extractor = "classifier-guidance"
condition_settings = { conditional_target = false }
extractor_settings = { ddim_steps = 3, classifier_width = 8, classifier_stages = 2, classifier_steps = 4 }

[[attacks]]
name = "informative"
condition = "informative"
extractor = "sample"
extractor_settings = { ddim_steps = 3 }
"""


def test_side_sweep_and_conditions_run_and_classifier_cache_hits(write_suite, tmp_path):
    suite = write_suite(extra=SIDE_ATTACKS, replace={"scales = [16, 32]": "scales = [16]"})
    first, second = [], []
    rows = run_suite(str(suite), results_dir=tmp_path / "r1", cache_dir=tmp_path / "cache",
                     progress=lambda stage, done, total: first.append(stage))
    assert set(rows["attack"]) == {"uncond", "side[guidance_scale=0.0]", "side[guidance_scale=2.0]", "cond", "informative"}
    swept = rows[rows["attack"] == "side[guidance_scale=2.0]"]
    assert (swept["extractor_settings"].map(lambda s: s["guidance_scale"]) == 2.0).all()
    # issue 10: the cell's rows carry the condition's and the extractor's diagnostics
    diagnostics = swept["diagnostics"].iloc[0]
    assert diagnostics["surrogate"]["clusters"] == 3 and diagnostics["class_draw"] == "uniform"
    assert set(diagnostics["classifier"]["heldout"]["accuracy"]) == {"0-100", "100-300", "300-600", "600-1000"}
    assert "classifier" in rows[rows["attack"] == "cond"]["diagnostics"].iloc[0]
    assert {"classifier training", "clustering"} <= set(first)
    # two classifiers (SIDE's, trained once for the whole sweep, and Cond's); two targets
    # (unconditional, shared by uncond/side/cond; and the informative one)
    entries = lambda kind: [p for p in (tmp_path / "cache" / kind).iterdir() if p.is_dir()]  # noqa: E731 (not the build locks)
    assert len(entries("classifiers")) == 2
    assert len(entries("models")) == 2
    run_suite(str(suite), results_dir=tmp_path / "r2", cache_dir=tmp_path / "cache",
              progress=lambda stage, done, total: second.append(stage))
    assert "classifier training" not in second and "clustering" not in second and "training" not in second
