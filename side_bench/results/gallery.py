"""Galleries: the top-k candidates by similarity beside their nearest training images.

One PNG per cell: pairs side by side (candidate left, nearest training image right), the
similarity written under each pair. Written atomically like every other result file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from side_bench.results.store import atomic_write

TILE = 64  # pixels per image in the grid (nearest-neighbour upscaling keeps pixels visible)
CAPTION = 14
PAIRS_PER_ROW = 4


def _tile(image01: torch.Tensor) -> Image.Image:
    array = (image01.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    return Image.fromarray(array).convert("RGB").resize((TILE, TILE), Image.NEAREST)


def gallery_png(candidates01: torch.Tensor, train01: torch.Tensor, similarity: torch.Tensor,
                nearest: torch.Tensor, k: int) -> bytes:
    """A PNG of the k candidates most similar to a training image, with those images."""
    order = torch.argsort(similarity, descending=True)[:k]
    rows = -(-len(order) // PAIRS_PER_ROW)
    pair_width, pair_height = 2 * TILE + 4, TILE + CAPTION
    canvas = Image.new("RGB", (PAIRS_PER_ROW * (pair_width + 8), rows * (pair_height + 6)), "white")
    draw = ImageDraw.Draw(canvas)
    for slot, index in enumerate(order.tolist()):
        x = (slot % PAIRS_PER_ROW) * (pair_width + 8)
        y = (slot // PAIRS_PER_ROW) * (pair_height + 6)
        canvas.paste(_tile(candidates01[index]), (x, y))
        canvas.paste(_tile(train01[int(nearest[index])]), (x + TILE + 4, y))
        draw.text((x + 2, y + TILE + 1), f"{float(similarity[index]):.3f}", fill="black")
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def write_gallery(path: Path, candidates01, train01, similarity, nearest, k: int) -> None:
    atomic_write(path, gallery_png(candidates01, train01, similarity, nearest, k))
