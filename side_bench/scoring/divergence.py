"""The memorization divergence M = KL(q_eps || p_theta) (SIDE paper, Def. 1; docs/method.md section 3.5).

q_eps = (1/N) sum_i Normal(x_i, eps^2 I) is the training set blurred by eps. The estimate is
Monte Carlo over draws x ~ q_eps (one seeded generator per draw, so it does not depend on
batch size)::

    M ~= mean_j [ log q_eps(x_j) - log p_theta(x_j) ]

with log q_eps exact (log-sum-exp over the training set, float64) and log p_theta from a
pluggable ``LogDensity``: an exact density (``GaussianMixtureDensity``, for validation) or the
probability-flow ODE likelihood of an eps-prediction model (``FlowLogDensity``), either a
trained diffusers UNet (``UNetEps``) or an analytic Gaussian mixture's exact score
(``MixtureEps``). The standard error is the draws' standard deviation / sqrt(draws); with
Hutchinson divergence the probe noise is inside each draw's term, so the same SE covers it.

Units: nats per image (the KL of the full C*H*W-dimensional densities); divide by ``dim``
for nats per dimension. Images are in [-1, 1], as everywhere in side-bench.

**Which p_theta.** A DDPM/DDIM model defines a family of densities p_theta,sigma, one per
noise level, linked by its probability-flow ODE. We write it in the variance-exploding
coordinates of DDIM, y = x_t / sqrt(alphabar_t) = x_0 + sigma * noise with
sigma = sqrt((1 - alphabar_t) / alphabar_t), where the ODE is dy/dsigma = eps_theta(y, sigma)
and the sampler's prior x_T ~ Normal(0, I) is y ~ Normal(0, (1 + sigma_max^2) I). By default
(``sigma_start = eps``) p_theta is the model's own density at noise level eps: the model's
generations blurred by the same eps as the training set, so that like is compared with like,
and a model that memorized D exactly (its denoiser is the ideal empirical one) has M = 0.
``sigma_start = None`` takes the model's smallest noise level instead (the literal output
density; then M also counts the width mismatch between eps and the model's sharpness).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from side_bench.hookspecs import ProgressCallback, no_progress
from side_bench.sampling.diffusion import sample_generator

LogDensity = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""log_density(y (B, D) float, labels (B,) int64 or None) -> (B,) float64 log p_theta(y | label)."""


@dataclass
class DivergenceEstimate:
    value: float  # nats per image
    se: float  # Monte Carlo standard error, nats per image
    draws: int
    seconds: float
    dim: int  # C*H*W: value / dim is nats per dimension
    eps: float
    conditional: bool  # True: sum_c pi_c KL(q_eps,c || p_theta(. | c)), see memorization_divergence

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# q_eps: drawing from it and its exact log-density
# --------------------------------------------------------------------------------------------


