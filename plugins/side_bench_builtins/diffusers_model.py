"""Target models trained elsewhere: ``diffusers``, a local diffusers UNet2DModel folder.

Two layouts are read, never downloaded (``local_files_only``):

- flat, as google/ddpm-cifar10-32: ``config.json``, ``diffusion_pytorch_model.safetensors``
  (or ``.bin``) and ``scheduler_config.json`` in one folder;
- a pipeline saved with ``save_pretrained``: ``model_index.json``, ``unet/`` (config and
  weights) and ``scheduler/scheduler_config.json``.

Safetensors weights are preferred; a ``.bin`` is opened only with ``torch.load(weights_only=True)``
(a pickle that needs more than tensors is refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from side_bench.plugin_api import (
    BenchError,
    DataSplit,
    Labels,
    RunContext,
    TargetModel,
    hookimpl,
    read_json,
    sha256_file,
)

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
LABEL_KINDS = ("informative", "random")


def check_weights_file(path: Path) -> None:
    """A damaged checkpoint the user gave is a bad input, not a cache to rebuild: refuse it with
    one line naming the file, at validation (exit code 2), before any cell runs.

    safetensors: the header must parse and its tensors cover the file exactly, which catches a
    truncated or padded file and a garbled header without reading the weights (safe_open maps
    the file). A ``.bin`` zip archive (torch's format since 1.6) has a CRC per member: checked
    in full, so a flipped bit is caught too. A flip inside safetensors data has no checksum to
    find it; non-finite weights are refused when the model is loaded (``load_unet``).
    """
    import zipfile

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as error:
            raise BenchError(f"{path}: not a readable safetensors file, truncated or damaged "
                             f"({' '.join(str(error).split())[:200]})") from error
    else:
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                return  # a pre-1.6 pickle: no checksum; torch.load refuses it if it is cut short
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:  # a cut-off archive lacks its directory
            raise BenchError(f"{path}: a truncated or damaged checkpoint archive ({error})") from error
        if bad is not None:
            raise BenchError(f"{path}: a damaged checkpoint archive ({bad} fails its CRC check)")


def _read_object(path: Path, what: str) -> dict:
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise BenchError(f"{path}: expected a JSON object ({what})")
    return value


class Folder:
    """One local diffusers UNet2DModel folder (flat or pipeline layout), checked when read:
    its config, scheduler config and weights file (``check_weights_file``)."""

    def __init__(self, path: str, setting: str):
        root = Path(path).expanduser()
        self.root = root
        if not root.is_dir():
            raise BenchError(f"model 'diffusers': {setting} {root} is not a folder")
        if (root / "model_index.json").exists():
            index = _read_object(root / "model_index.json", "a diffusers pipeline index")
            if "unet" not in index:
                raise BenchError(f"{root / 'model_index.json'}: names no 'unet' (expected a UNet2DModel pipeline)")
            self.layout, self.unet_dir = "pipeline", root / "unet"
            scheduler_file = root / "scheduler" / "scheduler_config.json"
        elif (root / "config.json").exists():
            self.layout, self.unet_dir = "flat", root
            scheduler_file = root / "scheduler_config.json"
        else:
            raise BenchError(f"{root}: not a diffusers model folder (expected config.json and "
                             f"scheduler_config.json, or model_index.json with unet/ and scheduler/)")
        self.config = _read_object(self.unet_dir / "config.json", "the UNet2DModel config")
        if self.config.get("_class_name", "UNet2DModel") != "UNet2DModel":
            raise BenchError(f"{self.unet_dir / 'config.json'}: _class_name is {self.config['_class_name']!r}, "
                             f"expected 'UNet2DModel' (pixel-space DDPM UNets only)")
        if self.config.get("class_embed_type") is not None:
            raise BenchError(f"{self.unet_dir / 'config.json'}: class_embed_type "
                             f"{self.config['class_embed_type']!r} takes continuous class embeddings; "
                             f"side-bench conditions give integer labels (num_class_embeds)")
        self.scheduler_config = _read_object(scheduler_file, "the noise scheduler config")
        for key in ("num_train_timesteps",):
            if key not in self.scheduler_config:
                raise BenchError(f"{scheduler_file}: missing key {key!r}")
        found = [self.unet_dir / name for name in WEIGHTS if (self.unet_dir / name).is_file()]
        if not found:
            raise BenchError(f"{self.unet_dir}: no weights (expected {' or '.join(WEIGHTS)})")
        self.weights = found[0]  # safetensors first
        check_weights_file(self.weights)
        self.num_classes = int(self.config.get("num_class_embeds") or 0)
        size = self.config.get("sample_size", 32)
        size = size[0] if isinstance(size, (list, tuple)) else size
        self.image_shape = (int(self.config.get("in_channels", 3)), int(size), int(size))

    def load_unet(self):
        from diffusers import UNet2DModel

        if self.weights.suffix == ".bin":
            try:  # refuse a pickle that is more than tensors before diffusers opens it
                torch.load(self.weights, map_location="cpu", weights_only=True)
            except Exception as error:
                raise BenchError(f"{self.weights}: not loadable with weights_only=True "
                                 f"({' '.join(str(error).split())[:200]})") from error
        try:
            unet = UNet2DModel.from_pretrained(
                self.unet_dir, local_files_only=True, use_safetensors=self.weights.suffix == ".safetensors",
                low_cpu_mem_usage=False,
            )
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise BenchError(f"{self.unet_dir}: cannot load the UNet ({' '.join(str(error).split())[:300]})") from error
        for name, parameter in unet.named_parameters():  # a flip in an exponent makes NaN or inf
            if not torch.isfinite(parameter).all():
                raise BenchError(f"{self.weights}: non-finite weights (NaN or inf) in {name}: a damaged checkpoint")
        return unet


def schedule(config: dict) -> dict:
    """The parts of a scheduler config that fix the noise schedule (base and fine-tune must agree)."""
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
    return {key: config.get(key) for key in keys}


class DiffusersModel:
    """A local diffusers UNet2DModel and its scheduler, attacked as it is (no training here).

    Whether it is class-conditional comes from the UNet config (``num_class_embeds``);
    ``trained_with`` says which labels a conditional model was trained with. The suite's
    dataset entry must describe the model's training set. Training labels from the suite's
    condition are refused for an unconditional model, and must have the model's class count
    and ``trained_with`` kind; the condition itself may refuse the target too (check_target).
    """

    @dataclass
    class Settings:
        path: str  # the folder (flat or pipeline layout)
        # for a fine-tuned model: the folder of the base it was fine-tuned from (same layouts),
        # loaded as TargetModel.base_unet (what finextract needs); "" for none
        base_path: str = ""
        trained_with: str = "informative"  # for a class-conditional model: "informative" or "random"

        def validate(self, where: str) -> None:
            if self.trained_with not in LABEL_KINDS:
                raise BenchError(f"{where}: trained_with: expected one of {', '.join(LABEL_KINDS)}, "
                                 f"got {self.trained_with!r}")

    def __init__(self, settings: DiffusersModel.Settings):
        self.settings = settings
        folder = Folder(settings.path, "path")
        self.folder = folder
        self.layout, self.unet_dir, self.config = folder.layout, folder.unet_dir, folder.config
        self.scheduler_config, self.weights = folder.scheduler_config, folder.weights
        self.num_classes, self.image_shape = folder.num_classes, folder.image_shape
        self.base = None
        if settings.base_path:
            # FineXtract's setting: the fine-tuned model (path) and the base it was tuned from
            self.base = Folder(settings.base_path, "base_path")
            where = f"model 'diffusers': base_path {self.base.root}"
            if self.base.image_shape != self.image_shape or self.base.num_classes != self.num_classes:
                raise BenchError(f"{where}: makes images of shape {self.base.image_shape} with "
                                 f"{self.base.num_classes} classes, the fine-tuned model {self.image_shape} with "
                                 f"{self.num_classes}: expected the base it was fine-tuned from")
            if schedule(self.base.scheduler_config) != schedule(self.scheduler_config):
                raise BenchError(f"{where}: its noise schedule differs from the fine-tuned model's "
                                 f"({schedule(self.base.scheduler_config)} vs {schedule(self.scheduler_config)})")

    def _check(self, data: DataSplit, labels: Labels | None) -> None:
        where = f"model 'diffusers' ({self.unet_dir})"
        if tuple(data.train.shape[1:]) != self.image_shape:
            raise BenchError(f"{where}: the model makes images of shape {self.image_shape}, the suite's "
                             f"dataset gives {tuple(data.train.shape[1:])}")
        if labels is not None and not self.num_classes:
            raise BenchError(f"{where}: the model is unconditional (no num_class_embeds in config.json) but "
                             f"the attack's condition gives {labels.kind} training labels")
        if labels is not None and labels.num_classes != self.num_classes:
            raise BenchError(f"{where}: the model has {self.num_classes} classes, the condition's "
                             f"{labels.kind} labels {labels.num_classes}")
        if labels is not None and labels.kind != self.settings.trained_with:
            raise BenchError(f"{where}: the model was trained with {self.settings.trained_with} labels "
                             f"(setting trained_with), the condition gives {labels.kind} labels")

    @property
    def trained_with(self) -> str:
        return self.settings.trained_with if self.num_classes else "none"

    def declared_target(self):
        """What the checkpoint was trained with, known from its config before any work, so that
        a suite pairing it with the wrong condition fails at validation (hookspecs.Model)."""
        from side_bench.plugin_api import TargetDeclaration

        return TargetDeclaration(trained_with=self.trained_with, num_classes=self.num_classes,
                                 image_shape=self.image_shape)

    def load_unet(self):
        return self.folder.load_unet()

    def prepare(self, data: DataSplit, labels: Labels | None, cache_key: str, ctx: RunContext) -> TargetModel:
        self._check(data, labels)
        unet = self.load_unet().to(ctx.device).eval()
        identity = {"model": "diffusers", "layout": self.layout, "weights": self.weights.name,
                    "weights_sha256": sha256_file(self.weights), "cache_key": cache_key}
        base_unet = finetune_size = None
        if self.base is not None:
            base_unet = self.base.load_unet().to(ctx.device).eval()
            # the base's weights are part of what is attacked: in the identity (and so in the
            # keys of the classifiers and pools built on this target)
            identity["base"] = {"layout": self.base.layout, "weights": self.base.weights.name,
                                "weights_sha256": sha256_file(self.base.weights)}
            # the suite's dataset describes the model's training set: here the fine-tuning set
            finetune_size = len(data.train)
        # the base's own training images are not known here: no base_images (no base-copies)
        return TargetModel(unet=unet, scheduler_config=dict(self.scheduler_config), num_classes=self.num_classes,
                           trained_with=self.trained_with,
                           image_shape=self.image_shape, identity=identity, base_unet=base_unet,
                           finetune_size=finetune_size)


@hookimpl
def register_models(register):
    register("diffusers", DiffusersModel)
