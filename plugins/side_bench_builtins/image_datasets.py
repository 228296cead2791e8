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

from side_bench.plugin_api import (
    BenchError,
    DataSplit,
    added_setting,
    derive_seed,
    hookimpl,
    one_line,
    sha256_file,
)
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
        self.image_shape = (3, settings.image_size, settings.image_size)
        self.heldout_size = settings.heldout
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

# Files named in error messages at most (the rest are counted): a message stays one line.
NAMED_AT_MOST = 5
# (path, size, mtime_ns, crop, image_size, mode) of every file that decoded in this process: a
# suite validated twice (the CLI, then run_suite) reads its images for the check once.
_DECODED: set[tuple] = set()


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def images_in(folder: Path, recursive: bool) -> list[Path]:
    """PNG/JPEG files in ``folder`` (and its subfolders when ``recursive``), hidden ones left out, sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and _visible(p, folder))


def folder_images(folder: Path, what: str) -> tuple[list[Path], list[int] | None, list[str]]:
    """(files, labels or None, class names) of a folder: images at its top level (no labels), or
    in class subfolders (``folder/cat/*.png``: labels 0..K-1 in name order); not both."""
    top = images_in(folder, recursive=False)
    classes = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    classes = [d for d in classes if images_in(d, recursive=True)]
    if top and classes:
        raise BenchError(f"{what}: {folder} holds images both at the top level and in class subfolders "
                         f"({classes[0].name}/...); expected one or the other")
    if classes:
        files = [f for d in classes for f in images_in(d, recursive=True)]
        labels = [i for i, d in enumerate(classes) for _ in images_in(d, recursive=True)]
        return files, labels, [d.name for d in classes]
    if not top:
        raise BenchError(f"{what}: {folder} holds no PNG or JPEG images (at the top level or in class subfolders)")
    return top, None, []


def listed_images(list_file: Path, what: str) -> list[Path]:
    """The images a text file lists, one path a line (absolute, or relative to the file's folder;
    blank lines and lines starting with '#' skipped); every one must exist, none twice."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"{what}: {list_file}: cannot read the list of images ({one_line(error)})") from error
    files, seen = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = (path if path.is_absolute() else list_file.parent / path).resolve()
        if not path.is_file():
            raise BenchError(f"{what}: {list_file}: line {number}: {path}: image file not found")
        if path in seen:
            raise BenchError(f"{what}: {list_file}: line {number}: {path} is listed twice (first on line {seen[path]})")
        seen[path] = number
        files.append(path)
    if not files:
        raise BenchError(f"{what}: {list_file}: lists no images (expected one path a line)")
    return files


def check_decodes(paths: list[Path], crop_size: int, image_size: int, mode: str, what: str) -> None:
    """Decode every file as ``load`` will (a truncated or unreadable image fails here, before
    any cell runs); one error naming the bad files (the first few, and how many in all)."""
    todo = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError as error:
            raise BenchError(f"{what}: {path}: image file not found ({one_line(error)})") from error
        key = (str(path), stat.st_size, stat.st_mtime_ns, crop_size, image_size, mode)
        if key not in _DECODED:
            todo.append((path, key))
    if not todo:
        return

    def attempt(item):
        path, key = item
        try:
            read_image(path, crop_size, image_size, mode)
        except BenchError as error:
            return str(error)
        _DECODED.add(key)
        return None

    workers = min(16, os.cpu_count() or 1, len(todo))
    with ThreadPoolExecutor(workers) as pool:
        failures = [message for message in pool.map(attempt, todo, chunksize=64) if message]
    if failures:
        more = f"; and {len(failures) - NAMED_AT_MOST} more" if len(failures) > NAMED_AT_MOST else ""
        raise BenchError(f"{what}: {len(failures)} of {len(paths)} images cannot be read: "
                         + "; ".join(failures[:NAMED_AT_MOST]) + more)


class ImageFolder:
    """PNG/JPEG images on the user's disk, in one of two ways.

    **Named sets** (``train`` and ``heldout``, each a folder or a text file listing images):
    ``train`` is exactly the model's training set and ``heldout`` images it never saw. The
    scale is the training set's size (the only scale this data set takes), every training
    image is scored against, and the null baseline is exactly the held-out images. An image
    in both (the same file contents) is refused. This is how a model trained elsewhere is
    audited (``side-bench audit``).

    **One folder** (``root``, ``heldout`` a count): for benchmark suites across scales. A
    seed-fixed permutation of the folder's images holds the first ``heldout`` out and takes
    the next ``scale`` as the training set (smaller scales nest in larger ones, held-out
    images are never in any), as for ``digits``: the model must be trained by side-bench on
    those subsets, not elsewhere on the whole folder.

    Either way, images at the top of a folder have no labels; in class subfolders
    (``cat/*.jpg``, ``dog/*.png``) the subfolder names, sorted, are the labels 0..K-1 (of the
    held-out set, only the images are used).
    """

    @dataclass
    class Settings:
        root: str = ""  # one folder; default $SIDE_BENCH_DATA_ROOT (side-bench run --data-root)
        image_size: int = 64
        crop: bool = True  # centre-crop the largest square before resizing (False: squash)
        channels: int = 3  # 3: RGB, 1: greyscale
        # one folder: how many of root's images are held out; with train: the held-out images
        # (a folder or a text file listing them)
        heldout: int | str = 100
        # the model's training images: a folder or a text file listing them ("": one folder, root)
        train: str = added_setting("")

        def validate(self, where: str) -> None:
            if not 4 <= self.image_size <= 1024:
                raise BenchError(f"{where}: image_size: expected 4..1024, got {self.image_size}")
            if self.channels not in (1, 3):
                raise BenchError(f"{where}: channels: expected 1 or 3, got {self.channels}")
            if self.train and not isinstance(self.heldout, str):
                raise BenchError(f"{where}: heldout: with train, expected the held-out images (a folder or a "
                                 f"text file listing them), got the count {self.heldout!r}")
            if isinstance(self.heldout, str) and not self.train:
                raise BenchError(f"{where}: heldout: a folder or list of held-out images ({self.heldout!r}) "
                                 "goes with train (the model's training images); without train, heldout is "
                                 "how many of root's images to hold out")
            if isinstance(self.heldout, str) and not self.heldout.strip():
                raise BenchError(f"{where}: heldout: expected a folder or a text file listing images, got ''")
            if isinstance(self.heldout, int) and self.heldout < 1:
                raise BenchError(f"{where}: heldout: expected a positive integer, got {self.heldout}")

    def __init__(self, settings: ImageFolder.Settings):
        settings.validate("dataset 'image-folder'")
        self.mode = "L" if settings.channels == 1 else "RGB"
        self.image_shape = (settings.channels, settings.image_size, settings.image_size)
        if settings.train:
            self._named_sets(settings)
        else:
            self._one_folder(settings)

    # -- named training and held-out sets --------------------------------------------------

    def _named_sets(self, settings: ImageFolder.Settings) -> None:
        base = None
        if settings.root or os.environ.get(DATA_ROOT_ENV):  # relative paths are read from the data root
            base = resolve_root(settings.root, "image-folder")
        self.settings = dataclasses.replace(settings, root=str(base) if base else "")
        self.root = base

        def where(value: str, key: str) -> Path:
            path = Path(value).expanduser()
            path = (path if path.is_absolute() else (base or Path.cwd()) / path).resolve()
            if not path.exists():
                raise BenchError(f"dataset 'image-folder': {key}: {path}: no such folder or file")
            return path

        self.train_path, self.heldout_path = where(settings.train, "train"), where(settings.heldout, "heldout")
        if self.train_path == self.heldout_path:
            raise BenchError(f"dataset 'image-folder': train and heldout are both {self.train_path}: the held-out "
                             "images must be ones the model never saw")
        self.files, labels, self.class_names = self._read_set(self.train_path, "train")
        self.heldout_files, _, _ = self._read_set(self.heldout_path, "heldout")
        self.labels = torch.tensor(labels) if labels is not None else None
        self.num_classes = len(self.class_names)
        train_sha = [sha256_file(f) for f in self.files]
        heldout_sha = [sha256_file(f) for f in self.heldout_files]
        first_train = dict(zip(reversed(train_sha), reversed(self.files), strict=True))
        shared = [(first_train[sha], f) for sha, f in zip(heldout_sha, self.heldout_files, strict=True)
                  if sha in first_train]
        if shared:
            train_file, heldout_file = shared[0]
            raise BenchError(f"dataset 'image-folder': train and heldout share {len(shared)} image(s) (the same file "
                             f"contents), e.g. {train_file} and {heldout_file}: a held-out image must be one the model "
                             "never saw (remove it from one of the sets)")
        self.max_scale = self.fixed_scale = len(self.files)
        self.heldout_size = len(self.heldout_files)
        # the sets' contents, not their paths: a copy elsewhere is the same data
        self.fingerprint = hashlib.sha256(repr(train_sha).encode()).hexdigest()[:16]
        self.heldout_fingerprint = hashlib.sha256(repr(heldout_sha).encode()).hexdigest()[:16]
        self.data_note = (f"training set: the {len(self.files)} images of train = {self.train_path} (the scale; every "
                          f"one is scored against); held-out: the {len(self.heldout_files)} images of heldout = "
                          f"{self.heldout_path} (the null baseline; never trained on)")

    @staticmethod
    def _read_set(path: Path, key: str) -> tuple[list[Path], list[int] | None, list[str]]:
        if path.is_dir():
            return folder_images(path, f"dataset 'image-folder': {key}")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise BenchError(f"dataset 'image-folder': {key}: {path} is an image; expected a folder of images or "
                             "a text file listing them")
        return listed_images(path, f"dataset 'image-folder': {key}"), None, []

    # -- one folder, split by seed ---------------------------------------------------------

    def _one_folder(self, settings: ImageFolder.Settings) -> None:
        root = resolve_root(settings.root, "image-folder")
        self.settings = dataclasses.replace(settings, root=str(root))
        self.root = root
        self.files, labels, self.class_names = folder_images(root, "dataset 'image-folder': root")
        self.labels = torch.tensor(labels) if labels is not None else None
        self.heldout_files = None
        if len(self.files) <= settings.heldout:
            raise BenchError(f"dataset 'image-folder': heldout: {settings.heldout} images are to be held out of the "
                             f"{len(self.files)} in root = {root}, leaving none to train on (the one-folder split "
                             "holds images out of root itself); lower heldout, or name the model's training and "
                             "held-out images with train = \"FOLDER\" and heldout = \"FOLDER\"")
        self.max_scale = len(self.files) - settings.heldout
        self.heldout_size = settings.heldout
        self.num_classes = len(self.class_names)
        listing = [(str(f.relative_to(root)), f.stat().st_size) for f in self.files]
        self.fingerprint = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
        self.data_note = (f"one folder, root = {root}, of {len(self.files)} images: per scale and seed a seed-fixed "
                          f"permutation holds the first {settings.heldout} out (the null baseline) and takes the next "
                          "SCALE as the training set, which side-bench trains the model on (for a model trained "
                          "elsewhere, name its images with train and heldout)")

    # -- what the core reads ---------------------------------------------------------------

    def check(self) -> None:
        """Every image a run will read decodes (before any cell; also under --dry-run)."""
        s = self.settings
        files = self.files + (self.heldout_files or [])
        check_decodes(files, 0 if s.crop else -1, s.image_size, self.mode, "dataset 'image-folder'")

    def _assignment(self, scale: int, seed: int) -> tuple[list[Path], list[Path], torch.Tensor | None]:
        """(training files, held-out files, training labels) of a scale and seed."""
        s = self.settings
        if self.heldout_files is not None:
            if scale != len(self.files):
                raise BenchError(f"dataset 'image-folder': scale {scale}: with train, the scale is the training "
                                 f"set's size, {len(self.files)}")
            return list(self.files), list(self.heldout_files), self.labels
        train, held = split_by_seed(len(self.files), s.heldout, scale, seed, "image-folder")
        return ([self.files[i] for i in train.tolist()], [self.files[i] for i in held.tolist()],
                self.labels[train] if self.labels is not None else None)

    def split_files(self, scale: int, seed: int) -> dict[str, list[str]]:
        """Which files are the training set and which are held out at this scale and seed."""
        train, held, _ = self._assignment(scale, seed)
        return {"train": [str(f) for f in train], "heldout": [str(f) for f in held]}

    def load(self, scale: int, seed: int) -> DataSplit:
        s = self.settings
        train_files, heldout_files, labels = self._assignment(scale, seed)

        def read(paths):
            return read_images(paths, 0 if s.crop else -1, s.image_size, self.mode)

        if self.heldout_files is not None:
            identity = {"dataset": "image-folder", "train_files": self.fingerprint,
                        "heldout_files": self.heldout_fingerprint, "classes": self.class_names, "scale": scale,
                        "seed": seed, "image_size": s.image_size, "crop": s.crop, "channels": s.channels}
        else:  # as it always was (it keys cached models): ``train`` is "" here, so left out
            identity = {"dataset": "image-folder", "files": self.fingerprint, "classes": self.class_names,
                        "scale": scale, "seed": seed,
                        **{k: v for k, v in dataclasses.asdict(s).items() if k not in ("root", "train")}}
        return DataSplit(train=read(train_files), train_labels=labels, heldout=read(heldout_files),
                         num_classes=self.num_classes, identity=identity)


@hookimpl
def register_datasets(register):
    register("celeba", CelebA)
    register("image-folder", ImageFolder)
