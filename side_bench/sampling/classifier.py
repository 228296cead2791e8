"""Classifiers for guidance: a small time-conditioned ResNet, its training, its gradient.

SIDE needs p(c | x_t, t): a classifier that sees noisy images and the timestep (the paper
uses ResNet34 with a time embedding added after the first BatchNorm of each residual block;
this is the same design, compact enough for small images). Carlini et al.'s Cond baseline
uses the same network trained on clean images only (``noise_aware=False``): it always sees
t = 0, which is what makes it an ordinary classifier.

Options for classifiers whose gradients point at the data (issue 18; each default is the
classifier as it was, so default classifiers keep their cache keys):

- the time module: ``"shift"`` (an added shift after the first BatchNorm of each block) or
  ``"film"`` (the SIDE paper's appendix: GroupNorm -> SiLU -> Linear on the time embedding,
  a scale and a shift of that BatchNorm's output);
- adversarial training, PGD-l2 on x_t (Kawar, Ganz and Elad 2022; Srinivas et al. 2023):
  ``pgd_perturbation`` within ``adversarial_radius``;
- a gradient-norm penalty (``gradient_penalty_term``, double backprop) and Gaussian noise
  augmentation (Srinivas et al. 2023);
- classifying the UNet's one-step estimate x0_hat(x_t) instead of x_t (``tweedie_denoiser``;
  universal guidance, Bansal et al. 2023; Vaeth et al. 2025), the guidance gradient flowing
  through the UNet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file, save_file
from torch import nn

from side_bench import cost
from side_bench.errors import BenchError
from side_bench.hookspecs import ProgressCallback
from side_bench.results.cache import cache_lock, read_cache_entry, write_cache_entry
from side_bench.sampling.diffusion import derive_seed

TIME_MODULES = ("shift", "film")
CLASSIFIER_INPUTS = ("x_t", "x0_hat")

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""denoiser(x_t, t, class_labels) -> x0_hat, the classifier's input in place of x_t."""


class TimeResidualBlock(nn.Module):
    """conv-BN(+time embedding)-ReLU-conv-BN, plus a (projected) skip connection.

    ``time_module`` "shift": h = norm1(conv1(x)) + Linear(time); "film" (the SIDE paper's
    appendix): h = norm1(conv1(x)) * (1 + scale) + shift, (scale, shift) = Linear(SiLU(GroupNorm(time))).
    """

    def __init__(self, channels_in: int, channels_out: int, time_dim: int, stride: int, time_module: str = "shift"):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.film = time_module == "film"
        # built in the same place either way, so "shift" draws the same initial weights as before
        self.time = (nn.Sequential(nn.GroupNorm(math.gcd(32, time_dim), time_dim), nn.SiLU(),
                                   nn.Linear(time_dim, 2 * channels_out))
                     if self.film else nn.Linear(time_dim, channels_out))
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.skip = (
            nn.Identity() if stride == 1 and channels_in == channels_out
            else nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out))
        )

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        if self.film:
            scale, shift = self.time(time)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        else:
            h = h + self.time(time)[:, :, None, None]
        h = self.norm2(self.conv2(F.relu(h)))
        return F.relu(h + self.skip(x))