def draw_blurred(train: torch.Tensor, eps: float, draws: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws x ~ q_eps, flat (draws, D) float64, and the training index each came from."""
    flat = train.reshape(len(train), -1).double()
    points, sources = [], []
    for j in range(draws):
        generator = sample_generator(seed, "memorization-divergence", j)
        i = int(torch.randint(len(flat), (1,), generator=generator))
        points.append(flat[i] + eps * torch.randn(flat.shape[1], generator=generator, dtype=torch.float64))
        sources.append(i)
    return torch.stack(points), torch.tensor(sources, dtype=torch.long)


def log_mixture(points: torch.Tensor, centers: torch.Tensor, width: float, chunk: int = 4096) -> torch.Tensor:
    """log (1/N) sum_i Normal(points; centers_i, width^2 I), exactly (float64 log-sum-exp)."""
    points = points.reshape(len(points), -1).double()
    centers = centers.reshape(len(centers), -1).double()
    dim = centers.shape[1]
    out = []
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        squared = torch.cdist(block, centers).square()  # exact enough in float64
        out.append(torch.logsumexp(-squared / (2 * width**2), dim=1))
    constant = math.log(len(centers)) + 0.5 * dim * math.log(2 * math.pi * width**2)
    return torch.cat(out) - constant


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


def memorization_divergence(train: torch.Tensor, log_density: LogDensity, *, eps: float, draws: int,
                            seed: int = 0, train_labels: torch.Tensor | None = None, batch_size: int = 64,
                            progress: ProgressCallback = no_progress) -> DivergenceEstimate:
    """Estimate M = KL(q_eps || p_theta) in nats per image; ``train`` (N, C, H, W) in [-1, 1].

    With ``train_labels`` (a class-conditional model), draw j comes from training image i with
    label c_i and the estimate is sum_c pi_c KL(q_eps,c || p_theta(. | c)), where q_eps,c blurs
    the images of class c and pi_c = N_c / N: the KL of the joint (x, c) distributions, which by
    the chain rule is at least KL of the marginals. This is the per-label memorization that the
    SIDE paper's Theorem 1 compares with the unconditional model's.
    """
    started = time.perf_counter()
    points, sources = draw_blurred(train, eps, draws, seed)
    if train_labels is None:
        labels = None
        log_q = log_mixture(points, train, eps)
    else:
        train_labels = train_labels.long().cpu()
        labels = train_labels[sources]
        log_q = torch.empty(draws, dtype=torch.float64)
        for c in labels.unique().tolist():
            mask = labels == c
            log_q[mask] = log_mixture(points[mask], train[train_labels == c], eps)
    log_p = []
    for start in range(0, draws, batch_size):
        stop = min(draws, start + batch_size)
        batch_labels = None if labels is None else labels[start:stop]
        if getattr(log_density, "takes_indices", False):  # per-draw randomness (Hutchinson probes)
            value = log_density(points[start:stop], batch_labels, indices=range(start, stop))
        else:
            value = log_density(points[start:stop], batch_labels)
        log_p.append(value.double().cpu())
        progress("memorization divergence", stop, draws)
    terms = (log_q - torch.cat(log_p)).numpy()
    se = float(np.std(terms, ddof=1) / math.sqrt(draws)) if draws > 1 else float("nan")
    return DivergenceEstimate(value=float(np.mean(terms)), se=se, draws=draws,
                              seconds=time.perf_counter() - started, dim=points.shape[1], eps=eps,
                              conditional=train_labels is not None)


# --------------------------------------------------------------------------------------------
# Density sources
# --------------------------------------------------------------------------------------------


class GaussianMixtureDensity:
    """An exact density: (1/N) sum_i Normal(centers_i, width^2 I) (labels are ignored)."""

    def __init__(self, centers: torch.Tensor, width: float):
        self.centers, self.width = centers, width

    def __call__(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return log_mixture(y, self.centers, self.width)


class MixtureEps:
    """The exact eps-prediction of the family p_sigma = (1/N) sum_i Normal(x_i, (s^2 + sigma^2) I).

    In the y = x_0 + sigma * noise coordinates, eps(y, sigma) = -sigma * grad log p_sigma(y)
    = sigma (y - E[x_i | y]) / (s^2 + sigma^2). With s = 0 this is the ideal denoiser of the
    training set: the model that reproduces D exactly.
    """

    def __init__(self, centers: torch.Tensor, base_width: float = 0.0):
        self.centers = centers.reshape(len(centers), -1).double()
        self.base_width = base_width
        self.dim = self.centers.shape[1]
        self.sigma_min, self.sigma_max = 1e-3, 100.0

    def width(self, sigma: float) -> float:
        return math.sqrt(self.base_width**2 + sigma**2)

    def __call__(self, y: torch.Tensor, sigma: float, labels: torch.Tensor | None = None) -> torch.Tensor:
        width = self.width(sigma)
        flat = y.reshape(len(y), -1)
        # y must stay in the autograd graph (the divergence differentiates through this).
        squared = (flat[:, None, :] - self.centers[None].to(flat)).square().sum(-1)
        weights = torch.softmax(-squared / (2 * width**2), dim=1)
        mean = weights @ self.centers.to(flat)
        return (sigma * (flat - mean) / width**2).reshape(y.shape)

    def log_prior(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        return log_mixture(y, self.centers, self.width(sigma))


class UNetEps:
    """A trained diffusers UNet (``TargetModel``) as eps(y, sigma) in DDIM's y coordinates.

    sigma maps to a (fractional) timestep by interpolating log sigma over the training
    schedule's sigmas; the UNet's sinusoidal timestep embedding takes fractional steps.
    """

    def __init__(self, target, device: torch.device | str = "cpu"):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(target.scheduler_config)
        alphabar = scheduler.alphas_cumprod.double()
        self.log_sigmas = (0.5 * torch.log((1 - alphabar) / alphabar)).numpy()
        self.sigma_min = float(math.exp(self.log_sigmas[0]))
        self.sigma_max = float(math.exp(self.log_sigmas[-1]))
        self.unet = target.unet.to(device).eval().requires_grad_(False)
        self.shape = tuple(target.image_shape)
        self.dim = int(np.prod(self.shape))
        self.num_classes = target.num_classes
        self.device = torch.device(device)

    def timestep(self, sigma: float) -> float:
        return float(np.interp(math.log(sigma), self.log_sigmas, np.arange(len(self.log_sigmas))))

    def __call__(self, y: torch.Tensor, sigma: float, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = (y / math.sqrt(1 + sigma**2)).reshape(len(y), *self.shape).float().to(self.device)
        t = torch.full((len(y),), self.timestep(sigma), device=self.device)
        if self.num_classes and labels is None:
            raise ValueError("a class-conditional UNet needs labels")
        class_labels = labels.to(self.device) if self.num_classes else None
        return self.unet(x, t, class_labels=class_labels).sample.reshape(len(y), -1).to(y.device, y.dtype)

    def log_prior(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """The sampler's prior x_T ~ Normal(0, I), i.e. y ~ Normal(0, (1 + sigma^2) I)."""
        variance = 1 + sigma**2
        flat = y.reshape(len(y), -1).double()
        return -0.5 * (flat.square().sum(1) / variance + flat.shape[1] * math.log(2 * math.pi * variance))


class FlowLogDensity:
    """log p_theta,sigma_start(y) by the probability-flow ODE dy/dsigma = eps(y, sigma).

    Integrates y and the divergence of eps from sigma_start up to the model's largest sigma
    with the classic 4th-order Runge-Kutta method on a grid uniform in log sigma (``steps``
    steps, 4 * steps evaluations; 2nd-order Heun needed 4x the evaluations for the same error),
    then log p(y_start) = log prior(y_end) + integral of div_y eps dsigma (instantaneous change
    of variables; Chen et al. 2018, Song et al. 2021). The divergence is exact (one backward pass
    per dimension, batched) up to ``exact_max_dim`` dimensions (default 256: digits' 64 are exact)
    and Hutchinson's estimate with ``probes`` seeded Rademacher vectors beyond.
    """

    def __init__(self, eps_model, *, sigma_start: float | None, steps: int = 12, exact_max_dim: int = 256,
                 probes: int = 1, seed: int = 0, chunk_images: int = 2048):
        self.model = eps_model
        self.sigma_start = max(sigma_start or eps_model.sigma_min, eps_model.sigma_min)
        self.steps, self.exact_max_dim, self.probes = steps, exact_max_dim, probes
        self.seed, self.chunk_images = seed, chunk_images

    takes_indices = True  # memorization_divergence passes the draws' indices (probes per draw)

    def _eps_and_divergence(self, y: torch.Tensor, sigma: float, labels, probes: torch.Tensor | None):
        """eps(y, sigma) (B, D) and div_y eps (B,), both detached."""
        dim = y.shape[1]
        if probes is None:  # exact: row k of the replicas carries basis vector e_k
            per_chunk = max(1, self.chunk_images // dim)
            eps_out, div_out = [], []
            basis = torch.eye(dim, dtype=y.dtype)
            for start in range(0, len(y), per_chunk):
                block = y[start : start + per_chunk]
                lab = None if labels is None else labels[start : start + per_chunk].repeat_interleave(dim)
                replicas = block.repeat_interleave(dim, dim=0).detach().requires_grad_(True)
                with torch.enable_grad():
                    out = self.model(replicas, sigma, lab)
                    tangent = basis.repeat(len(block), 1)
                    (grad,) = torch.autograd.grad(out, replicas, tangent)
                # replica (b, k) holds e_k^T J_b; its k-th entry is J_b[k, k]
                diagonal = grad.reshape(len(block), dim, dim).diagonal(dim1=1, dim2=2)
                div_out.append(diagonal.sum(1).detach())
                eps_out.append(out.detach().reshape(len(block), dim, dim)[:, 0])
            return torch.cat(eps_out), torch.cat(div_out)
        count = probes.shape[0]
        replicas = y.repeat(count, 1).detach().requires_grad_(True)
        lab = None if labels is None else labels.repeat(count)
        flat_probes = probes.reshape(count * len(y), dim)
        with torch.enable_grad():
            out = self.model(replicas, sigma, lab)
            (grad,) = torch.autograd.grad(out, replicas, flat_probes)
        div = (grad * flat_probes).sum(1).reshape(count, len(y)).mean(0)
        return out.detach()[: len(y)], div.detach()

    def __call__(self, y: torch.Tensor, labels: torch.Tensor | None = None, indices=None) -> torch.Tensor:
        """log p(y | labels); ``indices`` name the draws (their Hutchinson probes), default 0..B-1."""
        y = y.reshape(len(y), -1).double()
        dim = y.shape[1]
        probes = None
        if dim > self.exact_max_dim:  # Hutchinson: Rademacher probes per draw, fixed along the path
            indices = range(len(y)) if indices is None else indices
            probes = torch.stack([
                torch.randint(0, 2, (self.probes, dim), generator=sample_generator(self.seed, "hutchinson", int(j)))
                for j in indices], dim=1).double() * 2 - 1
        sigmas = np.exp(np.linspace(math.log(self.sigma_start), math.log(self.model.sigma_max), self.steps + 1))
        log_det = torch.zeros(len(y), dtype=torch.float64)
        for k in range(self.steps):  # classic Runge-Kutta 4 on (y, log det)
            s0, s1 = float(sigmas[k]), float(sigmas[k + 1])
            h, mid = s1 - s0, 0.5 * (s0 + s1)
            f1, d1 = self._eps_and_divergence(y, s0, labels, probes)
            f2, d2 = self._eps_and_divergence(y + 0.5 * h * f1, mid, labels, probes)
            f3, d3 = self._eps_and_divergence(y + 0.5 * h * f2, mid, labels, probes)
            f4, d4 = self._eps_and_divergence(y + h * f3, s1, labels, probes)
            y = y + h / 6 * (f1 + 2 * f2 + 2 * f3 + f4)
            log_det += h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        return self.model.log_prior(y, float(sigmas[-1])) + log_det


class MarginalOverLabels:
    """log p_theta(y) = log sum_c pi_c p_theta(y | c) of a class-conditional density (one ODE per class).

    The unconditional density of a conditional model whose labels are drawn with frequencies
    ``priors`` (the training labels' frequencies: the model's generations then follow the
    training set's class mix). Costs ``len(priors)`` times the conditional one.
    """

    def __init__(self, conditional: LogDensity, priors: torch.Tensor):
        self.conditional = conditional
        self.log_priors = torch.log(priors.double())
        self.takes_indices = getattr(conditional, "takes_indices", False)

    def __call__(self, y: torch.Tensor, labels: torch.Tensor | None = None, indices=None) -> torch.Tensor:
        extra = {"indices": indices} if self.takes_indices else {}
        per_class = [self.log_priors[c] + self.conditional(y, torch.full((len(y),), c, dtype=torch.long), **extra)
                     for c in range(len(self.log_priors)) if self.log_priors[c] > -math.inf]
        return torch.logsumexp(torch.stack(per_class), dim=0)
