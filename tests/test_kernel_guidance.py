"""Issue 18 (items 2 and 4): exact-posterior ("kernel") guidance and the guidance diagnostics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from diffusers import UNet2DModel
from torch import nn

from side_bench import BenchError, run_suite
from side_bench.hookspecs import LabelledImages, RunContext, TargetModel
from side_bench.registry import load_registry, settings_dict
from side_bench.report.page import diagnostics_lines
from side_bench.run.suite import expand_cells, load_suite
from side_bench.sampling.classifier import log_prob_gradient
from side_bench.sampling.diffusion import ddim_sample
from side_bench.sampling.kernel_posterior import KernelPosterior, guidance_diagnostics, kernel_log_prob_gradient
from side_bench_builtins.extractors import ClassifierGuidance, Side
from side_bench_builtins.features import PixelFeatures

SCHEDULER = {"num_train_timesteps": 1000}  # diffusers' defaults: linear betas 1e-4 .. 0.02
BANDS = {"0-100", "100-300", "300-600", "600-1000"}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def alphas():
    return KernelPosterior(torch.zeros(1, 1, 1, 1), torch.zeros(1), 1, SCHEDULER).alphas_cumprod


def small_pool():
    """5 images of 2x2 (one channel) in 2 classes: shares 3/5 and 2/5."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 2, 2, generator=generator, dtype=torch.float64) * 2 - 1
    return images, torch.tensor([0, 0, 1, 1, 0])


def brute_log_posterior(x, t, c, images, labels, bandwidth=1.0):
    """log p(c | x_t) with Python floats, one pool image at a time."""
    abar = float(alphas()[t])
    scale, variance = math.sqrt(abar), bandwidth * (1 - abar)
    logits = [-float(((x - scale * image) ** 2).sum()) / (2 * variance) for image in images]

    def logsumexp(values):
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    return logsumexp([v for v, y in zip(logits, labels.tolist(), strict=True) if y == c]) - logsumexp(logits)


def test_two_image_pool_is_a_logistic_in_x_by_hand():
    # pool x_0 = -1 (class 0), x_1 = +1 (class 1), one pixel: l_1 - l_0 = 2 s x / v, so
    # p(1 | x) = sigmoid(2 s x / v) and d/dx log p(1 | x) = (1 - p) 2 s / v; at x = 0: 1/2 and s / v
    posterior = KernelPosterior(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1), torch.tensor([0, 1]), 2, SCHEDULER)
    abar = float(alphas()[500])
    s, v = math.sqrt(abar), 1 - abar
    x = torch.tensor([0.0, 0.3], dtype=torch.float64).reshape(2, 1, 1, 1)
    log_p, gradient = posterior.log_prob_and_gradient(x, torch.tensor([500, 500]), torch.tensor([1, 1]))
    assert log_p[0].item() == pytest.approx(math.log(0.5), rel=1e-12)
    assert gradient[0].item() == pytest.approx(s / v, rel=1e-12)
    p = 1 / (1 + math.exp(-2 * s * 0.3 / v))
    assert log_p[1].item() == pytest.approx(math.log(p), rel=1e-12)
    assert gradient[1].item() == pytest.approx((1 - p) * 2 * s / v, rel=1e-12)
    # bandwidth 2 doubles the variance: half the slope at x = 0
    wide = KernelPosterior(torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1), torch.tensor([0, 1]), 2, SCHEDULER,
                           bandwidth=2.0)
    assert wide.log_prob_and_gradient(x[:1], torch.tensor([500]), torch.tensor([1]))[1].item() == pytest.approx(
        s / (2 * v), rel=1e-6)


