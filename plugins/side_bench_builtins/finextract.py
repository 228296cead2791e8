"""``finextract``: extraction from a fine-tuned model, guided away from its pre-trained base.

FineXtract (Wu, Zhang and Wu, "Revealing the Unseen: Guiding Personalized Diffusion Models to
Expose Training Data", ICML 2025; code Nicholas0228/FineXtract, ``contrasted_sample.py``)
samples with DDIM (50 steps) from the extrapolated noise prediction

    eps_hat(x_t) = eps_pre(x_t) + w * (eps_ft(x_t) - eps_pre(x_t)),

the fine-tuned model's shift away from the base, amplified by w (the demos use w = 3 to 5).
w = 1 is plain sampling of the fine-tuned model, w = 0 sampling of the base: both are computed
with one UNet alone, so they equal the ``sample`` extractor on that UNet bit for bit. The
update is the same diffusers DDIM step (eta = 0) as ``sample``, from the same per-sample
noise (purpose "sample"), so at equal seeds the candidates are paired with ``sample``'s.
Left out: the code's ``fix_term`` (an extra term from an empty prompt: these targets are
unconditional) and its optional dynamic thresholding (``dt``, off by default there too); the
paper's clustering of the generations into representatives is not built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from side_bench.plugin_api import BenchError, hookimpl, initial_noise

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FineXtract:
    """DDIM from eps_pre + w (eps_ft - eps_pre) on a fine-tuned target (``TargetModel.base_unet``)."""

    description = ("FineXtract: DDIM guided by the fine-tuned minus the pre-trained model, "
                   "eps_pre + w (eps_ft - eps_pre) (Wu et al. 2025)")
    threat_model = "white-box + base model"

    @dataclass
    class Settings:
        guidance_scale: float = 3.0  # w; 1 = plain sampling of the fine-tuned model, 0 = of the base
        ddim_steps: int = 50
        batch_size: int = 256
        precision: str = "fp32"  # UNet forward in fp32, bf16 or fp16 (autocast)

        def validate(self, where: str) -> None:
            if self.ddim_steps < 1 or self.batch_size < 1:
                raise BenchError(f"{where}: ddim_steps and batch_size: expected positive integers")
            if self.precision not in PRECISIONS:
                raise BenchError(f"{where}: precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def __init__(self, settings: FineXtract.Settings):
        self.settings = settings

    def extract(self, target, labelled, n, ctx):
        if target.base_unet is None:
            raise BenchError("extractor 'finextract': the target has no base model (TargetModel.base_unet); "
                             "use a fine-tuned target, e.g. bench-unet with finetune = { ... }")
        if target.num_classes:
            raise BenchError("extractor 'finextract': expected an unconditional fine-tuned target")
        images = finextract_sample(target.unet, target.base_unet, target, n, w=self.settings.guidance_scale,
                                   seed=ctx.seed, num_steps=self.settings.ddim_steps,
                                   batch_size=self.settings.batch_size, device=ctx.device,
                                   dtype=PRECISIONS[self.settings.precision], progress=ctx.progress)
        return images


def finextract_sample(finetuned, base, target, n: int, *, w: float, seed: int, num_steps: int, batch_size: int,
                      device: torch.device, dtype: torch.dtype = torch.float32,
                      progress=lambda *a: None) -> torch.Tensor:
    """n images in [-1, 1] (on the CPU); candidate i from the noise of (seed, "sample", i)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(target.scheduler_config)
    scheduler.set_timesteps(num_steps)
    # w = 1 and w = 0 need one UNet: the other's term has weight 0, and leaving it out keeps
    # the result exactly that UNet's (no rounding from eps_pre + 1 * (eps_ft - eps_pre))
    needs_ft, needs_pre = w != 0.0, w != 1.0
    finetuned = finetuned.to(device).eval() if needs_ft else None
    base = base.to(device).eval() if needs_pre else None
    outputs = []
    total = n * num_steps
    for start in range(0, n, batch_size):
        indices = range(start, min(n, start + batch_size))
        x, _ = initial_noise(seed, "sample", indices, target.image_shape, 0)
        x = x.to(device)
        for step, t in enumerate(scheduler.timesteps):
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                eps_ft = finetuned(x, t).sample.float() if needs_ft else None
                eps_pre = base(x, t).sample.float() if needs_pre else None
            if not needs_pre:
                eps = eps_ft
            elif not needs_ft:
                eps = eps_pre
            else:
                eps = eps_pre + w * (eps_ft - eps_pre)
            x = scheduler.step(eps, t, x, eta=0.0).prev_sample
            progress("sampling", start * num_steps + (step + 1) * len(indices), total)
        outputs.append(x.clamp(-1, 1).cpu())
    return torch.cat(outputs)


@hookimpl
def register_extractors(register):
    register("finextract", FineXtract, aliases=("fine-xtract",))
