"""Data sets. ``digits``: scikit-learn's 1,797 labelled 8x8 digits, shipped inside the package."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from side_bench.plugin_api import BenchError, DataSplit, derive_seed, hookimpl


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < images.shape[-1])


def split_by_seed(n_total: int, heldout: int, scale: int, seed: int, name: str):
    """A seed-fixed permutation: the first ``heldout`` indices are held out, the training
    subset of a scale is the next ``scale`` (so smaller scales nest inside larger ones)."""
    if scale > n_total - heldout:
        raise BenchError(
            f"dataset {name!r}: scale {scale} is larger than the {n_total - heldout} images "
            f"left beside the {heldout} held out"
        )
    generator = torch.Generator().manual_seed(derive_seed(seed, name, "split"))
    order = torch.randperm(n_total, generator=generator)
    return order[heldout : heldout + scale], order[:heldout]


def package_source(indices: torch.Tensor) -> dict:
    """Where digits' training images come from: their rows of ``load_digits()`` (a shared
    target pack records these indices, not the images)."""
    import importlib.metadata

    return {"package": "scikit-learn", "version": importlib.metadata.version("scikit-learn"),
            "data": "sklearn.datasets.load_digits", "indices": [int(i) for i in indices.tolist()]}


class Digits:
    """scikit-learn's digits (8x8, 16 grey levels, 10 classes), resized, in [-1, 1]."""

    total = 1797

    @dataclass
    class Settings:
        image_size: int = 8
        heldout: int = 256  # disjoint from every scale's training set; the null baseline

        def validate(self, where: str) -> None:
            if not 4 <= self.image_size <= 256:
                raise BenchError(f"{where}: image_size: expected 4..256, got {self.image_size}")
            if not 1 <= self.heldout < Digits.total:
                raise BenchError(f"{where}: heldout: expected 1..{Digits.total - 1}, got {self.heldout}")

    def __init__(self, settings: Digits.Settings):
        self.settings = settings
        self.max_scale = self.total - settings.heldout
        self.num_classes = 10
        self.image_shape = (1, settings.image_size, settings.image_size)
        self.heldout_size = settings.heldout

    def load(self, scale: int, seed: int) -> DataSplit:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0
        images = resize(images, self.settings.image_size).clamp(0, 1) * 2 - 1
        labels = torch.from_numpy(digits.target).long()
        train, heldout = split_by_seed(len(images), self.settings.heldout, scale, seed, "digits")
        return DataSplit(
            train=images[train], train_labels=labels[train], heldout=images[heldout],
            num_classes=self.num_classes,
            identity={"dataset": "digits", "image_size": self.settings.image_size,
                      "heldout": self.settings.heldout, "scale": scale, "seed": seed},
            reserve=functools.partial(self.reserve, scale=scale, seed=seed),
            train_source=package_source(train),
        )

    def reserve(self, n: int, *, scale: int, seed: int) -> DataSplit:
        """``n`` images from the far end of the split's permutation: the scales grow from the
        front (after the held-out images), so these are outside every scale's training subset up
        to ``total - heldout - n`` and the same for every such scale (a base model pre-trained
        on them is trained once per seed, whatever the scale)."""
        room = self.total - self.settings.heldout - n
        if n < 1 or scale > room:
            raise BenchError(f"dataset 'digits': a reserve of {n} images leaves {room} beside the "
                             f"{self.settings.heldout} held out, fewer than scale {scale} (lower base_images or heldout)")
        full = self.load(self.total - self.settings.heldout, seed)  # the whole permutation after the held-out
        return DataSplit(
            train=full.train[-n:], train_labels=full.train_labels[-n:], heldout=full.train[:0],
            num_classes=self.num_classes,
            identity={"dataset": "digits", "image_size": self.settings.image_size,
                      "heldout": self.settings.heldout, "reserve": n, "seed": seed},
        )


@hookimpl
def register_datasets(register):
    register("digits", Digits)
