"""Classifiers whose gradients are aligned, and the SIDE paper's defaults (issue 18 items 3 and 5)."""

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from side_bench import BenchError
from side_bench.hookspecs import DataSplit, LabelledImages, RunContext, TargetModel
from side_bench.registry import settings_dict
from side_bench.sampling import classifier as classifier_module
from side_bench.sampling.classifier import (
    TimeConditionedResNet,
    TimeResidualBlock,
    adversarial_radius,
    aligned_training,
    gradient_penalty_term,
    load_or_train_classifier,
    log_prob_gradient,
    pgd_perturbation,
    train_classifier,
    tweedie_denoiser,
)
from side_bench_builtins import extractors
from side_bench_builtins.conditions import Surrogate
from side_bench_builtins.extractors import ClassifierGuidance, Side
from side_bench_builtins.features import PixelFeatures
from side_bench_builtins.models import BenchUNet

SCHEDULER = {"num_train_timesteps": 1000}
CPU = torch.device("cpu")


def problem():
    """32 fixed images in [-1, 1], 3 classes."""
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return images, torch.arange(32) % 3


def trained(noise_aware=True, steps=12, **options):
    torch.manual_seed(0)
    images, labels = problem()
    classifier = TimeConditionedResNet(1, 3, width=8, stages=2, noise_aware=noise_aware)
    record = {}
    train_classifier(classifier, images, labels, SCHEDULER, steps=steps, batch_size=16, learning_rate=1e-2, seed=0,
                     device=CPU, progress=lambda *a: None, record=record, **options)
    return classifier, record


def same_weights(a, b):
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


# --- defaults: today's classifiers, keys and configs ------------------------------------------

# train_classifier at HEAD before the aligned options (commit 003a33e), on problem() with
# trained(): sum of |weights| (float buffers included) and the head's weight sum
HEAD_FINGERPRINTS = {True: (657.2491992908326, 1.9282986340112984, 1.0252),
                     False: (657.9113606789906, 2.046127831679769, 0.503)}
# ClassifierGuided.classifier's cache keys at HEAD (003a33e) for the fixed identities of key_of()
HEAD_KEYS = {"side": "342a0bf79595113c10fc33f54e1e768f3c18c75f6f56f3e36799ce584486db94",
             "classifier-guidance": "ae206d935e159312c3c056e6a1b78fcf71d988f805bd471afa34d444a676693f"}


@pytest.mark.parametrize("noise_aware", [True, False])
def test_default_training_is_the_training_of_before_and_each_option_at_zero_is_the_default(noise_aware):
    default, record = trained(noise_aware)
    state = default.state_dict()
    total = float(sum(v.double().abs().sum() for v in state.values() if v.is_floating_point()))
    expected = HEAD_FINGERPRINTS[noise_aware]
    assert (total, float(state["head.weight"].double().sum())) == pytest.approx(expected[:2], rel=1e-6)
    assert record["final_loss"] == pytest.approx(expected[2], abs=2e-4)
    images, labels = problem()
    t = torch.full((8,), 300)

    def loss(classifier):  # the clean-label loss of a fixed batch
        return nn.functional.cross_entropy(classifier(images[:8], t), labels[:8])

    for options in (dict(adversarial_eps=0.0, adversarial_steps=7), dict(gradient_penalty=0.0),
                    dict(noise_augmentation=0.0)):
        again, _ = trained(noise_aware, **options)
        assert same_weights(default, again), options
        assert torch.equal(loss(default), loss(again))  # so that loss is the default's, bit for bit


def key_of(extractor_class, monkeypatch, **settings):
    """The classifier cache key ``ClassifierGuided.classifier`` computes for fixed identities."""
    target = TargetModel(unet=None, scheduler_config=SCHEDULER, num_classes=0, trained_with="none",
                         image_shape=(1, 8, 8), identity={"cache_key": "fixed-target", "model": "bench-unet"})
    labelled = LabelledImages(images=torch.zeros(20, 1, 8, 8), labels=torch.arange(20) % 4, num_classes=4,
                              identity={"surrogate": "fixed-labels"})
    ctx = RunContext(device=CPU, seed=0, cache_dir=Path("/nonexistent"), features=PixelFeatures())
    seen = []
    monkeypatch.setattr(extractors, "load_or_train_classifier",
                        lambda folder, build, train: (seen.append(folder.name), (nn.Linear(1, 1), {}))[1])
    monkeypatch.setattr(extractors, "tweedie_denoiser", lambda target, device: None)  # the key needs no UNet
    extractor_class(extractor_class.Settings(**settings)).classifier(target, labelled, ctx)
    return seen[0]


