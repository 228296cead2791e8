"""Rankers: the attacker's own view of which candidates are memorized (no training set).

``clique``: Carlini et al. (USENIX Security 2023) generate-and-filter: a training image the
model memorized comes out again and again, so a candidate with many near-duplicates among the
generations is flagged. ``denoise-loss``: the target model's own noise-prediction error on the
candidate (a membership-inference signal: a model denoises its training images better).
``base-gu``: not an attacker's score but a second reference for fine-tuned targets: each
candidate's Gu ratio against the images the *base* was pre-trained on (``TargetModel.base_images``),
which the ``base-copies`` metric counts. (The FineXtract clustering ranker is in ``finextract.py``.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler

from side_bench.plugin_api import (
    BenchError,
    ExactIndex,
    RunContext,
    TargetModel,
    hookimpl,
    sample_generator,
    to_unit,
)
from side_bench_builtins.metrics import GuRatio


class Clique:
    """Score = the size of a candidate's near-duplicate clique among the generations.

    Carlini et al. connect two generations when their (tiled) l2 distance is below delta and
    flag a generation whose clique has at least ``min_size`` members (they used 10 among 500
    generations per prompt). On 8x8-to-32x32 images tiling makes no sense, so the distance
    here is the project's normalised pixel distance, the RMS difference of the images in
    [0, 1] (= 1 - pixel similarity). The "clique" is the near-duplicate neighbourhood
    (the candidate itself plus every other candidate within ``distance``; a maximal clique is
    NP-hard and the neighbourhood is what the threshold test reads), found with the exact
    k-NN index's range search (faiss or torch).

    Defaults: ``distance`` 0.05 (pixel similarity 0.95, the default high band's lower edge:
    two generations count as the same image when each is in the other's high band),
    ``min_size`` 3 (Carlini's 10 was for 500 generations of one prompt; a benchmark cell has
    a few hundred generations spread over all the training images). On digits (scale 64,
    N_G = 256, seed 0) 0.1 flagged 204 of 256 with precision 0.58, no better than the 0.55 base
    rate (same-class digits are within 0.1 of each other); 0.05 flagged 32 with precision 0.91.
    Note that this default was set after seeing that sweep on the benchmark's own seed.
    """

    description = "near-duplicate clique size among the generations (Carlini et al. 2023)"

    @dataclass
    class Settings:
        distance: float = 0.05  # RMS pixel difference in [0, 1]
        min_size: int = 3  # flagged when the clique (the candidate included) is at least this large

        def validate(self, where: str) -> None:
            if not 0 < self.distance < 1:
                raise BenchError(f"{where}: distance: expected an RMS pixel difference in (0, 1)")
            if self.min_size < 1:
                raise BenchError(f"{where}: min_size: expected a positive integer")

    def __init__(self, settings: Clique.Settings = None):
        self.settings = settings or Clique.Settings()

    def score(self, candidates01: torch.Tensor, target: TargetModel | None, ctx: RunContext | None):
        n = len(candidates01)
        device = ctx.device if ctx is not None else "cpu"
        index = ExactIndex(candidates01, "l2", device=device)
        # Every pair with similarity >= 1 - distance, i.e. RMS difference <= distance.
        _, (rows, cols, _) = index.search_with_pairs(candidates01, 1, 1.0 - self.settings.distance)
        rows, cols = rows.numpy(), cols.numpy()
        others = np.bincount(rows[rows != cols], minlength=n)
        return (others + 1).astype(np.float64), float(self.settings.min_size)


class DenoiseLoss:
    """Score = minus the target's noise-prediction error on the candidate at timestep t.

    loss(x) = mean over ``draws`` noises e of mean((eps_theta(sqrt(ab_t) x + sqrt(1 - ab_t) e, t) - e)^2);
    the score is -loss (higher = the model denoises it better = more likely a training image).
    Noise for candidate i comes from its own generator (ctx.seed, "denoise-loss", i), so the
    score does not depend on the batch size or order. A class-conditional target is scored with
    the class that denoises best (the attacker does not know the label): min over classes.

    Default t = 100 of 1000 (alphabar ~ 0.89 on the linear schedule, noise std ~ 0.33 in
    [-1, 1]): small enough that the image is still recognisable (so the error depends on *which*
    image it is), large enough that the error is not dominated by the pixel noise a model cannot
    predict; membership-inference work on diffusion models (Carlini et al. 2023 on CIFAR-10,
    Matsumoto et al. 2023) finds the loss separates members best at t of order 50-300 of 1000.
    ``draws`` 8 noises per candidate average out most of the noise draw's variance.
    No threshold: a loss level does not transfer between models.
    """

    description = "minus the target's denoising error at small t (membership-style)"
    prefix_invariant = True  # a candidate's loss is its own: the first k scores are a prefix's

    @dataclass
    class Settings:
        timestep: int = 100
        draws: int = 8
        batch_size: int = 512  # images per UNet call; never changes the scores

        def validate(self, where: str) -> None:
            if self.timestep < 0:
                raise BenchError(f"{where}: timestep: expected a non-negative integer")
            if self.draws < 1 or self.batch_size < 1:
                raise BenchError(f"{where}: draws and batch_size: expected positive integers")

    def __init__(self, settings: DenoiseLoss.Settings = None):
        self.settings = settings or DenoiseLoss.Settings()

    def noise(self, seed: int, n: int, shape) -> torch.Tensor:
        """(n, draws, C, H, W): candidate i's noises from its own generator."""
        return torch.stack([torch.randn((self.settings.draws, *shape), generator=sample_generator(seed, "denoise-loss", i))
                            for i in range(n)])

    @torch.no_grad()
    def losses(self, candidates01: torch.Tensor, target: TargetModel, ctx: RunContext) -> np.ndarray:
        s = self.settings
        scheduler = DDPMScheduler.from_config(target.scheduler_config)
        if s.timestep >= scheduler.config.num_train_timesteps:
            raise BenchError(f"ranker 'denoise-loss': timestep {s.timestep} is not below the model's "
                             f"{scheduler.config.num_train_timesteps} training timesteps")
        alphabar = float(scheduler.alphas_cumprod[s.timestep])
        device = ctx.device
        unet = target.unet.to(device).eval()
        x0 = candidates01.float() * 2 - 1  # the model's [-1, 1]
        n, shape = len(x0), tuple(x0.shape[1:])
        noise = self.noise(ctx.seed, n, shape)
        noisy = math.sqrt(alphabar) * x0[:, None] + math.sqrt(1 - alphabar) * noise
        flat_noisy, flat_noise = noisy.reshape(-1, *shape), noise.reshape(-1, *shape)
        classes = list(range(target.num_classes)) if target.num_classes else [None]
        per_class = []
        for c in classes:
            errors = []
            for start in range(0, len(flat_noisy), s.batch_size):
                batch = flat_noisy[start : start + s.batch_size].to(device)
                t = torch.full((len(batch),), s.timestep, device=device, dtype=torch.long)
                labels = None if c is None else torch.full((len(batch),), c, device=device, dtype=torch.long)
                predicted = unet(batch, t, class_labels=labels).sample.float().cpu()
                errors.append((predicted - flat_noise[start : start + s.batch_size]).square().flatten(1).mean(1))
            per_class.append(torch.cat(errors).reshape(n, s.draws).double().mean(1))
        return torch.stack(per_class).min(0).values.numpy()

    def score(self, candidates01: torch.Tensor, target: TargetModel, ctx: RunContext):
        return -self.losses(candidates01, target, ctx), None


class BaseGu:
    """Score = minus each candidate's Gu ratio d1 / d2 against the base's training images.

    A fine-tuned target's metrics score candidates against the fine-tuning set (the scale's
    images); a candidate may instead copy one of the images the base was pre-trained on
    (``TargetModel.base_images``). This ranker gives every candidate the same test as the
    ``gu-ratio`` headline, against those images: the exact float64 pixel distances to the
    nearest and second-nearest distinct base image (``ExactIndex``, images in [0, 1] as the
    training reference sees them; bit-identical base images collapsed first, as the training
    reference collapses its own, so a duplicate is not its own second neighbour); ratio 0 for an
    exact copy. Score = -ratio (higher = more of a copy, the ranker convention); the threshold
    -1/3 flags ratio <= 1/3, and ``base-copies`` counts ratio < 1/3, ``gu-ratio``'s strict test.
    It reads no fine-tuning image, but it does read a training set (the base's), so it is a
    reference the benchmark reports, not what an attacker has.
    """

    description = "minus the Gu ratio NN1/NN2 against a fine-tuned target's base training images (base-copies reads it)"
    attacker = False  # it reads the base's training images: a reference, never an attacker's ranker
    prefix_invariant = True  # a candidate's ratio is its own

    def score(self, candidates01: torch.Tensor, target: TargetModel, ctx: RunContext | None):
        base = getattr(target, "base_images", None)
        if base is None:
            raise BenchError("ranker 'base-gu': the target has no base training images (TargetModel.base_images); "
                             "use a fine-tuned target, e.g. bench-unet with finetune = { ... }")
        base01 = to_unit(base).reshape(len(base), -1)
        distinct = torch.unique(base01, dim=0)
        if len(distinct) < 2:
            raise BenchError("ranker 'base-gu': needs at least 2 distinct base training images (Gu et al.'s ratio)")
        device = ctx.device if ctx is not None else "cpu"
        distances, _ = ExactIndex(distinct, "l2", device=device).nearest_distances(
            candidates01.float().reshape(len(candidates01), -1), 2)
        nearest, second = distances[:, 0].numpy(), distances[:, 1].numpy()
        ratio = np.where(nearest == 0, 0.0, nearest / np.maximum(second, 1e-12))  # as GuRatio.memorized
        return -ratio, -GuRatio.threshold


@hookimpl
def register_rankers(register):
    register("clique", Clique, aliases=("generate-and-filter",))
    register("denoise-loss", DenoiseLoss, aliases=("loss",))
    register("base-gu", BaseGu)
