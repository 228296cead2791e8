"""Shared targets: a run's trained target models as a pack another machine attacks as they are.

Training is not bit-identical across machines, so two labs that each retrain "the digits
targets" attack different models. A pack fixes them::

    PACK/pack.json                       format, side-bench version, the run it came from, and per
                                         model its target key and the sha256 of its target.json
    PACK/models/<model key>/target.json  the model's manifest: model (name, settings), dataset,
                                         scale, seed, canaries, label mode, data identity, the
                                         exact training subset, the sha256 and size of every file
    PACK/models/<model key>/...          the cache entry the run trained (for bench-unet: the
                                         diffusers config, weights and scheduler config, its record
                                         and cache manifest), copied byte for byte

The training subset is recorded without the images: per training image the sha256 of its
float32 bits as the model saw them (after resizing), their labels' sha256 and, for data that
ships inside a package (digits), each image's index into the package's data
(``DataSplit.train_source``). A user's own files (image-folder, celeba) are recorded by those
content hashes only.

``run --targets PACK`` looks each cell's target up by its *target key*: the hash of the data
identity, the condition's training key and the model's name and settings (``run/suite.py``'s
model cache key without device and library versions, which differ between machines). Before
any cell runs, every cell must find its model, every file must match its sha256, and the
training subset the suite draws must equal the recorded one (else the pack was made from other
data); a cell then loads the model with the model plugin's ``load_cached`` and never trains.
The pack's identity is the sha256 of ``pack.json`` (which names each target.json's sha256,
which names each file's): it enters the cells' config (so their hashes and run folder differ
from a run that trained its targets) and every row's ``target_model``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from side_bench.errors import BenchError
from side_bench.registry import Registry, load_registry, traits_of
from side_bench.results.cache import MANIFEST, entry_problem, read_manifest
from side_bench.results.records import read_cell_record, read_json
from side_bench.results.records import read_manifest as read_run_manifest
from side_bench.results.store import atomic_directory, atomic_write, default_cache_dir, sha256_file
from side_bench.run import canaries
from side_bench.run.suite import Cell, canonical_hash, cell_model

PACK_FILE = "pack.json"
TARGET_FILE = "target.json"
PACK_FORMAT = 1
PACK_KIND = "side-bench target pack"
KEY = re.compile(r"^[0-9a-f]{64}$")  # a model key: the only folder names a pack may use
LIBRARIES = ("torch", "diffusers")  # the versions in a model cache key (runner.CellRunner._target)


def side_bench_version() -> str:
    try:
        return importlib.metadata.version("side-bench")
    except importlib.metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


# -- what a cell trains ------------------------------------------------------------------------

def target_key(data_identity: dict, training_key: Any, spec: dict) -> str:
    """What a cell's target is looked up by in a pack: the model cache key without the device
    and library versions (the same target on any machine)."""
    return canonical_hash({"data": data_identity, "labels": training_key, "model": spec})


def model_key(data_identity: dict, training_key: Any, spec: dict, device_type: str, versions: dict) -> str:
    """The model cache key ``CellRunner._target`` computes for a cell (``versions``: the cell
    config's, of which torch and diffusers count)."""
    return canonical_hash({"data": data_identity, "labels": training_key, "model": spec, "device": device_type,
                           "versions": {k: versions.get(k) for k in LIBRARIES}})


def training_subset(split, labels) -> dict:
    """The exact training subset of a split, without its images: per image the sha256 of its
    float32 bits (``canaries.image_digest``), the training labels' sha256, and for packaged data
    each image's index into the package's data."""
    images = [canaries.image_digest(image) for image in split.train]
    subset: dict[str, Any] = {"images": len(images), "image_sha256": images, "sha256": canonical_hash(images),
                              "label_kind": labels.kind if labels is not None else "none",
                              "num_classes": labels.num_classes if labels is not None else 0,
                              "labels_sha256": (canonical_hash([int(v) for v in labels.labels.tolist()])
                                                if labels is not None else None)}
    if split.train_source is not None:
        subset["source"] = split.train_source
    return subset


def subset_difference(recorded: dict, drawn: dict) -> str | None:
    """How the training subset a suite draws differs from a recorded one (None: equal)."""
    if recorded.get("images") != drawn["images"]:
        return f"{recorded.get('images')} training images recorded, the suite draws {drawn['images']}"
    recorded_source, drawn_source = recorded.get("source"), drawn.get("source")
    if recorded_source is not None and drawn_source is not None and recorded_source.get("indices") != drawn_source.get("indices"):
        return f"other indices into {drawn_source.get('data')}"
    for number, (a, b) in enumerate(zip(recorded.get("image_sha256") or [], drawn["image_sha256"], strict=False)):
        if a != b:
            return f"training image {number} has other content (sha256 {b[:12]}, recorded {str(a)[:12]})"
    if recorded.get("sha256") != drawn["sha256"]:
        return "other image contents"
    for key in ("label_kind", "num_classes", "labels_sha256"):
        if recorded.get(key) != drawn[key]:
            return f"other training labels ({key}: {drawn[key]!r}, recorded {recorded.get(key)!r})"
    return None


@dataclass
class CellTarget:
    """What a cell's target model is trained on, computed without training."""

    split: Any  # DataSplit, canaries planted
    labels: Any  # Labels | None
    spec: dict  # {"name", "settings"}
    training_key: Any
    target_key: str
    model_key: str


class TargetPlanner:
    """Computes ``CellTarget``s from cell configs, loading each scale's data once. Nothing is
    written: canaries are planted as the runner plants them, their record is not saved."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._splits: dict[str, Any] = {}

    def split(self, config: dict):
        spec = canaries.spec_from_config(config)
        key = canonical_hash([config["dataset"], config["scale"], config["seed"], *([spec.as_config()] if spec else [])])
        if key not in self._splits:
            name = config["dataset"]["name"]
            dataset = self.registry.build("datasets", name, config["dataset"]["settings"])
            split = dataset.load(config["scale"], config["seed"])
            if spec is not None:
                split, _ = canaries.plant(dataset, split, spec, config["scale"], config["seed"], name)
            self._splits[key] = split
        return self._splits[key]

    def cell_target(self, config: dict) -> CellTarget:
        split = self.split(config)
        condition_spec = config["attack"]["condition"]
        condition = self.registry.build("conditions", condition_spec["name"], condition_spec["settings"])
        labels = condition.training_labels(split, config["seed"])
        spec = cell_model(config)
        training_key = condition.training_key()
        return CellTarget(split=split, labels=labels, spec=spec, training_key=training_key,
                          target_key=target_key(split.identity, training_key, spec),
                          model_key=model_key(split.identity, training_key, spec, config["device"], config["versions"]))


def _loader(registry: Registry, spec: dict, where: str):
    """The model component, which must be able to load a saved target (``load_cached``)."""
    model = registry.build("models", spec["name"], spec["settings"])
    if traits_of("models", model).load_cached is None:
        raise BenchError(f"{where}: model {spec['name']!r} has no load_cached (hookspecs.Model): its targets "
                         "cannot be exported to a pack or run from one")
    return model


def _who(config: dict) -> str:
    return f"{config['attack']['name']} @ scale {config['scale']} seed {config['seed']}"


# -- export ------------------------------------------------------------------------------------

def export_targets(run_dir: str | Path, out: str | Path, *, cache_dir: str | Path | None = None,
                   registry: Registry | None = None) -> pd.DataFrame:
    """Write the target models a run's finished cells used, from the cache, as a pack at ``out``.

    Returns one row per model: model_key, target_key, dataset, scale, seed, label_kind, images,
    files, bytes, cells; ``attrs["pack_sha256"]`` is the pack's identity. Every model's data is
    drawn again and must give the model key the run recorded (else the data changed since).
    ``out`` must not exist; the pack appears whole or not at all.
    """
    run_dir, out = Path(run_dir), Path(out)
    registry = registry or load_registry()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    manifest = read_run_manifest(run_dir)
    if manifest is None:
        raise BenchError(f"{run_dir}: no manifest.json (expected a run folder, results/<suite>/<run-id>)")
    if out.exists():
        raise BenchError(f"--out {out}: already exists (a pack is written to a new folder)")
    by_key: dict[str, list[dict]] = {}
    for cell in manifest.get("cells", []):
        record = read_cell_record(run_dir, cell["config_hash"])
        if not record or record.get("status") != "done" or not record.get("rows"):
            continue
        recorded_key = record["rows"][0].get("model_key")
        if not isinstance(recorded_key, str) or not KEY.match(recorded_key):
            raise BenchError(f"{run_dir}/cells/{cell['config_hash']}.json: its rows name no model_key")
        by_key.setdefault(recorded_key, []).append(record)
    if not by_key:
        raise BenchError(f"{run_dir}: no finished cells, so no target models to export")

    planner = TargetPlanner(registry)
    models, lines = {}, []
    for key, records in sorted(by_key.items()):
        config = records[0]["config"]
        where = f"{run_dir}/cells/{records[0]['config_hash']}.json ({_who(config)})"
        planned = planner.cell_target(config)
        _loader(registry, planned.spec, where)
        if planned.model_key != key:
            raise BenchError(f"{where}: its data and labels, drawn again, give model key {planned.model_key[:12]}, "
                             f"the run recorded {key[:12]}: the data changed since the run")
        entry = cache / "models" / key
        if not entry.is_dir():
            raise BenchError(f"{entry}: not in the cache: the target of {_who(config)} is exported from the "
                             "cache of the machine that ran it (--cache-dir; a fine-tuned target is cached "
                             "under another key and cannot be exported yet)")
        problem = entry_problem(entry)
        if problem is not None:
            raise BenchError(f"{problem} (a damaged cache entry: run the suite again to retrain it)")
        files = read_manifest(entry)["files"]
        target = {
            "format": PACK_FORMAT, "model_key": key, "target_key": planned.target_key,
            "model": planned.spec, "dataset": config["dataset"], "scale": config["scale"], "seed": config["seed"],
            "canaries": config.get("canaries"), "condition_key": planned.training_key,
            "data_identity": planned.split.identity,
            "training_subset": training_subset(planned.split, planned.labels),
            "files": files, "trained": {"device": config["device"], "versions": config["versions"]},
            "side_bench_version": side_bench_version(),
        }
        models[key] = (entry, target)
        lines.append({"model_key": key, "target_key": planned.target_key, "dataset": config["dataset"]["name"],
                      "scale": config["scale"], "seed": config["seed"],
                      "label_kind": target["training_subset"]["label_kind"],
                      "images": target["training_subset"]["images"], "files": len(files),
                      "bytes": sum(f["bytes"] for f in files.values()), "cells": len(records)})

    with atomic_directory(out, complete=PACK_FILE) as temporary:
        listed = {}
        for key, (entry, target) in models.items():
            folder = temporary / "models" / key
            for name, expected in target["files"].items():
                copy = folder / name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(entry / name, copy)
                if sha256_file(copy) != expected["sha256"]:  # changed while copying
                    raise BenchError(f"{entry / name}: changed while it was copied; export again")
            shutil.copyfile(entry / MANIFEST, folder / MANIFEST)
            text = json.dumps(target, indent=1, sort_keys=True) + "\n"
            atomic_write(folder / TARGET_FILE, text)
            listed[key] = {"target_key": target["target_key"], "scale": target["scale"], "seed": target["seed"],
                           "target_sha256": sha256_file(folder / TARGET_FILE)}
        pack = {"format": PACK_FORMAT, "kind": PACK_KIND, "side_bench_version": side_bench_version(),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "source": {"suite": manifest.get("suite"), "run_id": manifest.get("run_id"),
                           "git_commit": manifest.get("git_commit")},
                "models": listed}
        atomic_write(temporary / PACK_FILE, json.dumps(pack, indent=1, sort_keys=True) + "\n")
        _share(temporary)
    frame = pd.DataFrame(sorted(lines, key=lambda line: (line["scale"], line["seed"], line["model_key"])))
    frame.attrs["pack_sha256"] = sha256_file(out / PACK_FILE)
    return frame


def _share(folder: Path) -> None:
    """The modes of a folder made by mkdtemp/mkstemp (0700, 0600), as the umask gives new files:
    a pack is for others to read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


# -- reading a pack ----------------------------------------------------------------------------

@dataclass
class Pack:
    """A pack read and checked: ``sha256`` (of pack.json) is its identity in rows."""

    root: Path
    sha256: str
    manifest: dict
    targets: dict[str, dict] = field(default_factory=dict)  # model key -> its target.json
    by_target_key: dict[str, str] = field(default_factory=dict)  # target key -> model key

    def folder(self, key: str) -> Path:
        return self.root / "models" / key

    def check_files(self, key: str) -> None:
        """Every file of one model against the sha256 its target.json records."""
        folder = self.folder(key)
        for name, expected in sorted(self.targets[key]["files"].items()):
            path = folder / name
            if not path.is_file():
                raise BenchError(f"{path}: missing from the pack (its target.json lists it)")
            if path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
                raise BenchError(f"{path}: sha256 differs from the pack's target.json: the file was altered or damaged")

    def identity(self, key: str) -> dict:
        """A row's ``target_model`` for a target from this pack."""
        return {"key": key, "files": {n: f["sha256"] for n, f in sorted(self.targets[key]["files"].items())},
                "pack": self.sha256}


def _safe_file_name(name: Any) -> bool:
    return (isinstance(name, str) and bool(name) and not name.startswith("/") and "\\" not in name
            and all(part not in ("", ".", "..") for part in name.split("/")))


def read_pack(path: str | Path, check_files: bool = True) -> Pack:
    """A pack, its pack.json and every target.json checked (hashes chained from pack.json) and,
    with ``check_files``, every model file against its sha256; else BenchError naming the file."""
    root = Path(path)
    if not (root / PACK_FILE).is_file():
        raise BenchError(f"--targets {root}: no {PACK_FILE} (expected a folder made by 'side-bench targets export')")
    manifest = read_json(root / PACK_FILE, "a target pack's manifest")
    where = root / PACK_FILE
    if not isinstance(manifest, dict) or manifest.get("kind") != PACK_KIND or not isinstance(manifest.get("models"), dict):
        raise BenchError(f"{where}: not a side-bench target pack (expected kind {PACK_KIND!r} and a table of models)")
    if manifest.get("format") != PACK_FORMAT:
        raise BenchError(f"{where}: format {manifest.get('format')!r}, this side-bench reads format {PACK_FORMAT}")
    pack = Pack(root=root, sha256=sha256_file(where), manifest=manifest)
    for key, listed in sorted(manifest["models"].items()):
        if not KEY.match(str(key)) or not isinstance(listed, dict) or not isinstance(listed.get("target_sha256"), str):
            raise BenchError(f"{where}: models: {str(key)[:80]!r} is not a model key with its target.json's sha256")
        target_file = pack.folder(key) / TARGET_FILE
        if not target_file.is_file():
            raise BenchError(f"{target_file}: missing from the pack (pack.json lists model {key[:12]})")
        if sha256_file(target_file) != listed["target_sha256"]:
            raise BenchError(f"{target_file}: sha256 differs from the one pack.json records: the pack was altered")
        target = read_json(target_file, "a packed model's manifest")
        files = target.get("files") if isinstance(target, dict) else None
        if (not isinstance(files, dict) or not files or not all(
                _safe_file_name(n) and isinstance(f, dict) and isinstance(f.get("sha256"), str)
                and isinstance(f.get("bytes"), int) for n, f in files.items())
                or target.get("model_key") != key or not isinstance(target.get("target_key"), str)
                or not isinstance(target.get("training_subset"), dict)):
            raise BenchError(f"{target_file}: expected model_key {key[:12]}..., target_key, training_subset and "
                             "files (relative names, each with bytes and sha256)")
        if target["target_key"] in pack.by_target_key:
            raise BenchError(f"{target_file}: a second model for the same target key as "
                             f"{pack.by_target_key[target['target_key']][:12]} (one model per data, labels and settings)")
        pack.targets[key] = target
        pack.by_target_key[target["target_key"]] = key
    if not pack.targets:
        raise BenchError(f"{where}: holds no models")
    if check_files:
        for key in pack.targets:
            pack.check_files(key)
    return pack


def _holds(pack: Pack) -> str:
    return ", ".join(sorted({f"scale {t.get('scale')} seed {t.get('seed')}" for t in pack.targets.values()}))


def find_target(pack: Pack, planned: CellTarget, config: dict) -> str:
    """The model key of the pack's model for this cell, its training subset checked; else BenchError."""
    key = pack.by_target_key.get(planned.target_key)
    if key is None:
        raise BenchError(f"--targets {pack.root}: no target model for {_who(config)} ({config['dataset']['name']}, "
                         f"model {planned.spec['name']} with this suite's settings and labels); "
                         f"the pack holds {_holds(pack)}")
    difference = subset_difference(pack.targets[key]["training_subset"], training_subset(planned.split, planned.labels))
    if difference is not None:
        raise BenchError(f"{pack.folder(key) / TARGET_FILE}: the training subset of scale {config['scale']} seed "
                         f"{config['seed']} differs from the one this suite draws ({difference}): "
                         "the pack was made from other data")
    return key


def cells_for_pack(path: str | Path, cells: list[Cell], registry: Registry) -> list[Cell]:
    """Check a pack against a suite's cells before any runs (every cell finds its model, every
    file its sha256, every training subset its record) and return the cells with the pack in
    their config (``targets``: its sha256), so their hashes and run folder are their own."""
    pack = read_pack(path)
    planner = TargetPlanner(registry)
    for cell in cells:
        planned = planner.cell_target(cell.config)
        _loader(registry, planned.spec, f"--targets {pack.root}")
        find_target(pack, planned, cell.config)
    placed = []
    for cell in cells:
        config = {**cell.config, "targets": {"pack": pack.sha256}}
        placed.append(replace(cell, config=config, config_hash=canonical_hash(config)))
    return placed


def load_target(path: str | Path, registry: Registry, spec: dict, data, labels, training_key, config: dict, ctx):
    """A cell's target from the pack: found by its target key, its subset and files checked
    again (the cell may run in another process or on another machine), loaded by the model's
    ``load_cached``. Returns (TargetModel, the pack's model key, the row's ``target_model``)."""
    pack = read_pack(path, check_files=False)
    planned = CellTarget(split=data, labels=labels, spec=spec, training_key=training_key,
                         target_key=target_key(data.identity, training_key, spec), model_key="")
    key = find_target(pack, planned, config)
    pack.check_files(key)
    model = _loader(registry, spec, f"--targets {pack.root}")
    target = model.load_cached(pack.folder(key), data, labels, key, ctx)
    return target, key, pack.identity(key)


def cache_identity(cache_dir: str | Path, target, key: str) -> dict | None:
    """A row's ``target_model`` for a target trained or loaded here: the files of its cache
    entry (the key it was saved under, ``identity["cache_key"]``) with their sha256, else the
    weights file's sha256 a loaded model names (``identity["weights_sha256"]``); None when unknown."""
    identity = target.identity if isinstance(target.identity, dict) else {}
    entry_key = identity.get("cache_key", key)
    try:
        files = read_manifest(Path(cache_dir) / "models" / str(entry_key))["files"]
        return {"key": entry_key, "files": {name: f["sha256"] for name, f in sorted(files.items())}, "pack": None}
    except (OSError, ValueError):
        pass
    if not isinstance(identity.get("weights_sha256"), str):
        return None
    files = {str(identity.get("weights", "weights")): identity["weights_sha256"]}
    base = identity.get("base")
    if isinstance(base, dict) and isinstance(base.get("weights_sha256"), str):  # a fine-tuned model's base
        files[f"base/{base.get('weights', 'weights')}"] = base["weights_sha256"]
    return {"key": None, "files": files, "pack": None}