@pytest.mark.parametrize("bandwidth", [1.0, 1.7])
def test_posterior_and_gradient_equal_a_brute_force_float64_computation(bandwidth):
    images, labels = small_pool()
    posterior = KernelPosterior(images, labels, 2, SCHEDULER, bandwidth=bandwidth)
    generator = torch.Generator().manual_seed(1)
    timesteps = [0, 10, 200, 500, 900, 999]
    abar = alphas()
    # x_t drawn from the forward process of pool images, and the class guided to alternating
    x = torch.stack([abar[t].sqrt() * images[i % 5] + (1 - abar[t]).sqrt()
                     * torch.randn(1, 2, 2, generator=generator, dtype=torch.float64)
                     for i, t in enumerate(timesteps)])
    t = torch.tensor(timesteps)
    c = torch.tensor([0, 1, 0, 1, 0, 1])
    log_p, gradient = posterior.log_prob_and_gradient(x, t, c)
    everything = posterior.log_probs(x, t)
    assert gradient.dtype == torch.float64 and gradient.shape == x.shape
    for i, step in enumerate(timesteps):
        for k in (0, 1):
            expected = brute_log_posterior(x[i], step, k, images, labels, bandwidth)
            assert everything[i, k].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert log_p[i].item() == pytest.approx(brute_log_posterior(x[i], step, int(c[i]), images, labels, bandwidth),
                                                rel=1e-9, abs=1e-12)
        # central finite differences, the step relative to the noise level
        h = 1e-6 * math.sqrt(1 - float(abar[step]))
        finite = torch.zeros(4, dtype=torch.float64)
        for j in range(4):
            e = torch.zeros(4, dtype=torch.float64)
            e[j] = h
            e = e.reshape(1, 2, 2)
            finite[j] = (brute_log_posterior(x[i] + e, step, int(c[i]), images, labels, bandwidth)
                         - brute_log_posterior(x[i] - e, step, int(c[i]), images, labels, bandwidth)) / (2 * h)
        assert torch.allclose(gradient[i].flatten(), finite, rtol=1e-5, atol=1e-6 * float(finite.abs().max())), step
    # and the closed form equals autograd through the dense formula
    x_in = x.clone().requires_grad_(True)
    s = abar[t].sqrt()[:, None]
    logits = -((x_in.flatten(1)[:, None] - s[:, :, None] * images.flatten(1)[None]) ** 2).sum(2) / (
        2 * bandwidth * (1 - abar[t])[:, None])
    own = torch.where(labels[None] == c[:, None], logits, -torch.inf).logsumexp(1) - logits.logsumexp(1)
    (autograd,) = torch.autograd.grad(own.sum(), x_in)
    assert torch.allclose(gradient, autograd, rtol=1e-9, atol=1e-9)


def test_at_t_999_the_probabilities_are_the_pool_class_shares():
    # abar_999 = 4.0e-5, not 0: with d_j = s <x, x_j> / v - s^2 |x_j|^2 / (2 v) (s = sqrt(abar),
    # v = 1 - abar), p(c) = sum_{j in c} e^{d_j} / sum_j e^{d_j}, so |log p(c) - log(n_c / P)| <= 2 max_j |d_j|
    abar = float(alphas()[999])
    assert 3e-5 < abar < 5e-5
    s, v = math.sqrt(abar), 1 - abar
    generator = torch.Generator().manual_seed(2)
    for images, labels, shares in ((*small_pool(), [0.6, 0.4]),
                                   (torch.tensor([[-1.0, 1, 1, -1], [1, 1, -1, -1], [0.5, 0, 0, 0.5], [-1, -1, -1, 1]],
                                                 dtype=torch.float64).reshape(4, 1, 2, 2),
                                    torch.tensor([0, 1, 1, 0]), [0.5, 0.5])):
        posterior = KernelPosterior(images, labels, 2, SCHEDULER)
        x = s * images.repeat(5, 1, 1, 1) + math.sqrt(v) * torch.randn(len(images) * 5, 1, 2, 2, generator=generator,
                                                                       dtype=torch.float64)
        probabilities = posterior.log_probs(x, torch.full((len(x),), 999)).exp()
        d = (s * x.flatten(1) @ images.flatten(1).T - s**2 * (images.flatten(1) ** 2).sum(1) / 2) / v
        tolerance = 2 * d.abs().max(dim=1).values
        assert tolerance.max() < 0.1  # tight enough to mean something: shares within 10%
        error = (probabilities.log() - torch.tensor(shares, dtype=torch.float64).log()).abs()
        assert (error <= tolerance[:, None]).all()
        # ... and far from the shares at t = 0, where x_t is almost a pool image
        assert (posterior.log_probs(images, torch.zeros(len(images), dtype=torch.long)).exp().max(1).values > 0.99).all()


