"""Reading images made elsewhere: folders of PNG/JPEG files or .npy arrays (N, C, H, W) in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from side_bench.errors import BenchError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def as_unit_tensor(array, what: str) -> torch.Tensor:
    """Check an array of images (N, C, H, W) with values in [0, 1]; return float32 tensor."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    if tensor.ndim != 4:
        raise BenchError(f"{what}: expected an array of shape (N, C, H, W), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise BenchError(f"{what}: holds no images")
    if tensor.shape[1] not in (1, 3):
        raise BenchError(f"{what}: expected 1 or 3 channels in axis 1 (N, C, H, W), got {tensor.shape[1]}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise BenchError(f"{what}: holds NaN or infinite values")
    if tensor.min() < 0 or tensor.max() > 1:
        raise BenchError(f"{what}: expected values in [0, 1], got [{tensor.min():.3g}, {tensor.max():.3g}]")
    return tensor


def read_images(path: str | Path, what: str) -> torch.Tensor:
    """A folder of PNG/JPEG images or one .npy file -> (N, C, H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise BenchError(f"{what}: {path} does not exist")
    if path.is_file():
        if path.suffix != ".npy":
            raise BenchError(f"{what}: {path}: expected a folder of images or a .npy file")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise BenchError(f"{what}: {path}: not a readable .npy file ({error})") from error
        return as_unit_tensor(array, f"{what} {path}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BenchError(f"{what}: {path}: no PNG or JPEG images in the folder")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                mode = "L" if image.mode in ("L", "1", "I", "I;16") else "RGB"
                array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as error:
            raise BenchError(f"{what}: {file}: not a readable image ({error})") from error
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        if images and array.shape != images[0].shape:
            raise BenchError(f"{what}: {file}: size {array.shape} differs from {files[0].name}'s {images[0].shape}")
        images.append(array)
    return torch.from_numpy(np.stack(images))
