"""Target models. ``bench-unet``: a diffusers UNet2DModel trained here, cached by config hash."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import diffusers
import torch
from diffusers import DDPMScheduler, UNet2DModel

from side_bench.plugin_api import (
    BenchError,
    DataSplit,
    Labels,
    RunContext,
    TargetModel,
    cache_lock,
    canonical_hash,
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
        # A fine-tuned target (empty: trained from scratch on the scale's images): a base
        # pre-trained on the data set's reserve (``DataSplit.reserve``: images outside every
        # scale and the held-out set), then fully fine-tuned on the scale's images. Keys:
        # base_images (1000), base_steps (``steps``), steps (fine-tuning steps, ``steps``),
        # learning_rate (fine-tuning, ``learning_rate``). See FINETUNE_KEYS.
        finetune: dict = field(default_factory=dict)

        def validate(self, where: str) -> None:
            if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
                raise BenchError(f"{where}: block_out_channels: expected a non-empty list of multiples "
                                 f"of norm_num_groups ({self.norm_num_groups})")
            for key in ("steps", "batch_size", "num_train_timesteps"):
                if getattr(self, key) < 1:
                    raise BenchError(f"{where}: {key}: expected a positive integer")
            if not 0 <= self.ema_decay < 1:
                raise BenchError(f"{where}: ema_decay: expected a value in [0, 1)")
            unknown = sorted(set(self.finetune) - set(FINETUNE_KEYS))
            if unknown:
                raise BenchError(f"{where}: finetune: unknown key {unknown[0]!r} (expected {', '.join(FINETUNE_KEYS)})")
            for key, value in self.finetune.items():
                kind = float if key == "learning_rate" else int
                if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
                    raise BenchError(f"{where}: finetune.{key}: expected a positive {kind.__name__}, got {value!r}")

        def finetune_plan(self) -> dict:
            """The fine-tuning table with its defaults filled in."""
            return {"base_images": 1000, "base_steps": self.steps, "steps": self.steps,
                    "learning_rate": self.learning_rate, **self.finetune}

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
        if self.settings.finetune:
            return self._prepare_finetuned(data, labels, cache_key, ctx)
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

    def load_cached(self, folder: Path, data: DataSplit, labels: Labels | None, cache_key: str,
                    ctx: RunContext) -> TargetModel:
        """The target saved in ``folder`` (a cache entry, or its copy in a shared-targets pack,
        its files already checked against their sha256), never trained here (hookspecs.Model)."""
        where = f"model 'bench-unet' ({folder})"
        if self.settings.finetune:  # its base and reserve images live in other entries
            raise BenchError(f"{where}: a fine-tuned target cannot be loaded from one entry (not in packs yet)")
        try:
            unet, record = self._load(Path(folder))
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise BenchError(f"{where}: cannot load the saved UNet ({' '.join(str(error).split())[:200]})") from error
        image_shape = tuple(data.train.shape[1:])
        made = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        if made != image_shape:
            raise BenchError(f"{where}: the UNet makes images of shape {made}, the data set gives {image_shape}")
        num_classes = labels.num_classes if labels is not None else 0
        if int(record.get("num_classes", 0)) != num_classes:
            raise BenchError(f"{where}: trained with {record.get('num_classes')} classes, the condition "
                             f"gives {num_classes}")
        scheduler = DDPMScheduler(num_train_timesteps=self.settings.num_train_timesteps,
                                  beta_schedule=self.settings.beta_schedule)
        return TargetModel(unet=unet.to(ctx.device).eval(), scheduler_config=dict(scheduler.config),
                           num_classes=num_classes, trained_with=record["trained_with"], image_shape=image_shape,
                           identity={"cache_key": cache_key, "model": "bench-unet"})

    def _prepare_finetuned(self, data: DataSplit, labels: Labels | None, cache_key: str,
                           ctx: RunContext) -> TargetModel:
        """The base (pre-trained on the reserve, cached by a key without the scale, so once per
        suite and seed) and the target fine-tuned from it on the scale's images; the fine-tuned
        model's cache key is the runner's key with the base's key, so a changed base retrains it."""
        plan = self.settings.finetune_plan()
        if labels is not None:
            raise BenchError("model 'bench-unet': finetune: only unconditional targets are fine-tuned "
                             f"(condition 'none'); this one is trained with {labels.kind!r} labels")
        if data.reserve is None:
            raise BenchError(f"model 'bench-unet': finetune: dataset {data.identity.get('dataset')!r} offers no "
                             "reserve of images outside the scales and the held-out set (DataSplit.reserve)")
        reserve = data.reserve(plan["base_images"])
        image_shape = tuple(data.train.shape[1:])
        scheduler = DDPMScheduler(num_train_timesteps=self.settings.num_train_timesteps,
                                  beta_schedule=self.settings.beta_schedule)
        architecture = {k: v for k, v in asdict(self.settings).items() if k not in ("finetune", "steps", "learning_rate")}
        base_key = canonical_hash({
            "base_of_finetune": reserve.identity, "model": architecture, "steps": plan["base_steps"],
            "learning_rate": self.settings.learning_rate, "seed": ctx.seed, "device": ctx.device.type,
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__}})
        models = Path(ctx.cache_dir) / "models"

        def pretrain():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(ctx.seed, "unet-init"))
                unet = self.build_unet(image_shape, 0)
            return train_denoiser(unet, scheduler, reserve.train, None, steps=plan["base_steps"],
                                  batch_size=self.settings.batch_size, learning_rate=self.settings.learning_rate,
                                  ema_decay=self.settings.ema_decay, seed=ctx.seed, device=ctx.device,
                                  progress=ctx.progress)

        base = self._cached(models / base_key, scheduler, pretrain, {
            "trained_with": "none", "num_classes": 0, "role": "base of a fine-tuned target",
            "settings": asdict(self.settings), "data": reserve.identity, "n_train": len(reserve.train)}, ctx)
        key = finetuned_key(cache_key, base_key)

        def finetune():
            # full fine-tuning from the base's (EMA) weights; its own batches (seed "finetune")
            start = copy.deepcopy(base).requires_grad_(True)  # the EMA copy is frozen
            return train_denoiser(start, scheduler, data.train, None, steps=plan["steps"],
                                  batch_size=self.settings.batch_size, learning_rate=plan["learning_rate"],
                                  ema_decay=self.settings.ema_decay, seed=derive_seed(ctx.seed, "finetune"),
                                  device=ctx.device, progress=ctx.progress)

        unet = self._cached(models / key, scheduler, finetune, {
            "trained_with": "none", "num_classes": 0, "role": "fine-tuned", "base_key": base_key,
            "settings": asdict(self.settings), "data": data.identity, "n_train": len(data.train)}, ctx)
        return TargetModel(unet=unet.eval(), scheduler_config=dict(scheduler.config), num_classes=0,
                           trained_with="none", image_shape=image_shape,
                           identity={"cache_key": key, "model": "bench-unet", "base_key": base_key,
                                     "finetune": plan},
                           base_unet=base.eval(), base_images=reserve.train, finetune_size=len(data.train))

    def _cached(self, folder: Path, scheduler, build, record: dict, ctx: RunContext):
        """The UNet cached in ``folder``, else ``build()`` saved there (under the entry's lock)."""
        with cache_lock(folder):
            cached = read_cache_entry(folder, self._load, "model")
            if cached is not None:
                return cached[0].to(ctx.device)
            unet = build()
            self._save(folder, unet, scheduler, record)
            return unet

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


FINETUNE_KEYS = ("base_images", "base_steps", "steps", "learning_rate")


def finetuned_key(cache_key: str, base_key: str) -> str:
    """A fine-tuned target's cache key: the runner's key (data, model settings) and its base's."""
    return canonical_hash({"finetuned": cache_key, "base": base_key})


@hookimpl
def register_models(register):
    register("bench-unet", BenchUNet)