def test_chunking_over_the_pool_gives_the_results_of_one_chunk():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(23, 1, 3, 3, generator=generator) * 2 - 1
    labels = torch.randint(3, (23,), generator=generator)
    x = torch.randn(7, 1, 3, 3, generator=generator)
    t = torch.tensor([0, 5, 50, 250, 500, 750, 999])
    c = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    whole = KernelPosterior(images, labels, 3, SCHEDULER)
    assert whole._chunk(7) >= 23  # the default is one chunk here
    reference = whole.log_probs(x, t), *whole.log_prob_and_gradient(x.double(), t, c)
    for size in (1, 4, 22):
        chunked = KernelPosterior(images, labels, 3, SCHEDULER, chunk_size=size)
        found = chunked.log_probs(x, t), *chunked.log_prob_and_gradient(x.double(), t, c)
        for a, b in zip(reference, found, strict=True):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-300), size


def test_a_class_without_pool_images_has_probability_zero_and_no_gradient():
    images, labels = small_pool()
    posterior = KernelPosterior(images, labels, 3, SCHEDULER)  # class 2 has no images
    x = images[:2] * 0.5
    log_p, gradient = posterior.log_prob_and_gradient(x, torch.tensor([300, 300]), torch.tensor([2, 1]))
    assert log_p[0] == -torch.inf and torch.equal(gradient[0], torch.zeros_like(gradient[0]))
    assert torch.isfinite(log_p[1]) and gradient[1].abs().sum() > 0
    assert torch.allclose(posterior.log_probs(x, torch.tensor([300, 300])).exp().sum(1), torch.ones(2, dtype=torch.float64))


class ConstantEps(nn.Module):
    """A stand-in UNet: eps = 1 everywhere, so ||eps|| = sqrt(pixels)."""

    def forward(self, x, t, class_labels=None):
        return SimpleNamespace(sample=torch.ones_like(x))


def constant_target():
    return TargetModel(unet=ConstantEps(), scheduler_config=SCHEDULER, num_classes=0, trained_with="none",
                       image_shape=(1, 2, 2), identity={"constant": 1})


def test_alignment_is_one_for_the_kernel_against_itself_and_strength_is_as_computed_by_hand():
    images, labels = small_pool()
    images = images.float()
    guide = KernelPosterior(images, labels, 2, SCHEDULER)
    reference = KernelPosterior(images, labels, 2, SCHEDULER)
    held = torch.rand(40, 1, 2, 2, generator=torch.Generator().manual_seed(4)) * 2 - 1
    held_labels = torch.arange(40) % 2
    common = dict(guidance_scale=3.0, seed=0, device=torch.device("cpu"))
    found = guidance_diagnostics(kernel_log_prob_gradient(guide), reference, constant_target(), held, held_labels,
                                 **common)
    assert set(found["alignment"]) == BANDS and found["points"] == dict.fromkeys(BANDS, 40)
    assert found["aligned_points"]["600-1000"] == 40  # no certainty at high noise
    for band, value in found["alignment"].items():
        assert value == 1.0 or (value is None and found["aligned_points"][band] == 0)
    assert found["reference"] == {"classifier": "kernel", "pool_images": 5, "bandwidth": 1.0}
    # the opposite direction: -1
    flipped = guidance_diagnostics(lambda x, t, c: -kernel_log_prob_gradient(guide)(x, t, c), reference,
                                   constant_target(), held, held_labels, **common)
    assert flipped["alignment"]["600-1000"] == -1.0
    # a guide of constant gradient 2 (norm 4 on 2x2) against eps = 1 (norm 2): the ratio is
    # lambda sqrt(1 - abar_t) * 2, whose median lies between its values at the band's ends
    constant = guidance_diagnostics(lambda x, t, c: torch.full_like(x, 2.0), reference, constant_target(), held,
                                    held_labels, **common)
    abar = alphas()
    for band, value in constant["strength"].items():
        low, high = map(int, band.split("-"))
        assert 3.0 * 2 * math.sqrt(1 - abar[low]) <= value <= 3.0 * 2 * math.sqrt(1 - abar[high - 1])
    assert constant["strength"]["600-1000"] == pytest.approx(6.0, rel=0.02)  # abar < 0.026 there
    # seeded: the same numbers again; another seed, other noise
    assert guidance_diagnostics(lambda x, t, c: torch.full_like(x, 2.0), reference, constant_target(), held,
                                held_labels, **common) == constant
    assert guidance_diagnostics(lambda x, t, c: torch.full_like(x, 2.0), reference, constant_target(), held,
                                held_labels, **{**common, "seed": 1})["strength"] != constant["strength"]


