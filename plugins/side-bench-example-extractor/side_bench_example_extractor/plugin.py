"""Registers the ``low-temperature`` extractor through side-bench's hook ``register_extractors``.

Written against ``side_bench.plugin_api`` alone (plus torch and diffusers, which the target
model is made of).

Low-temperature sampling: DDIM (eta = 0) is a deterministic map from the initial noise x_T to
an image; starting it from ``temperature * x_T`` with temperature < 1 starts closer to the
centre of the Gaussian, where the probability mass of the prior is densest, and pulls the
samples toward the modes of the model's distribution (less diversity, more typical images:
the "reduced temperature" sampling of Glow, Kingma & Dhariwal 2018, applied to the DDIM
ODE). Memorized training images are modes of an overfitted model, so an attacker may expect
more copies at a lower temperature; the benchmark measures whether it gets them.

Candidate ``i`` starts from exactly the noise of the built-in ``sample`` extractor's
candidate ``i`` (``initial_noise(seed, "sample", ...)``: one generator per sample), scaled;
on a class-conditional target it gets the same uniformly drawn label. So the two attacks
differ only by the temperature, candidate for candidate, ``temperature = 1`` gives exactly
``sample``'s candidates, and no candidate depends on the batch size.

Why not ``ddim_sample``: it draws its initial noise itself and has no way to scale it, so the
loop (one scheduler step per timestep, as in ``side_bench.sampling.diffusion.ddim_sample``) is
written out here; it is short enough to read and change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from side_bench.plugin_api import (
    BenchError,
    Candidates,
    LabelledImages,
    RunContext,
    TargetModel,
    hookimpl,
    initial_noise,
)


class LowTemperature:
    """DDIM from the ``sample`` extractor's per-sample initial noise, scaled by ``temperature``."""

    description = "DDIM from initial noise scaled by a temperature < 1 (mode-seeking sampling)"

    @dataclass
    class Settings:
        temperature: float = 0.7  # the initial noise is multiplied by it; 1.0 = plain sampling
        ddim_steps: int = 50
        batch_size: int = 256  # how many samples go through the UNet at once; no effect on the result

        def validate(self, where: str) -> None:
            if not 0 < self.temperature <= 1:
                raise BenchError(f"{where}: temperature: expected a value in (0, 1], got {self.temperature}")
            if self.ddim_steps < 1 or self.batch_size < 1:
                raise BenchError(f"{where}: ddim_steps and batch_size: expected positive integers")

    def __init__(self, settings: LowTemperature.Settings):
        self.settings = settings  # its full contents enter the cell's hash and every row

    @torch.no_grad()
    def extract(self, target: TargetModel, labelled: LabelledImages | None, n: int,
                ctx: RunContext) -> Candidates:
        settings = self.settings
        scheduler = DDIMScheduler.from_config(target.scheduler_config)
        scheduler.set_timesteps(settings.ddim_steps)
        unet = target.unet.to(ctx.device).eval()
        images, labels = [], []
        for start in range(0, n, settings.batch_size):
            indices = range(start, min(n, start + settings.batch_size))
            # the noise (and label) of sample i comes from its own generator (ctx.seed, "sample", i)
            noise, drawn = initial_noise(ctx.seed, "sample", indices, target.image_shape, target.num_classes)
            x = (settings.temperature * noise).to(ctx.device)
            class_labels = drawn.to(ctx.device) if drawn is not None else None
            for step, t in enumerate(scheduler.timesteps):
                eps = unet(x, t, class_labels=class_labels).sample.float()
                x = scheduler.step(eps, t, x, eta=0.0).prev_sample
                ctx.progress("sampling", start * settings.ddim_steps + (step + 1) * len(indices),
                             n * settings.ddim_steps)
            images.append(x.clamp(-1, 1).cpu())
            if drawn is not None:
                labels.append(drawn)
        return Candidates(images=torch.cat(images), targets=torch.cat(labels) if labels else None,
                          diagnostics={"temperature": settings.temperature})


@hookimpl
def register_extractors(register):
    register("low-temperature", LowTemperature, aliases=("low-temp",))