def test_default_settings_keep_the_classifier_keys_of_before_and_every_option_changes_them(monkeypatch):
    for kind in (Side, ClassifierGuidance):
        assert key_of(kind, monkeypatch) == HEAD_KEYS[kind.name]
        # stated at their defaults, the options are the default classifier
        assert key_of(kind, monkeypatch, classifier_adversarial_eps=0.0, classifier_adversarial_steps=5,
                      classifier_gradient_penalty=0.0, classifier_noise_augmentation=0.0, classifier_input="x_t",
                      classifier_time_module="shift") == HEAD_KEYS[kind.name]
    changed = [key_of(Side, monkeypatch, **option) for option in (
        dict(classifier_adversarial_eps=0.1), dict(classifier_adversarial_eps=0.1, classifier_adversarial_steps=5),
        dict(classifier_gradient_penalty=0.01), dict(classifier_noise_augmentation=0.05),
        dict(classifier_input="x0_hat"), dict(classifier_time_module="film"))]
    assert len(set(changed) | {HEAD_KEYS["side"]}) == len(changed) + 1
    assert aligned_training(adversarial_eps=0.0, adversarial_steps=9, gradient_penalty=0.0) == {}
    assert aligned_training(adversarial_eps=0.2, adversarial_steps=3, gradient_penalty=0.5) == {
        "adversarial_eps": 0.2, "gradient_penalty": 0.5}


def test_added_settings_at_their_defaults_stay_out_of_the_config_hash():
    default = settings_dict(Side(Side.Settings()))
    assert not {key for key in default if key.startswith(("classifier_adversarial", "classifier_gradient",
                                                          "classifier_noise", "classifier_input",
                                                          "classifier_time"))}
    assert "classifier_holdout" in default  # an old setting is there at its default, as before
    film = settings_dict(Side(Side.Settings(classifier_time_module="film", classifier_adversarial_steps=5)))
    assert film["classifier_time_module"] == "film" and film["classifier_adversarial_steps"] == 5
    assert {k: v for k, v in film.items() if k in default} == default


@pytest.mark.parametrize(("settings", "named"), [
    (dict(classifier_input="x0"), "classifier_input"),
    (dict(classifier_time_module="films"), "classifier_time_module"),
    (dict(classifier_adversarial_eps=-0.1), "classifier_adversarial_eps"),
    (dict(classifier_adversarial_eps=1.5), "classifier_adversarial_eps"),
    (dict(classifier_adversarial_steps=0), "classifier_adversarial_steps"),
    (dict(classifier_gradient_penalty=-1.0), "classifier_gradient_penalty"),
    (dict(classifier_noise_augmentation=-0.1), "classifier_noise_augmentation"),
    (dict(classifier_input="x0_hat", classifier_gradient_penalty=0.1), "classifier_input"),
])
def test_bad_options_are_one_line_errors_naming_the_setting(settings, named):
    with pytest.raises(BenchError, match=named) as error:
        Side.Settings(**settings).validate("attacks[0]")
    assert "\n" not in str(error.value) and str(error.value).startswith(f"attacks[0]: {named}")


# --- adversarial training (PGD-l2 on x_t) ------------------------------------------------------

def test_the_radius_is_a_share_of_the_noise_norm():
    alphas = DDPMScheduler.from_config(SCHEDULER).alphas_cumprod
    radius = adversarial_radius(0.1, torch.tensor([0, 999]), alphas, (2, 1, 8, 8))
    # t = 0: beta_0 = 1e-4, noise std 0.01, norm 0.01 * 8 over 64 pixels; t = 999: std ~1 (alphabar 4e-5)
    assert radius.tolist() == pytest.approx([0.1 * 0.01 * 8, 0.1 * math.sqrt(1 - 4.04e-5) * 8], rel=1e-3)
    # a noise-blind classifier trains on clean images: an rms of eps per pixel
    assert adversarial_radius(0.1, torch.tensor([0, 0]), alphas, (2, 1, 8, 8), noise_aware=False).tolist() == \
        pytest.approx([0.8, 0.8])