class TimeConditionedResNet(nn.Module):
    """Stem, then one residual stage per width (stride 2 after the first), pooled, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, stages: int = 3,
                 blocks_per_stage: int = 1, noise_aware: bool = True, time_module: str = "shift"):
        super().__init__()
        if time_module not in TIME_MODULES:
            raise ValueError(f"time_module: expected one of {', '.join(TIME_MODULES)}, got {time_module!r}")
        self.noise_aware = noise_aware
        # the config rebuilds the network from the cache (config.json); "shift" is left out so a
        # default classifier's entry is the same file as before the option existed
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=width, stages=stages,
                           blocks_per_stage=blocks_per_stage, noise_aware=noise_aware)
        if time_module != "shift":
            self.config["time_module"] = time_module
        time_dim = 4 * width
        self.time_mlp = nn.Sequential(nn.Linear(width, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks, channels = [], width
        for stage in range(stages):
            out = width * 2**stage
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(TimeResidualBlock(channels, out, time_dim, stride, time_module))
                channels = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if not self.noise_aware:  # an ordinary classifier: blind to the noise level
            timesteps = torch.zeros_like(timesteps)
        embedding = get_timestep_embedding(timesteps.float().reshape(-1), self.config["width"]).to(x.dtype)
        time = self.time_mlp(embedding)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, time)
        return self.head(h.mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------
# Aligned training: what each option does to one batch (issue 18)
# --------------------------------------------------------------------------------------------

ALIGNED_DEFAULTS = {"adversarial_eps": 0.0, "adversarial_steps": 3, "gradient_penalty": 0.0,
                    "noise_augmentation": 0.0}


def aligned_training(**options) -> dict:
    """The ``train_classifier`` keyword arguments of the aligned-training options that are not at
    their defaults (``adversarial_steps`` only with ``adversarial_eps`` > 0): what a classifier's
    cache key adds, so a default classifier keeps the key it had before the options existed."""
    unknown = set(options) - set(ALIGNED_DEFAULTS)
    if unknown:
        raise TypeError(f"aligned_training: unknown option {sorted(unknown)[0]!r}")
    chosen = {key: value for key, value in options.items() if value != ALIGNED_DEFAULTS[key]}
    if not options.get("adversarial_eps"):
        chosen.pop("adversarial_steps", None)  # no PGD, no steps
    return chosen


def check_classifier_options(where: str, *, classifier_input: str = "x_t", time_module: str = "shift",
                             adversarial_eps: float = 0.0, adversarial_steps: int = 3,
                             gradient_penalty: float = 0.0, noise_augmentation: float = 0.0) -> None:
    """A one-line BenchError naming the first bad option (settings ``classifier_<option>``)."""
    if classifier_input not in CLASSIFIER_INPUTS:
        raise BenchError(f"{where}: classifier_input: expected one of {', '.join(CLASSIFIER_INPUTS)}, "
                         f"got {classifier_input!r}")
    if time_module not in TIME_MODULES:
        raise BenchError(f"{where}: classifier_time_module: expected one of {', '.join(TIME_MODULES)}, "
                         f"got {time_module!r}")
    if not 0 <= adversarial_eps < 1:  # a radius small against the noise's own norm
        raise BenchError(f"{where}: classifier_adversarial_eps: expected a share of the noise's norm in [0, 1), "
                         f"got {adversarial_eps}")
    if adversarial_steps < 1:
        raise BenchError(f"{where}: classifier_adversarial_steps: expected a positive integer, got {adversarial_steps}")
    if not gradient_penalty >= 0:
        raise BenchError(f"{where}: classifier_gradient_penalty: expected a weight >= 0, got {gradient_penalty}")
    if not noise_augmentation >= 0:
        raise BenchError(f"{where}: classifier_noise_augmentation: expected a standard deviation >= 0, "
                         f"got {noise_augmentation}")
    if classifier_input != "x_t" and (adversarial_eps or gradient_penalty or noise_augmentation):
        # their radius and gradient are those of x_t; on x0_hat they would need a rule of their own
        raise BenchError(f"{where}: classifier_input: 'x0_hat' takes no classifier_adversarial_eps, "
                         f"classifier_gradient_penalty or classifier_noise_augmentation (they act on x_t)")


def adversarial_radius(eps: float, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, shape,
                       noise_aware: bool = True) -> torch.Tensor:
    """(n,) the l2 radius of each input's PGD ball: eps x the expected norm of the noise in x_t,
    eps * sqrt(1 - alphabar_t) * sqrt(d) (d = C*H*W), so eps < 1 keeps the perturbation small
    against the noise at every t. A noise-blind classifier trains on clean images, which carry no
    noise: its radius is eps * sqrt(d), an rms of eps per pixel on images in [-1, 1]."""
    d = math.prod(shape[1:])
    if not noise_aware:
        return torch.full((shape[0],), eps * math.sqrt(d), dtype=torch.float64)
    return eps * torch.sqrt(1 - alphas_cumprod.double()[timesteps.cpu().long()]) * math.sqrt(d)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / _per_sample(vectors.flatten(1).norm(dim=1).clamp_min(1e-12), vectors)


def _project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """delta scaled back onto the ball of its radius where it left it."""
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * _per_sample(torch.clamp(radius.to(norms) / norms, max=1.0), delta)


@contextmanager
def _norm_statistics_kept(module: nn.Module):
    """The attack's forward passes run in training mode (batch statistics, as the step it feeds)
    but leave BatchNorm's running statistics as they were: the attack must not train them."""
    saved = {name: buffer.clone() for name, buffer in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                buffer.copy_(saved[name])


def pgd_perturbation(classifier: nn.Module, inputs: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor,
                     radius: torch.Tensor, *, steps: int, generator: torch.Generator,
                     label_smoothing: float = 0.0) -> torch.Tensor:
    """delta (inputs' shape), ||delta_i|| <= radius_i, raising the cross-entropy of the true labels:
    PGD-l2 (Madry et al. 2018) from a uniform random start in the ball (drawn from ``generator``),
    ``steps`` steps of 2.5 * radius / steps along the normalized gradient, each projected back
    onto the ball. Only delta gets gradients (the classifier's are untouched)."""
    d = inputs[0].numel()
    start = _unit(torch.randn(inputs.shape, generator=generator, dtype=torch.float64))
    start = start * (radius * torch.rand(len(inputs), generator=generator, dtype=torch.float64) ** (1 / d)).reshape(
        -1, *([1] * (inputs.dim() - 1)))
    delta = start.to(inputs.device, inputs.dtype)
    step = 2.5 * radius / steps
    with _norm_statistics_kept(classifier), torch.enable_grad():
        for _ in range(steps):
            delta = delta.detach().requires_grad_(True)
            loss = F.cross_entropy(classifier(inputs + delta, timesteps), labels, label_smoothing=label_smoothing,
                                   reduction="sum")  # a sum: each sample's own gradient, unscaled by the batch
            grad = torch.autograd.grad(loss, delta)[0]
            delta = _project(delta.detach() + _per_sample(step, delta) * _unit(grad), radius)
    return delta.detach()


def gradient_penalty_term(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean_i ||grad_x log p(y_i | x_i, t_i)||^2 of the ``logits`` computed from ``inputs`` (which
    require grad), differentiable in the classifier's weights (double backprop). The training
    step's own forward pass is reused, so BatchNorm's running statistics move once per step as
    before. In training mode BatchNorm couples the samples of a batch: g_i also holds the (order
    1/batch) terms through the batch statistics."""
    log_probs = F.log_softmax(logits, dim=1)
    selected = log_probs[torch.arange(len(inputs), device=inputs.device), labels].sum()
    grad = torch.autograd.grad(selected, inputs, create_graph=True)[0]
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def tweedie_denoiser(target, device: torch.device | None = None) -> Denoiser:
    """x0_hat(x_t, t) = (x_t - sqrt(1 - alphabar_t) eps_theta(x_t, t)) / sqrt(alphabar_t): the
    target UNet's one-step (Tweedie) estimate of x_0, clamped to the scheduler's clip range (as
    the DDIM step clamps its own x0 estimate, ``clip_sample``; a clamped pixel passes no gradient).
    Differentiable in x_t: guidance through it costs a UNet forward and backward per guided step.
    A class-conditional target is given the labels (the class the classifier is asked about)."""
    scheduler = DDPMScheduler.from_config(target.scheduler_config)
    alphas_cumprod = scheduler.alphas_cumprod
    bound = float(scheduler.config.clip_sample_range) if scheduler.config.clip_sample else None
    unet = target.unet.eval() if device is None else target.unet.to(device).eval()
    conditional = bool(target.num_classes)

    def denoise(x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        alpha = _per_sample(alphas_cumprod.to(x.device)[timesteps.long()], x)
        eps = unet(x, timesteps, class_labels=labels if conditional else None).sample.to(x.dtype)
        estimate = (x - torch.sqrt(1 - alpha) * eps) / torch.sqrt(alpha)
        return estimate if bound is None else estimate.clamp(-bound, bound)

    return denoise


@cost.preparation  # a fixed cost of the attack, not a draw's (side_bench/cost.py)
def train_classifier(classifier: TimeConditionedResNet, images: torch.Tensor, labels: torch.Tensor,
                     scheduler_config: dict, *, steps: int, batch_size: int, learning_rate: float,
                     seed: int, device: torch.device, progress: ProgressCallback,
                     label_smoothing: float = 0.0, record: dict | None = None,
                     adversarial_eps: float = 0.0, adversarial_steps: int = 3, gradient_penalty: float = 0.0,
                     noise_augmentation: float = 0.0, denoiser: Denoiser | None = None) -> TimeConditionedResNet:
    """Exactly ``steps`` AdamW steps of cross-entropy on forward-noised images x_t ~ q(x_t | x_0)
    at uniform t. A classifier that is not noise-aware is trained on the clean images (t = 0).

    The aligned options, each off at its default (then training is exactly what it was):
    ``noise_augmentation`` adds Gaussian noise of that std to the inputs; ``adversarial_eps``
    trains on PGD-l2 perturbed inputs with their clean labels (``adversarial_steps`` steps,
    radius ``adversarial_radius``); ``gradient_penalty`` adds lambda x mean ||grad_x log p(y | x)||^2
    to the loss. Each draws from a generator of its own, so the batches, t and noise are those of
    default training. With ``denoiser`` the classifier is trained on x0_hat(x_t) of the noised
    images (noise-blind or not; the denoiser frozen, no gradient), as guidance will show it.

    ``record``, when given, receives ``steps`` and ``final_loss`` (the mean training loss of
    the last tenth of the steps, at least the last one).
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-train"))
    attack_generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-pgd"))
    augment_generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-augment"))
    scheduler = DDPMScheduler.from_config(scheduler_config)
    classifier.to(device).train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=1e-4)
    tail = max(1, steps // 10)
    losses = []
    for step in range(steps):
        batch = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        cost.add("classifier_train_steps", 1)
        cost.add("classifier_train_images", len(batch))
        cost.add("classifier_pgd_passes", len(batch) * adversarial_steps if adversarial_eps else 0)
        cost.add("classifier_penalty_passes", len(batch) if gradient_penalty else 0)
        clean, target = images[batch], labels[batch]
        if classifier.noise_aware or denoiser is not None:
            timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
            noise = torch.randn(clean.shape, generator=generator)
            inputs = scheduler.add_noise(clean, noise, timesteps)
        else:
            timesteps, inputs = torch.zeros(len(batch), dtype=torch.long), clean
        inputs, timesteps, target = inputs.to(device), timesteps.to(device), target.to(device)
        if denoiser is not None:
            with torch.no_grad():
                inputs = denoiser(inputs, timesteps, target)
        if noise_augmentation:
            inputs = inputs + noise_augmentation * torch.randn(inputs.shape, generator=augment_generator).to(device)
        if adversarial_eps:
            radius = adversarial_radius(adversarial_eps, timesteps, scheduler.alphas_cumprod, inputs.shape,
                                        classifier.noise_aware)
            inputs = inputs + pgd_perturbation(classifier, inputs, timesteps, target, radius, steps=adversarial_steps,
                                               generator=attack_generator, label_smoothing=label_smoothing)
        if gradient_penalty:
            inputs = inputs.detach().requires_grad_(True)
        logits = classifier(inputs, timesteps)
        loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        if gradient_penalty:
            loss = loss + gradient_penalty * gradient_penalty_term(logits, inputs, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= steps - tail:
            losses.append(float(loss.detach()))
        if step % 10 == 0 or step == steps - 1:
            progress("classifier training", step + 1, steps)
    if record is not None:
        record["steps"] = steps
        record["final_loss"] = round(sum(losses) / len(losses), 4) if losses else None
    return classifier.eval()


def log_prob_gradient(classifier: nn.Module, temperature: float = 1.0, denoiser: Denoiser | None = None):
    """guidance(x_t, t, c) = grad_x log p(c | x_t, t), for ``side_bench.sampling.diffusion.ddim_sample``.

    ``temperature`` divides the logits first (T > 1 softens an overconfident classifier).
    The classifier's weights are frozen (only x needs a gradient): about 2% faster sampling.
    With ``denoiser`` (``tweedie_denoiser``) the classifier sees x0_hat(x_t) and the gradient
    w.r.t. x_t flows through the UNet by autograd: one more UNet forward and backward per
    guided step, in fp32.
    """
    classifier.requires_grad_(False)

    def guidance(x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            logits = classifier(x_in if denoiser is None else denoiser(x_in, timesteps, labels), timesteps)
            if temperature != 1.0:
                logits = logits / temperature
            log_probs = F.log_softmax(logits, dim=1)
            selected = log_probs[torch.arange(len(x_in), device=x_in.device), labels].sum()
            return torch.autograd.grad(selected, x_in)[0]

    guidance.guide = "classifier"  # what the sampler counts it as (side_bench/cost.py)
    return guidance


# --------------------------------------------------------------------------------------------
# Diagnostics: how good is the guide where it is used, and where do guided samples land
# --------------------------------------------------------------------------------------------

NOISE_BANDS = ((0, 100), (100, 300), (300, 600), (600, 1000))
"""Bands of t (half-open [low, high)) for the classifier diagnostics."""


def band_name(low: int, high: int) -> str:
    return f"{low}-{high}"


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): a seeded permutation, ``round(fraction * n)`` held out
    (at least one when fraction > 0 and n >= 2; never all)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "classifier-holdout")))
    held = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    return order[held:].sort().values, order[:held].sort().values


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| x share of samples."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for b in range(bins):
        inside = (confidence > edges[b]) & (confidence <= edges[b + 1])
        if b == 0:
            inside |= confidence == 0
        if inside.any():
            ece += float(inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs())
    return ece


