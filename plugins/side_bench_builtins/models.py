"""Target models. ``bench-unet``: a diffusers UNet2DModel trained here, cached by config hash."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from side_bench.plugin_api import (
    BenchError,
    DataSplit,
    Labels,
    RunContext,
    TargetModel,
    cache_lock,
    derive_seed,
    hookimpl,
    read_cache_entry,
    train_denoiser,
    write_cache_entry,
)

RECORD = "side_bench_model.json"


class BenchUNet:
    """Trains a (class-conditional when labels are given) UNet with the DDPM objective and EMA.

    Saved as diffusers saves: ``config.json`` + ``diffusion_pytorch_model.safetensors`` and
    ``scheduler_config.json``, under ``<cache>/models/<cache key>/`` with a manifest of their
    hashes; reloaded when present and whole, retrained when damaged (``results/cache.py``).
    """

    @dataclass
    class Settings:
        block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
        layers_per_block: int = 1
        attention: bool = False  # self-attention in the lowest-resolution blocks
        norm_num_groups: int = 8
        steps: int = 2000
        batch_size: int = 64
        learning_rate: float = 1e-3
        ema_decay: float = 0.999
        num_train_timesteps: int = 1000
        beta_schedule: str = "linear"

        def validate(self, where: str) -> None:
            if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
                raise BenchError(f"{where}: block_out_channels: expected a non-empty list of multiples "
                                 f"of norm_num_groups ({self.norm_num_groups})")
            for key in ("steps", "batch_size", "num_train_timesteps"):
                if getattr(self, key) < 1:
                    raise BenchError(f"{where}: {key}: expected a positive integer")
            if not 0 <= self.ema_decay < 1:
                raise BenchError(f"{where}: ema_decay: expected a value in [0, 1)")

    def __init__(self, settings: BenchUNet.Settings):
        self.settings = settings

    def build_unet(self, image_shape, num_classes: int) -> UNet2DModel:
        s = self.settings
        levels = len(s.block_out_channels)
        down = ["DownBlock2D"] * levels
        if s.attention:
            down[-1] = "AttnDownBlock2D"
        up = [name.replace("Down", "Up") for name in reversed(down)]
        channels, size, _ = image_shape
        return UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(s.block_out_channels), layers_per_block=s.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=s.norm_num_groups,
            num_class_embeds=num_classes or None,
        )

    def prepare(self, data: DataSplit, labels: Labels | None, cache_key: str, ctx: RunContext) -> TargetModel:
        image_shape = tuple(data.train.shape[1:])
        num_classes = labels.num_classes if labels is not None else 0
        trained_with = labels.kind if labels is not None else "none"
        folder = Path(ctx.cache_dir) / "models" / cache_key
        scheduler = DDPMScheduler(num_train_timesteps=self.settings.num_train_timesteps,
                                  beta_schedule=self.settings.beta_schedule)
        with cache_lock(folder):  # another process sharing the run may be training this model
            cached = read_cache_entry(folder, self._load, "model")  # checked against its manifest first
            if cached is not None:
                unet, record = cached
                unet = unet.to(ctx.device)
                trained_with = record["trained_with"]
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(ctx.seed, "unet-init"))
                    unet = self.build_unet(image_shape, num_classes)
                unet = train_denoiser(
                    unet, scheduler, data.train, labels.labels if labels is not None else None,
                    steps=self.settings.steps, batch_size=self.settings.batch_size,
                    learning_rate=self.settings.learning_rate, ema_decay=self.settings.ema_decay,
                    seed=ctx.seed, device=ctx.device, progress=ctx.progress,
                )
                self._save(folder, unet, scheduler, {
                    "trained_with": trained_with, "num_classes": num_classes, "settings": asdict(self.settings),
                    "data": data.identity, "n_train": len(data.train),
                })
        return TargetModel(unet=unet.eval(), scheduler_config=dict(scheduler.config), num_classes=num_classes,
                           trained_with=trained_with, image_shape=image_shape,
                           identity={"cache_key": cache_key, "model": "bench-unet"})

    @staticmethod
    def _load(folder: Path):
        record = json.loads((folder / RECORD).read_text())
        return UNet2DModel.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False), record

    @staticmethod
    def _save(folder: Path, unet, scheduler, record: dict) -> None:
        """Write into a temporary folder, then the manifest, then rename: a killed run never
        leaves half a model, and a model damaged later is found by its hash."""
        with write_cache_entry(folder, "model") as temporary:
            unet.save_pretrained(temporary, safe_serialization=True)
            scheduler.save_pretrained(temporary)
            (temporary / RECORD).write_text(json.dumps(record, indent=2, default=str))


@hookimpl
def register_models(register):
    register("bench-unet", BenchUNet)