def test_kernel_settings_are_validated_with_one_line_naming_the_setting():
    with pytest.raises(BenchError, match=r"^x: classifier: expected one of trained, kernel, got 'forest'$"):
        Side.Settings(classifier="forest").validate("x")
    with pytest.raises(BenchError, match="kernel_bandwidth: expected a positive number"):
        Side.Settings(classifier="kernel", kernel_bandwidth=0.0).validate("x")
    with pytest.raises(BenchError, match="guidance_temperature: expected 1 with classifier"):
        ClassifierGuidance.Settings(classifier="kernel", guidance_temperature=2.0).validate("x")
    Side.Settings(classifier="trained", guidance_temperature=2.0).validate("x")


KERNEL_ATTACKS = """
[[attacks]]
name = "side-kernel"
condition = "surrogate"
extractor = "side"
condition_settings = {{ clusters = 3, n_syn = 24, ddim_steps = 3, batch_size = 24 }}
extractor_settings = {{ ddim_steps = 3, {settings} }}
"""


def side_cell_configs(write_suite, settings):
    suite = load_suite(str(write_suite(extra=KERNEL_ATTACKS.format(settings=settings),
                                       replace={"scales = [16, 32]": "scales = [16]"})), load_registry())
    cells = expand_cells(suite, versions={}, device="cpu", features_identity={})
    return next(c for c in cells if c.attack.name == "side-kernel")


def test_the_new_settings_stay_out_of_the_config_at_their_defaults(write_suite):
    assert not {"classifier", "kernel_bandwidth"} & set(settings_dict(Side(Side.Settings())))
    kernel = settings_dict(Side(Side.Settings(classifier="kernel", kernel_bandwidth=2.0)))
    assert kernel["classifier"] == "kernel" and kernel["kernel_bandwidth"] == 2.0
    plain = side_cell_configs(write_suite, "guidance_scale = 1.0")
    said = side_cell_configs(write_suite, 'guidance_scale = 1.0, classifier = "trained", kernel_bandwidth = 1.0')
    assert plain.config_hash == said.config_hash
    assert "classifier" not in plain.config["attack"]["extractor"]["settings"]
    assert side_cell_configs(write_suite, 'guidance_scale = 1.0, classifier = "kernel"').config_hash != plain.config_hash


def tiny_unet_target():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    return TargetModel(unet=unet, scheduler_config=SCHEDULER, num_classes=0, trained_with="none",
                       image_shape=(1, 8, 8), identity={"tiny": 1})


