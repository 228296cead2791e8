"""Data sets of image files on the user's disk: ``celeba`` (a local CelebA copy) and ``image-folder``.

Nothing is downloaded. The root defaults to ``$SIDE_BENCH_DATA_ROOT``, which
``side-bench run --data-root DIR`` sets for the process. Annotation files and the list of
image files are read when the component is built (so a suite with a missing or malformed
file is refused before anything runs); images are decoded in ``load``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from side_bench.plugin_api import BenchError, DataSplit, derive_seed, hookimpl, one_line
from side_bench_builtins.datasets import split_by_seed

DATA_ROOT_ENV = "SIDE_BENCH_DATA_ROOT"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CELEBA_FILES = ("identity_CelebA.txt", "list_eval_partition.txt", "list_attr_celeba.txt")
# Images per partition of list_eval_partition.txt (0 train, 1 valid, 2 test; 202,599 in all),
# the sizes a plan uses when there is no data root to count them from.
CELEBA_PARTITION_SIZES = {0: 162_770, 1: 19_867, 2: 19_962}
# Set (to "1") by `side-bench run --dry-run` while it validates a suite: a data set with no root
# then declares its sizes instead of refusing, so the cost of a suite is known before the download.
PLAN_ONLY_ENV = "SIDE_BENCH_PLAN_ONLY"


def resolve_root(root: str, name: str) -> Path:
    """The setting ``root``, else ``$SIDE_BENCH_DATA_ROOT``; must be an existing folder."""
    root = root or os.environ.get(DATA_ROOT_ENV, "")
    if not root:
        raise BenchError(f"dataset {name!r}: no data root: pass --data-root DIR to 'side-bench run' "
                         f"(or set {DATA_ROOT_ENV}, or the dataset's 'root' setting)")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise BenchError(f"dataset {name!r}: data root {path} is not a folder")
    return path



def read_image(path: Path, crop_size: int, image_size: int, mode: str) -> np.ndarray:
    """Decode, centre-crop a ``crop_size`` square (0: the largest centred square; negative:
    no crop), resize
    (PIL bilinear, antialiased when shrinking) -> uint8 (C, image_size, image_size)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()  # a truncated file fails here, not later
            image = image.convert(mode)
    except FileNotFoundError as error:
        raise BenchError(f"{path}: image file not found") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BenchError(f"{path}: not a readable image ({one_line(error)})") from error
    width, height = image.size
    if crop_size >= 0:  # negative: no crop, the whole image is squashed to a square
        crop = crop_size or min(width, height)
        if crop > width or crop > height:
            raise BenchError(f"{path}: image is {width}x{height}, smaller than crop_size {crop}")
        left, top = round((width - crop) / 2), round((height - crop) / 2)
        image = image.crop((left, top, left + crop, top + crop))
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_images(paths: list[Path], crop_size: int, image_size: int, mode: str = "RGB") -> torch.Tensor:
    """Many files -> float32 (N, C, H, W) in [-1, 1]; decoded on threads (PIL frees the GIL)."""
    if not paths:
        return torch.empty(0, 1 if mode == "L" else 3, image_size, image_size)
    workers = min(16, os.cpu_count() or 1, len(paths))
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda p: read_image(p, crop_size, image_size, mode), paths, chunksize=64))
    return torch.from_numpy(np.stack(arrays)).float().div_(127.5).sub_(1.0)


def _check_common(where: str, image_size: int, heldout: int) -> None:
    if not 4 <= image_size <= 1024:
        raise BenchError(f"{where}: image_size: expected 4..1024, got {image_size}")
    if heldout < 1:
        raise BenchError(f"{where}: heldout: expected a positive integer, got {heldout}")


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------