def test_pgd_stays_inside_the_ball_raises_the_loss_and_leaves_the_classifier_alone():
    classifier, _ = trained(steps=6)
    classifier.train().zero_grad(set_to_none=True)  # training leaves its last step's gradients
    images, labels = problem()
    t = torch.tensor([5, 100, 400, 900] * 4)
    radius = adversarial_radius(0.3, t, DDPMScheduler.from_config(SCHEDULER).alphas_cumprod, images[:16].shape)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    delta = pgd_perturbation(classifier, images[:16], t, labels[:16], radius, steps=4,
                             generator=torch.Generator().manual_seed(0))
    norms = delta.flatten(1).norm(dim=1).double()
    assert (norms <= radius * (1 + 1e-6)).all()
    assert (norms >= radius * 0.999).all()  # 2.5 radii of steps in all: it ends on the sphere
    # the weights and BatchNorm's running statistics are as they were, and no weight got a gradient
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    assert all(p.grad is None for p in classifier.parameters())
    loss = lambda x: float(nn.functional.cross_entropy(classifier.eval()(x, t), labels[:16]).detach())  # noqa: E731
    assert loss(images[:16] + delta) > loss(images[:16])
    again = pgd_perturbation(classifier.train(), images[:16], t, labels[:16], radius, steps=4,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(delta, again)  # the random start comes from the generator given


def test_pgd_draws_from_its_own_stream_the_batches_t_and_noise_are_the_default_ones(monkeypatch):
    default, _ = trained()
    perturbed, _ = trained(adversarial_eps=0.2)
    assert not same_weights(default, perturbed)
    calls = []

    def zero(classifier, inputs, timesteps, labels, radius, *, steps, generator, label_smoothing=0.0):
        calls.append(steps)
        return torch.zeros_like(inputs)

    # with the attack's delta replaced by zero, training is the default's exactly: enabling PGD
    # moved no draw of the batches, t or noise
    monkeypatch.setattr(classifier_module, "pgd_perturbation", zero)
    nothing, _ = trained(adversarial_eps=0.2)
    assert calls == [3] * 12 and same_weights(default, nothing)


# --- gradient penalty, noise augmentation -------------------------------------------------------

class Linear(nn.Module):
    """logits = W x on 2-pixel images, blind to t."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float64))

    def forward(self, x, t):
        return x.flatten(1) @ self.weight.T


def test_the_gradient_penalty_of_a_linear_classifier_by_hand():
    # W = [[1, 0], [0, 2]]. grad_x log p(y | x) = W_y - sum_k p_k W_k.
    # x = (1, 0), y = 0: logits (1, 0), gradient p_1 (W_0 - W_1) = p_1 (1, -2), squared norm 5 p_1^2,
    #   p_1 = 1 / (1 + e);
    # x = (0, 1), y = 1: logits (0, 2), gradient p_0 (W_1 - W_0), squared norm 5 p_0^2, p_0 = 1 / (1 + e^2).
    classifier = Linear([[1.0, 0.0], [0.0, 2.0]])
    inputs = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1])
    term = gradient_penalty_term(classifier(inputs, None), inputs, labels)
    p1, p0 = 1 / (1 + math.e), 1 / (1 + math.e**2)
    assert float(term.detach()) == pytest.approx(2.5 * (p1**2 + p0**2), rel=1e-12)  # 0.216346...
    # differentiable in the weights (double backprop): the training step can lower it
    (weight_grad,) = torch.autograd.grad(term, classifier.weight)
    assert weight_grad.abs().sum() > 0


def input_gradient_norm(classifier, images, labels, t):
    x = images.clone().requires_grad_(True)
    return float(gradient_penalty_term(classifier.eval()(x, t), x, labels).detach())


def test_penalty_and_augmentation_train_other_classifiers_and_the_penalty_flattens_the_gradient():
    default, _ = trained(steps=30)
    penalized, _ = trained(steps=30, gradient_penalty=10.0)
    augmented, _ = trained(steps=30, noise_augmentation=0.1)
    assert not same_weights(default, penalized) and not same_weights(default, augmented)
    images, labels = problem()
    t = torch.full((32,), 200)
    assert input_gradient_norm(penalized, images, labels, t) < 0.5 * input_gradient_norm(default, images, labels, t)


# --- the x0_hat classifier ----------------------------------------------------------------------

def tiny_unet_target():
    """bench-unet's smallest UNet (one level of 8 channels), untrained, on 8x8 images."""
    torch.manual_seed(3)
    unet = BenchUNet(BenchUNet.Settings(block_out_channels=[8], layers_per_block=1)).build_unet((1, 8, 8), 0)
    return TargetModel(unet=unet.eval(), scheduler_config=SCHEDULER, num_classes=0, trained_with="none",
                       image_shape=(1, 8, 8), identity={"test": "tiny-unet"})


def test_the_x0_hat_guidance_gradient_is_the_finite_difference_through_the_unet():
    target = tiny_unet_target()
    target.unet.double()
    torch.manual_seed(4)
    classifier = TimeConditionedResNet(1, 3, width=8, stages=2).double().eval()
    denoiser = tweedie_denoiser(target)
    guidance = log_prob_gradient(classifier, denoiser=denoiser)
    x = 0.2 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t, labels = torch.tensor([50, 200]), torch.tensor([0, 2])
    with torch.no_grad():
        estimate = denoiser(x, t, labels)
    assert estimate.abs().max() < 0.9  # no pixel near the clamp, where the gradient has a kink
    grad = guidance(x, t, labels)

    def f(y):
        with torch.no_grad():
            log_probs = torch.log_softmax(classifier(denoiser(y, t, labels), t), dim=1)
            return float(log_probs[torch.arange(2), labels].sum())

    h = 1e-6
    for seed in range(3):
        direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        numeric = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
        assert float((grad * direction).sum()) == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    # the UNet is in the path: the gradient is not the x_t classifier's
    assert not torch.allclose(grad, log_prob_gradient(classifier)(x, t, labels))
    # the estimate is the Tweedie formula on the UNet's eps
    alpha = DDPMScheduler.from_config(SCHEDULER).alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    with torch.no_grad():
        eps = target.unet(x, t).sample
    assert torch.allclose(estimate, (x - (1 - alpha).sqrt() * eps) / alpha.sqrt())
    # saturated everywhere: clamped, so no gradient (the choice stated in tweedie_denoiser)
    assert torch.equal(guidance(torch.full_like(x, 30.0), t, labels), torch.zeros_like(x))


def test_an_x0_hat_classifier_is_trained_on_the_frozen_unets_estimates():
    target = tiny_unet_target()
    unet_before = {k: v.clone() for k, v in target.unet.state_dict().items()}
    denoiser = tweedie_denoiser(target)
    seen = []

    def counted(x, t, labels):
        seen.append((torch.is_grad_enabled(), len(x)))
        return denoiser(x, t, labels)

    for noise_aware in (True, False):
        seen.clear()
        classifier, _ = trained(noise_aware, steps=3, denoiser=counted)
        assert seen == [(False, 16)] * 3  # every step's batch, without gradients
        assert not same_weights(trained(noise_aware, steps=3)[0], classifier)
    assert all(torch.equal(unet_before[k], v) for k, v in target.unet.state_dict().items())
    assert all(p.grad is None for p in target.unet.parameters())


def test_side_with_the_x0_hat_classifier_runs_and_caches_by_input(tmp_path):
    target = tiny_unet_target()
    labelled = LabelledImages(images=torch.rand(24, 1, 8, 8) * 2 - 1, labels=torch.arange(24) % 3, num_classes=3,
                              identity={"test": "x0"})
    ctx = RunContext(device=CPU, seed=0, cache_dir=tmp_path, features=PixelFeatures())
    settings = dict(ddim_steps=2, batch_size=4, guidance_scale=1.0, classifier_steps=2, classifier_width=8,
                    classifier_stages=2)
    plain = Side(Side.Settings(**settings)).extract(target, labelled, 4, ctx)
    tweedie = Side(Side.Settings(classifier_input="x0_hat", **settings)).extract(target, labelled, 4, ctx)
    assert tweedie.images.shape == (4, 1, 8, 8) and torch.equal(plain.targets, tweedie.targets)
    assert not torch.equal(plain.images, tweedie.images)
    assert set(tweedie.diagnostics["classifier"]["heldout"]["accuracy"]) == {"0-100", "100-300", "300-600",
                                                                             "600-1000"}
    assert len([p for p in (tmp_path / "classifiers").iterdir() if p.is_dir()]) == 2


# --- the paper's time module (FiLM) ---------------------------------------------------------------

def test_the_film_block_scales_and_shifts_the_first_batchnorm_output():
    block = TimeResidualBlock(2, 2, 8, stride=1, time_module="film").eval()
    linear = block.time[2]
    with torch.no_grad():  # Linear -> (scale, shift) = (0.5, -0.25) for every channel, whatever the time
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([0.5, 0.5, -0.25, -0.25]))
    x, time = torch.randn(3, 2, 4, 4), torch.randn(3, 8)
    h = block.norm1(block.conv1(x)) * 1.5 - 0.25
    expected = torch.relu(block.norm2(block.conv2(torch.relu(h))) + x)
    assert torch.allclose(block(x, time), expected, atol=1e-6)
    assert isinstance(block.time[0], nn.GroupNorm) and isinstance(block.time[1], nn.SiLU)
    shift = TimeResidualBlock(2, 2, 8, stride=1)
    assert isinstance(shift.time, nn.Linear) and shift.time.out_features == 2
    with pytest.raises(ValueError, match="time_module"):
        TimeConditionedResNet(1, 2, time_module="films")


