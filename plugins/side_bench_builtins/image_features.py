"""Learned feature extractors from local files: ``sscd`` (TorchScript) and ``timm`` (a backbone).

Both load only the file the user names; nothing is downloaded. The weights' sha256 and the
exact input transform go into ``identity``, which is recorded with every result row.
timm is an optional extra (``pip install "side-bench[timm]"``), imported only when a ``timm``
component is built.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from side_bench.plugin_api import BenchError, hookimpl, one_line, resolve_device, sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# method.md section 3: the SIDE paper's SSCD bands, read from its Table 1.
SSCD_BANDS = {"low": (0.5, 0.6), "mid": (0.6, 0.7), "high": (0.7, 1.0)}



def weights_file(path: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not path or not file.is_file():
        raise BenchError(f"features {what!r}: weights file {str(file) if path else '(none given)'} not found")
    return file.resolve()



def to_three_channels(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's Resize(size) on tensors: the short side to ``size``, bilinear, antialiased."""
    height, width = images.shape[-2:]
    if min(height, width) == size:
        return images
    if height <= width:
        new = (size, int(size * width / height))
    else:
        new = (int(size * height / width), size)
    return F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=True)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


class SSCD:
    """SSCD copy-detection descriptors (Pizzi et al. 2022) from the TorchScript file SSCD ships
    (e.g. ``sscd_disc_mixup.torchscript.pt``), with SSCD's recommended transform pinned:
    greyscale repeated to 3 channels, Resize(288) on the short side, ImageNet normalization.
    Cosine similarity; the SIDE paper's bands by default."""

    similarity = "cosine"
    default_bands = SSCD_BANDS

    @dataclass
    class Settings:
        path: str  # the TorchScript file
        resize: int = 288  # short side, as SSCD's README recommends for sscd_disc_mixup
        batch_size: int = 64
        device: str = "auto"  # where embedding runs: auto (cuda when visible), cpu, cuda

        def validate(self, where: str) -> None:
            if self.resize < 8 or self.batch_size < 1:
                raise BenchError(f"{where}: resize and batch_size: expected positive sizes (resize >= 8)")

    def __init__(self, settings: SSCD.Settings):
        self.settings = settings
        self.file = weights_file(settings.path, "sscd")
        self.device = resolve_device(settings.device, "features 'sscd': device", allow_auto=True)
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated in torch, but it is SSCD's format
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                self.model = torch.jit.load(str(self.file), map_location="cpu").eval().to(self.device)
        except (RuntimeError, ValueError, OSError) as error:
            raise BenchError(f"{self.file}: not a TorchScript model ({one_line(error)})") from error
        self.identity = {
            "extractor": "sscd", "variant": self.file.name, "weights_sha256": sha256_file(self.file),
            "transform": f"greyscale to 3 channels; Resize({settings.resize}) short side, bilinear, antialias; "
                         f"normalize mean {list(IMAGENET_MEAN)} std {list(IMAGENET_STD)}",
        }

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        with torch.inference_mode():
            for start in range(0, len(images), self.settings.batch_size):
                batch = to_three_channels(images[start : start + self.settings.batch_size].float()).to(self.device)
                batch = normalize(resize_short_side(batch, self.settings.resize), IMAGENET_MEAN, IMAGENET_STD)
                output = self.model(batch)
                if output.ndim != 2 or len(output) != len(batch):
                    raise BenchError(f"{self.file}: expected descriptors of shape (N, D), got {tuple(output.shape)}")
                parts.append(output.float().cpu())
        return torch.cat(parts)