@torch.no_grad()
@cost.benchmark_only  # the benchmark's measurement, not the attacker's work (side_bench/cost.py)
def accuracy_by_noise(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, scheduler_config: dict,
                      *, seed: int, device: torch.device, draws: int = 4, temperature: float = 1.0,
                      bands=NOISE_BANDS, batch_size: int = 1024, denoiser: Denoiser | None = None) -> dict:
    """Accuracy and ECE of p(c | x_t, t) per band of t, on ``images`` (held-out ones).

    Each image is noised ``draws`` times per band at t uniform in the band (seeded), exactly
    as guidance sees it: a noise-blind classifier gets the noisy x_t too, and with ``denoiser``
    the classifier gets x0_hat(x_t) (an x0_hat classifier). Returns
    {"accuracy": {band: a}, "ece": {band: e}, "evaluations": {band: n}}.
    """
    scheduler = DDPMScheduler.from_config(scheduler_config)
    generator = torch.Generator().manual_seed(derive_seed(seed, "classifier-diagnostics"))
    classifier = classifier.to(device).eval()
    out = {"accuracy": {}, "ece": {}, "evaluations": {}}
    if len(images) == 0:
        return out
    for low, high in bands:
        clean = images.repeat(draws, 1, 1, 1)
        target = labels.repeat(draws)
        timesteps = torch.randint(low, high, (len(clean),), generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        parts = []
        for i in range(0, len(noisy), batch_size):
            x, t = noisy[i : i + batch_size].to(device), timesteps[i : i + batch_size].to(device)
            if denoiser is not None:  # an x0_hat classifier sees the UNet's estimate, as in guidance
                x = denoiser(x, t, target[i : i + batch_size].to(device))
            parts.append(F.softmax(classifier(x, t).float() / temperature, dim=1).cpu())
        probabilities = torch.cat(parts)
        name = band_name(low, high)
        out["accuracy"][name] = round(float((probabilities.argmax(1) == target).float().mean()), 4)
        out["ece"][name] = round(expected_calibration_error(probabilities, target), 4)
        out["evaluations"][name] = len(clean)
    return out


def target_hit_rate(targets, nearest_index, train_targets) -> tuple[int, int]:
    """(hits, n): how many of the n candidates whose target is known landed nearest to a
    training image of that same class or cluster.

    ``targets`` (n,) the class/cluster each candidate was guided to or sampled with;
    ``nearest_index`` (n,) the index of each candidate's nearest training image;
    ``train_targets`` (N_train,) the class/cluster of every training image in the same label
    space. Candidates with a negative target (none) are not counted.
    """
    targets = torch.as_tensor(targets).long().reshape(-1)
    nearest = torch.as_tensor(nearest_index).long().reshape(-1)
    train = torch.as_tensor(train_targets).long().reshape(-1)
    if len(targets) != len(nearest):
        raise ValueError(f"target_hit_rate: {len(targets)} targets but {len(nearest)} nearest indices")
    known = targets >= 0
    hits = int((train[nearest[known]] == targets[known]).sum())
    return hits, int(known.sum())


def load_or_train_classifier(folder: Path, build, train) -> tuple[TimeConditionedResNet, dict]:
    """Reload a cached classifier from ``folder``, or train one and save it atomically.

    ``train(classifier, record)`` fills ``record`` (steps, final loss, diagnostics), which is
    saved as ``record.json`` next to the weights and returned with the classifier. The entry
    carries a manifest of its files' hashes: a damaged one is moved aside with a warning and
    trained again (``results/cache.py``).
    """

    def load(entry: Path) -> tuple[TimeConditionedResNet, dict]:
        classifier = TimeConditionedResNet(**json.loads((entry / "config.json").read_text()))
        classifier.load_state_dict(load_file(entry / "classifier.safetensors"))
        record_file = entry / "record.json"
        return classifier.eval(), json.loads(record_file.read_text()) if record_file.exists() else {}

    with cache_lock(folder):  # processes sharing a run train a given classifier once
        cached = read_cache_entry(folder, load, "classifier")
        if cached is not None:
            return cached
        record: dict = {}
        classifier = train(build(), record)
        with write_cache_entry(folder, "classifier") as temporary:
            state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
            save_file(state, temporary / "classifier.safetensors")
            (temporary / "config.json").write_text(json.dumps(classifier.config, indent=2))
            (temporary / "record.json").write_text(json.dumps(record, indent=2, default=str))
        return classifier, record