def test_the_film_classifier_changes_the_key_and_round_trips_through_the_cache(tmp_path):
    folder = tmp_path / "classifiers" / "film"
    trainings = []

    def build():
        torch.manual_seed(0)
        return TimeConditionedResNet(1, 3, width=8, stages=2, time_module="film")

    def train(classifier, record):
        trainings.append(1)
        images, labels = problem()
        return train_classifier(classifier, images, labels, SCHEDULER, steps=3, batch_size=8, learning_rate=1e-2,
                                seed=0, device=CPU, progress=lambda *a: None, record=record)

    first, _ = load_or_train_classifier(folder, build, train)
    second, _ = load_or_train_classifier(folder, build, train)
    assert trainings == [1] and same_weights(first, second)
    assert second.config["time_module"] == "film" and second.blocks[0].film
    x, t = problem()[0][:4], torch.tensor([0, 10, 500, 999])
    assert torch.equal(first.eval()(x, t), second(x, t))
    assert json.loads(next(folder.rglob("config.json")).read_text())["time_module"] == "film"
    # a default classifier's config is the file it was: no time_module in it
    assert "time_module" not in TimeConditionedResNet(1, 3).config


def test_film_is_in_the_classifier_key(monkeypatch):
    assert key_of(Side, monkeypatch, classifier_time_module="film") != HEAD_KEYS["side"]
    assert key_of(ClassifierGuidance, monkeypatch, classifier_time_module="film") != HEAD_KEYS["classifier-guidance"]