def load_state_dict(file: Path) -> dict:
    """safetensors, or a .pth/.pt/.bin opened with weights_only=True (a nested 'state_dict',
    'model' or 'state_dict_ema' entry is unwrapped)."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise BenchError(f"{file}: not a safetensors file or a weights-only torch checkpoint "
                         f"({one_line(error)})") from error
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{file}: expected a dict of tensors (a state dict)")
    return state


class Timm:
    """Pooled features (``num_classes=0``) of a timm backbone with local weights: DINO,
    DINOv2, CLIP towers, ResNets... Images are resized to ``image_size`` square (bilinear,
    antialiased) and normalized; the defaults come from the architecture's pretrained config."""

    similarity = "cosine"
    default_bands = SSCD_BANDS  # a guess for other cosine spaces: give bands in the suite

    @dataclass
    class Settings:
        architecture: str  # a timm model name, e.g. "vit_small_patch14_dinov2", "resnet50"
        weights: str  # a .safetensors file, or a .pth loaded with weights_only=True
        image_size: int = 0  # 0: the architecture's input size
        mean: list[float] = field(default_factory=list)  # empty: the architecture's
        std: list[float] = field(default_factory=list)
        batch_size: int = 64
        device: str = "auto"

        def validate(self, where: str) -> None:
            if self.image_size < 0 or self.batch_size < 1:
                raise BenchError(f"{where}: image_size and batch_size: expected positive values (0: default size)")
            if len(self.mean) not in (0, 3) or len(self.std) not in (0, 3):
                raise BenchError(f"{where}: mean and std: expected 3 values each (or none for the defaults)")

    def __init__(self, settings: Timm.Settings):
        self.settings = settings
        try:
            import timm
        except ImportError as error:
            raise BenchError(f"features 'timm': timm is not installed ({one_line(error)}); "
                             f"pip install 'side-bench[timm]'") from error
        file = weights_file(settings.weights, "timm")
        try:
            model = timm.create_model(settings.architecture, pretrained=False, num_classes=0)
        except Exception as error:  # timm raises RuntimeError for unknown names
            raise BenchError(f"features 'timm': architecture {settings.architecture!r}: {one_line(error)}") from error
        state = load_state_dict(file)
        head = model.pretrained_cfg.get("classifier") or ""
        heads = (head,) if isinstance(head, str) else tuple(head)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches raise even when not strict
            raise BenchError(f"{file}: does not fit {settings.architecture!r} ({one_line(error)})") from error
        unexpected = [k for k in result.unexpected_keys if not any(h and k.startswith(h + ".") for h in heads)]
        if result.missing_keys or unexpected:
            missing = ", ".join(result.missing_keys[:3]) or "none"
            raise BenchError(f"{file}: does not fit {settings.architecture!r} (missing {missing}; "
                             f"unexpected {', '.join(unexpected[:3]) or 'none'})")
        config = model.pretrained_cfg
        self.image_size = settings.image_size or int(config.get("input_size", (3, 224, 224))[-1])
        self.mean = tuple(settings.mean) or tuple(config.get("mean", IMAGENET_MEAN))
        self.std = tuple(settings.std) or tuple(config.get("std", IMAGENET_STD))
        self.device = resolve_device(settings.device, "features 'timm': device", allow_auto=True)
        self.model = model.eval().to(self.device)
        self.file = file
        self.identity = {
            "extractor": "timm", "variant": settings.architecture, "weights": file.name,
            "weights_sha256": sha256_file(file), "timm": timm.__version__,
            "transform": f"greyscale to 3 channels; resize to {self.image_size}x{self.image_size}, bilinear, "
                         f"antialias; normalize mean {list(self.mean)} std {list(self.std)}; pooled (num_classes=0)",
        }

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        parts = []
        size = (self.image_size, self.image_size)
        with torch.inference_mode():
            for start in range(0, len(images), self.settings.batch_size):
                batch = to_three_channels(images[start : start + self.settings.batch_size].float()).to(self.device)
                if tuple(batch.shape[-2:]) != size:
                    batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
                parts.append(self.model(normalize(batch, self.mean, self.std)).float().cpu())
        return torch.cat(parts)


@hookimpl
def register_features(register):
    register("sscd", SSCD)
    register("timm", Timm)