def test_default_candidates_are_the_trained_classifier_s_and_every_guided_row_gets_the_diagnostics(tmp_path):
    target = tiny_unet_target()
    labelled = LabelledImages(images=torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1,
                              labels=torch.arange(40) % 4, num_classes=4, identity={"test": 1})
    ctx = RunContext(device=torch.device("cpu"), seed=0, cache_dir=tmp_path, features=PixelFeatures())
    settings = dict(ddim_steps=3, batch_size=8, guidance_scale=2.0, classifier_steps=3, classifier_width=8,
                    classifier_stages=2)
    side = Side(Side.Settings(**settings))
    out = side.extract(target, labelled, 6, ctx)
    classifier, _ = side.classifier(target, labelled, ctx)  # the cached one
    direct, _ = ddim_sample(target, 6, seed=0, num_steps=3, batch_size=8, device=ctx.device,
                            class_labels=out.targets, guidance=log_prob_gradient(classifier), guidance_scale=2.0)
    assert torch.equal(out.images, direct)  # the diagnostics change nothing the sampling sees
    guide = out.diagnostics["guidance"]
    assert set(guide["alignment"]) == BANDS and guide["points"] == dict.fromkeys(BANDS, 6)  # 6 held out of 40
    assert all(v is None or -1 <= v <= 1 for v in guide["alignment"].values())
    assert all(v > 0 for v in guide["strength"].values())
    assert guide["reference"]["pool_images"] == 34
    kernel = Side(Side.Settings(**settings, classifier="kernel", kernel_bandwidth=1.5)).extract(target, labelled, 6, ctx)
    assert kernel.diagnostics["classifier"]["classifier"] == "kernel"
    assert kernel.diagnostics["classifier"]["pool_images"] == 34 and kernel.diagnostics["classifier"]["bandwidth"] == 1.5
    assert set(kernel.diagnostics["classifier"]["heldout"]["accuracy"]) == BANDS
    assert not torch.equal(kernel.images, out.images)
    # with lambda 0 nothing is guided: no classifier, no diagnostics
    unguided = Side(Side.Settings(**{**settings, "guidance_scale": 0.0})).extract(target, labelled, 6, ctx)
    assert "guidance" not in unguided.diagnostics and "classifier" not in unguided.diagnostics
    # without held-out images the diagnostics say why they are missing
    none_held = Side(Side.Settings(**settings, classifier="kernel", classifier_holdout=0.0)).extract(
        target, labelled, 6, ctx)
    assert none_held.diagnostics["guidance"] == {"skipped": "no held-out images (classifier_holdout = 0)"}


def test_side_with_the_kernel_runs_end_to_end_and_its_rows_and_page_carry_the_diagnostics(write_suite, tmp_path):
    suite = write_suite(extra=KERNEL_ATTACKS.format(settings='guidance_scale = 1.0, classifier = "kernel"'),
                        replace={"scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "cache")
    side = rows[rows["attack"] == "side-kernel"]
    assert len(side) > 0
    diagnostics = side["diagnostics"].iloc[0]
    classifier, guide = diagnostics["classifier"], diagnostics["guidance"]
    assert classifier["classifier"] == "kernel" and classifier["bandwidth"] == 1.0
    # the surrogate's 24 labelled images, 15% (4) held out: a pool of 20
    assert classifier["pool_images"] == 20 and classifier["heldout_images"] == 4
    assert guide["points"] == dict.fromkeys(BANDS, 4)
    assert all(v == 1.0 for band, v in guide["alignment"].items() if guide["aligned_points"][band])
    assert guide["aligned_points"]["600-1000"] == 4
    assert side["extractor_settings"].iloc[0]["classifier"] == "kernel"
    assert not (tmp_path / "cache" / "classifiers").exists()  # nothing trained, nothing cached
    page_rows = pd.DataFrame({"setup": ["s"], "attack": ["side-kernel"], "scale": [16], "config_hash": ["h"],
                              "diagnostics": [diagnostics],
                              # what the page reads: the extractor's own summary, carried by the row
                              "diagnostics_summary": [side["diagnostics_summary"].iloc[0]]})
    (line,) = diagnostics_lines(page_rows, "s")
    assert line.startswith("side-kernel @ scale 16: target hit ")
    assert "; classifier: the exact posterior of 20 pool images (bandwidth 1.0); classifier held-out accuracy" in line
    assert "gradient alignment with the exact posterior by noise" in line and "600-1000: 1.00" in line
    assert "guidance strength by noise 0-100: " in line


@pytest.mark.parametrize("key, value", [("classifier_adversarial_eps", 0.1), ("classifier_gradient_penalty", 0.1),
                                        ("classifier_noise_augmentation", 0.1), ("classifier_input", "x0_hat"),
                                        ("classifier_time_module", "film")])
def test_the_kernel_refuses_a_training_option_it_would_ignore(key, value):
    from side_bench_builtins.extractors import GuidanceSettings

    GuidanceSettings(classifier="kernel").validate("side")  # the defaults are fine
    GuidanceSettings(**{key: value}).validate("side")  # and the option is fine with a trained classifier
    with pytest.raises(BenchError, match=f"side: {key}: a training option of the trained classifier"):
        GuidanceSettings(classifier="kernel", **{key: value}).validate("side")