# --- the surrogate relabels dropped clusters by default (the paper's Algorithm 1) ----------------------

def test_dropped_defaults_to_relabel_and_is_in_the_clustering_key(tmp_path):
    assert Surrogate.Settings().dropped == "relabel"
    target = tiny_unet_target()
    data = DataSplit(train=torch.rand(12, 1, 8, 8) * 2 - 1, train_labels=None, heldout=torch.zeros(2, 1, 8, 8),
                     num_classes=0, identity={"test": 12})
    ctx = RunContext(device=CPU, seed=0, cache_dir=tmp_path, features=PixelFeatures())
    keys = {}
    for dropped in ("relabel", "remove"):
        condition = Surrogate(Surrogate.Settings(clusters=3, tau=-1.0, n_syn=24, ddim_steps=2, batch_size=24,
                                                 dropped=dropped))
        keys[dropped] = condition.attack_labels(target, data, ctx).identity["surrogate"]
    default = Surrogate(Surrogate.Settings(clusters=3, tau=-1.0, n_syn=24, ddim_steps=2, batch_size=24))
    assert keys["relabel"] != keys["remove"]
    assert default.attack_labels(target, data, ctx).identity["surrogate"] == keys["relabel"]
    assert len([p for p in (tmp_path / "surrogates" / "pools").iterdir() if p.is_dir()]) == 1  # one pool sampled


def test_every_committed_surrogate_suite_states_dropped():
    """The published suites were run with ``remove``: each says which it uses, so the new default
    changes none of their cells (their run folders are the same; checked with ``--dry-run``)."""
    import tomllib

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    found = 0
    for path in sorted(root.glob("*.toml")):
        for attack in tomllib.loads(path.read_text()).get("attacks", []):
            if attack.get("condition") == "surrogate":
                found += 1
                assert "dropped" in attack.get("condition_settings", {}), f"{path.name}: {attack['name']}"
    assert found >= 8
