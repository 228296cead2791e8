"""Feature extractors. ``pixel``: the image itself, with method.md's pixel similarity."""

from __future__ import annotations

import torch

from side_bench.plugin_api import hookimpl

PIXEL_BANDS = {"low": (0.85, 0.90), "mid": (0.90, 0.95), "high": (0.95, 1.0)}


class PixelFeatures:
    """gamma(a, b) = 1 - sqrt(mean((a - b)^2)) on images in [0, 1] (l2 similarity)."""

    similarity = "l2"
    default_bands = PIXEL_BANDS
    identity = {"extractor": "pixel", "transform": "images in [0, 1], flattened"}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1).float()


@hookimpl
def register_features(register):
    register("pixel", PixelFeatures)