def _read_text(path: Path) -> tuple[str, str]:
    """(text, sha256) of an annotation file, or a one-line error naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise BenchError(f"{path}: file not found (the CelebA root must hold img_align_celeba/, "
                         f"{', '.join(CELEBA_FILES)})") from error
    except OSError as error:
        raise BenchError(f"{path}: cannot read ({one_line(error)})") from error
    try:
        return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    except UnicodeDecodeError as error:
        raise BenchError(f"{path}: not a text file ({one_line(error)})") from error


def _read_pairs(path: Path, expected: str, allowed: set[int] | None = None) -> tuple[dict[str, int], str]:
    """Lines ``<image>.jpg <integer>`` (identity_CelebA.txt, list_eval_partition.txt)."""
    text, digest = _read_text(path)
    pairs: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 2:
                raise ValueError
            value = int(parts[1])
        except ValueError:
            raise BenchError(f"{path}: line {number}: expected '{expected}', got {line.strip()[:60]!r}") from None
        if allowed is not None and value not in allowed:
            raise BenchError(f"{path}: line {number}: expected '{expected}', got {line.strip()[:60]!r}")
        pairs[parts[0]] = value
    if not pairs:
        raise BenchError(f"{path}: no lines of the form '{expected}'")
    return pairs, digest


def _read_attributes(path: Path, attribute: str) -> tuple[dict[str, int], str]:
    """list_attr_celeba.txt: a count line, a line of 40 attribute names, then
    ``<image>.jpg`` and one of -1/1 per attribute. Returns image -> 0/1 for ``attribute``."""
    text, digest = _read_text(path)
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise BenchError(f"{path}: expected a line with the number of images, then a line of attribute names")
    names = lines[1].split()
    if attribute not in names:
        raise BenchError(f"{path}: no attribute {attribute!r} in its header (has: {', '.join(names)})")
    column = names.index(attribute) + 1
    values: dict[str, int] = {}
    for number, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or parts[column] not in ("1", "-1"):
            raise BenchError(f"{path}: line {number}: expected '<image>.jpg' and {len(names)} values of "
                             f"-1 or 1, got {line.strip()[:60]!r}")
        values[parts[0]] = int(parts[column] == "1")
    if len(values) != int(lines[0].strip()):
        raise BenchError(f"{path}: its first line says {lines[0].strip()} images, it lists {len(values)}")
    return values, digest


class CelebA:
    """A local CelebA copy in torchvision's layout: ``img_align_celeba/*.jpg``,
    ``identity_CelebA.txt``, ``list_eval_partition.txt`` and ``list_attr_celeba.txt``.

    The training pool is the images of ``train_partitions`` (0 train, 1 valid, 2 test in
    list_eval_partition.txt), optionally only those of the ``top_identities`` most frequent
    identities; a scale is the first ``scale`` images of a seed-fixed permutation of the pool
    (smaller scales nest in larger ones). Held-out images come from ``heldout_partition``
    (-1: from the pool itself, disjoint from every scale). Labels are the identities of the
    training subset remapped to 0..K-1 in identity order (or, with ``label`` an attribute
    name, that attribute as 0/1).
    """

    channels = 3  # RGB: what a plan sizes pixel features by

    @dataclass
    class Settings:
        root: str = ""  # the CelebA folder; default $SIDE_BENCH_DATA_ROOT (side-bench run --data-root)
        image_size: int = 64
        crop_size: int = 178  # centred square crop of the 178x218 aligned images; 0: the largest square
        label: str = "identity"  # or one of the 40 attribute names of list_attr_celeba.txt
        top_identities: int = 0  # keep only the K most frequent identities of the pool; 0: all
        train_partitions: list[int] = field(default_factory=lambda: [0, 1])
        heldout_partition: int = 2  # -1: hold images out of the training pool instead
        heldout: int = 1000

        def validate(self, where: str) -> None:
            _check_common(where, self.image_size, self.heldout)
            if self.crop_size < 0:
                raise BenchError(f"{where}: crop_size: expected 0 (largest square) or a positive size")
            if self.top_identities < 0:
                raise BenchError(f"{where}: top_identities: expected 0 (all) or a positive count")
            if not self.train_partitions or any(p not in (0, 1, 2) for p in self.train_partitions):
                raise BenchError(f"{where}: train_partitions: expected a non-empty list of 0, 1, 2")
            if self.heldout_partition not in (-1, 0, 1, 2) or self.heldout_partition in self.train_partitions:
                raise BenchError(f"{where}: heldout_partition: expected -1 or a partition (0, 1, 2) "
                                 f"not in train_partitions {self.train_partitions}")

    def __init__(self, settings: CelebA.Settings):
        settings.validate("dataset 'celeba'")
        if not (settings.root or os.environ.get(DATA_ROOT_ENV)) and os.environ.get(PLAN_ONLY_ENV) == "1":
            self._declare(settings)
            return
        root = resolve_root(settings.root, "celeba")
        self.settings = dataclasses.replace(settings, root=str(root))
        self.root = root
        self.images_dir = root / "img_align_celeba"
        partitions, partition_sha = _read_pairs(root / "list_eval_partition.txt", "<image>.jpg <0, 1 or 2>", {0, 1, 2})
        identities, identity_sha = _read_pairs(root / "identity_CelebA.txt", "<image>.jpg <identity>")
        digests = {"list_eval_partition.txt": partition_sha, "identity_CelebA.txt": identity_sha}
        self.attributes = None
        if settings.label != "identity":
            self.attributes, digests["list_attr_celeba.txt"] = _read_attributes(
                root / "list_attr_celeba.txt", settings.label)
        pool = sorted(name for name, part in partitions.items() if part in settings.train_partitions)
        for name in pool:
            if name not in identities:
                raise BenchError(f"{root / 'identity_CelebA.txt'}: no identity for {name} "
                                 f"(listed in list_eval_partition.txt)")
        if settings.top_identities:
            counts: dict[int, int] = {}
            for name in pool:
                counts[identities[name]] = counts.get(identities[name], 0) + 1
            ranked = sorted(counts, key=lambda identity: (-counts[identity], identity))
            keep = set(ranked[: settings.top_identities])
            pool = [name for name in pool if identities[name] in keep]
        if settings.heldout_partition >= 0:
            heldout_pool = sorted(n for n, p in partitions.items() if p == settings.heldout_partition)
            if len(heldout_pool) < settings.heldout:
                raise BenchError(f"dataset 'celeba': heldout: {settings.heldout} images asked, partition "
                                 f"{settings.heldout_partition} of list_eval_partition.txt holds {len(heldout_pool)}")
            self.max_scale = len(pool)
        else:
            heldout_pool = []
            if len(pool) <= settings.heldout:
                raise BenchError(f"dataset 'celeba': heldout: {settings.heldout} images asked, the pool holds {len(pool)}")
            self.max_scale = len(pool) - settings.heldout
        if self.attributes is not None:
            for name in pool + heldout_pool:
                if name not in self.attributes:
                    raise BenchError(f"{root / 'list_attr_celeba.txt'}: no attributes for {name}")
        if not self.images_dir.is_dir():
            raise BenchError(f"{self.images_dir}: folder not found (expected the aligned CelebA JPEGs)")
        present = set(os.listdir(self.images_dir))
        missing = [name for name in pool + heldout_pool if name not in present]
        if missing:
            raise BenchError(f"{self.images_dir}: {len(missing)} image(s) listed in list_eval_partition.txt "
                             f"are missing, e.g. {missing[0]}")
        self.pool, self.heldout_pool, self.identities = pool, heldout_pool, identities
        self.num_classes = 2 if self.attributes is not None else len({identities[n] for n in pool})
        self.fingerprint = hashlib.sha256(repr(sorted(digests.items())).encode()).hexdigest()[:16]

    def _declare(self, settings: CelebA.Settings) -> None:
        """A plan without the files: the partition sizes CelebA is published with, nothing read.
        ``top_identities`` keeps an unknown number of images: no size is declared then."""
        self.settings, self.root, self.declared = settings, None, True
        self.pool = self.heldout_pool = self.identities = self.attributes = None
        self.num_classes, self.fingerprint = None, "declared"
        pool = sum(CELEBA_PARTITION_SIZES[p] for p in settings.train_partitions)
        if settings.heldout_partition >= 0:
            held = CELEBA_PARTITION_SIZES[settings.heldout_partition]
            if held < settings.heldout:
                raise BenchError(f"dataset 'celeba': heldout: {settings.heldout} images asked, partition "
                                 f"{settings.heldout_partition} of CelebA holds {held}")
        else:
            pool -= settings.heldout
        self.max_scale = None if settings.top_identities else pool

    def _indices(self, scale: int, seed: int) -> tuple[list[str], list[str]]:
        s = self.settings
        if s.heldout_partition < 0:
            train, held = split_by_seed(len(self.pool), s.heldout, scale, seed, "celeba")
            return [self.pool[i] for i in train], [self.pool[i] for i in held]
        if scale > self.max_scale:
            raise BenchError(f"dataset 'celeba': scale {scale} is larger than the {self.max_scale} images "
                             f"of its training pool")
        order = torch.randperm(len(self.pool), generator=torch.Generator().manual_seed(
            derive_seed(seed, "celeba", "split")))
        held = torch.randperm(len(self.heldout_pool), generator=torch.Generator().manual_seed(
            derive_seed(seed, "celeba", "heldout")))
        return ([self.pool[i] for i in order[:scale].tolist()],
                [self.heldout_pool[i] for i in held[: s.heldout].tolist()])

    def load(self, scale: int, seed: int) -> DataSplit:
        s = self.settings
        if self.pool is None:  # declared for a plan: the images need the root after all
            resolve_root(s.root, "celeba")
        train_names, heldout_names = self._indices(scale, seed)
        crop = s.crop_size
        train = read_images([self.images_dir / n for n in train_names], crop, s.image_size)
        heldout = read_images([self.images_dir / n for n in heldout_names], crop, s.image_size)
        if self.attributes is not None:
            labels = torch.tensor([self.attributes[n] for n in train_names], dtype=torch.long)
            num_classes = 2
        else:
            raw = [self.identities[n] for n in train_names]
            remap = {identity: index for index, identity in enumerate(sorted(set(raw)))}
            labels = torch.tensor([remap[i] for i in raw], dtype=torch.long)
            num_classes = len(remap)
        identity = {"dataset": "celeba", "annotations": self.fingerprint, "scale": scale, "seed": seed,
                    **{k: v for k, v in dataclasses.asdict(s).items() if k != "root"},
                    "transform": f"centre crop {crop or 'largest square'}, PIL bilinear resize to {s.image_size}"}
        return DataSplit(train=train, train_labels=labels, heldout=heldout, num_classes=num_classes,
                         identity=identity)


# --------------------------------------------------------------------------------------------
# A folder of images
# --------------------------------------------------------------------------------------------


class ImageFolder:
    """Any folder of PNG/JPEG images. With class subfolders (``root/cat/*.jpg``,
    ``root/dog/*.png``) the subfolder names, sorted, are the labels 0..K-1; with images at the
    top level only, the data set has no labels. Subsets and the held-out split are seed-fixed
    permutations as for ``digits`` (held-out images are never in any scale's training set)."""

    @dataclass
    class Settings:
        root: str = ""  # default $SIDE_BENCH_DATA_ROOT (side-bench run --data-root)
        image_size: int = 64
        crop: bool = True  # centre-crop the largest square before resizing (False: squash)
        channels: int = 3  # 3: RGB, 1: greyscale
        heldout: int = 100

        def validate(self, where: str) -> None:
            _check_common(where, self.image_size, self.heldout)
            if self.channels not in (1, 3):
                raise BenchError(f"{where}: channels: expected 1 or 3, got {self.channels}")

    def __init__(self, settings: ImageFolder.Settings):
        settings.validate("dataset 'image-folder'")
        root = resolve_root(settings.root, "image-folder")
        self.settings = dataclasses.replace(settings, root=str(root))

        def images_in(folder: Path, recursive: bool) -> list[Path]:
            found = folder.rglob("*") if recursive else folder.iterdir()
            return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                          and not any(part.startswith(".") for part in p.relative_to(root).parts))

        top = images_in(root, recursive=False)
        classes = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        classes = [d for d in classes if images_in(d, recursive=True)]
        if top and classes:
            raise BenchError(f"{root}: holds images both at the top level and in class subfolders "
                             f"({classes[0].name}/...); expected one or the other")
        if classes:
            self.files = [f for d in classes for f in images_in(d, recursive=True)]
            self.labels = torch.tensor([i for i, d in enumerate(classes) for _ in images_in(d, True)])
            self.class_names = [d.name for d in classes]
        else:
            self.files, self.labels, self.class_names = top, None, []
        if not self.files:
            raise BenchError(f"{root}: no PNG or JPEG images (at the top level or in class subfolders)")
        if len(self.files) <= settings.heldout:
            raise BenchError(f"{root}: holds {len(self.files)} images, not more than heldout = {settings.heldout}")
        self.max_scale = len(self.files) - settings.heldout
        self.num_classes = len(self.class_names)
        listing = [(str(f.relative_to(root)), f.stat().st_size) for f in self.files]
        self.fingerprint = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]

    def load(self, scale: int, seed: int) -> DataSplit:
        s = self.settings
        train, held = split_by_seed(len(self.files), s.heldout, scale, seed, "image-folder")
        mode = "L" if s.channels == 1 else "RGB"

        def read(indices):
            return read_images([self.files[i] for i in indices.tolist()], 0 if s.crop else -1, s.image_size, mode)

        identity = {"dataset": "image-folder", "files": self.fingerprint, "classes": self.class_names,
                    "scale": scale, "seed": seed,
                    **{k: v for k, v in dataclasses.asdict(s).items() if k != "root"}}
        return DataSplit(train=read(train), train_labels=self.labels[train] if self.labels is not None else None,
                         heldout=read(held), num_classes=self.num_classes, identity=identity)


@hookimpl
def register_datasets(register):
    register("celeba", CelebA)
    register("image-folder", ImageFolder)
