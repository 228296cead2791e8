"""Suite files: TOML, validated up front, expanded into cells (scale x attack x sweep x seed).

Every error names the file and the key and says what was expected; nothing is run or
written before a suite validates.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from side_bench.errors import BenchError
from side_bench.registry import Registry, settings_dict
from side_bench.scoring import Band, make_bands

TOP_LEVEL_KEYS = {
    "name": str, "description": str, "scales": list, "seeds": list, "n_generations": (int, dict),
    "dataset": dict, "model": dict, "features": (str, dict), "metrics": list, "bands": dict,
    "attacks": list, "scoring": dict, "gallery_size": int,
}
REQUIRED_KEYS = ("name", "scales", "dataset", "model", "attacks", "metrics", "n_generations")
ATTACK_KEYS = {"name", "condition", "extractor", "condition_settings", "extractor_settings", "sweep"}


@dataclass(frozen=True)
class ComponentSpec:
    """A named component and its settings table, as written in the suite."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    name: str
    condition: ComponentSpec
    extractor: ComponentSpec


@dataclass
class Suite:
    name: str
    path: str
    description: str
    dataset: ComponentSpec
    model: ComponentSpec
    features: ComponentSpec
    metrics: list[str]
    bands: list[Band]
    attacks: list[AttackSpec]  # sweeps already expanded: one AttackSpec per value
    scales: list[int]
    seeds: list[int]
    n_generations: dict[int, int]  # N_G per scale (a suite may give one for all)
    knn_backend: str
    gallery_size: int  # top-k candidates kept per cell as a PNG (0: none); not in the hash
    raw: dict[str, Any]  # the file's contents, for the manifest


@dataclass(frozen=True)
class Cell:
    """One unit of work: an attack on one scale with one seed. Plain data (picklable)."""

    suite: str
    scale: int
    seed: int
    attack: AttackSpec
    config: dict[str, Any]  # everything that determines the numbers
    config_hash: str
    gallery_size: int = 0  # presentation only, so outside the config and its hash


def canonical_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _component(value, where: str) -> ComponentSpec:
    if isinstance(value, str):
        return ComponentSpec(value)
    if isinstance(value, dict):
        if not isinstance(value.get("name"), str):
            raise BenchError(f"{where}: missing key 'name' (the plugin's name, a string)")
        settings = {k: v for k, v in value.items() if k != "name"}
        return ComponentSpec(value["name"], settings)
    raise BenchError(f"{where}: expected a name or a table with 'name', got {value!r}")


def _int_list(value, key: str, where: str, minimum: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BenchError(f"{where}: {key}: expected a non-empty list of integers, got {value!r}")
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < minimum:
            raise BenchError(f"{where}: {key}: expected integers >= {minimum}, got {item!r}")
    return list(value)


def _generations_per_scale(value, scales: list[int], where: str) -> dict[int, int]:
    """``n_generations = 256`` for every scale, or a table ``{ "1000" = 51200, ... }`` per scale
    (the paper's budgets differ by scale; UMS then compares only within a scale)."""
    table = {str(scale): value for scale in scales} if isinstance(value, int) else value
    missing = [str(scale) for scale in scales if str(scale) not in table]
    if missing:
        raise BenchError(f"{where}: n_generations: no budget for scale {missing[0]} (expected a key per scale)")
    extra = sorted(set(table) - {str(scale) for scale in scales})
    if extra:
        raise BenchError(f"{where}: n_generations: {extra[0]!r} is not one of the scales")
    for key, n in table.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise BenchError(f"{where}: n_generations: expected a positive integer for scale {key}, got {n!r}")
    return {scale: table[str(scale)] for scale in scales}


def _expand_sweep(attack: dict, where: str) -> list[tuple[str, dict, dict]]:
    """``sweep = {"extractor.guidance_scale" = [0, 1, 4]}`` -> one (name, cond, extr) per value."""
    sweep = attack.get("sweep", {})
    if not isinstance(sweep, dict):
        raise BenchError(f"{where}: sweep: expected a table of 'condition.KEY' or 'extractor.KEY' = [values]")
    keys, value_lists = [], []
    for key, values in sweep.items():
        part, _, setting = key.partition(".")
        if part not in ("condition", "extractor") or not setting:
            raise BenchError(f"{where}: sweep.{key}: expected a key 'condition.SETTING' or 'extractor.SETTING'")
        if not isinstance(values, list) or not values:
            raise BenchError(f"{where}: sweep.{key}: expected a non-empty list of values")
        keys.append((part, setting))
        value_lists.append(values)
    expanded = []
    for combination in itertools.product(*value_lists) if keys else [()]:
        condition = dict(attack.get("condition_settings", {}))
        extractor = dict(attack.get("extractor_settings", {}))
        suffix = []
        for (part, setting), value in zip(keys, combination, strict=False):
            (condition if part == "condition" else extractor)[setting] = value
            suffix.append(f"{setting}={value}")
        name = attack["name"] + (f"[{','.join(suffix)}]" if suffix else "")
        expanded.append((name, condition, extractor))
    return expanded


def parse_suite(raw: dict[str, Any], path: str, registry: Registry) -> Suite:
    where = path
    for key, value in raw.items():
        if key not in TOP_LEVEL_KEYS:
            raise BenchError(f"{where}: unknown key {key!r} (expected one of: {', '.join(TOP_LEVEL_KEYS)})")
        if not isinstance(value, TOP_LEVEL_KEYS[key]):
            expected = TOP_LEVEL_KEYS[key]
            names = " or ".join(t.__name__ for t in expected) if isinstance(expected, tuple) else expected.__name__
            raise BenchError(f"{where}: {key}: expected {names.replace('dict', 'table')}, got {value!r}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise BenchError(f"{where}: missing key {key!r}")

    dataset = _component(raw["dataset"], f"{where}: [dataset]")
    model = _component(raw["model"], f"{where}: [model]")
    features = _component(raw.get("features", "pixel"), f"{where}: features")
    # Build each component once now, so bad names and settings fail before any work.
    dataset_object = registry.build("datasets", dataset.name, dataset.settings, f"{where}: [dataset]")
    model_object = registry.build("models", model.name, model.settings, f"{where}: [model]")
    features_object = registry.build("features", features.name, features.settings, f"{where}: features")
    metrics = []
    for name in raw["metrics"]:
        if not isinstance(name, str):
            raise BenchError(f"{where}: metrics: expected metric names, got {name!r}")
        metrics.append(registry.get("metrics", name, f"{where}: metrics").name)
    band_table = raw.get("bands") or {k: list(v) for k, v in features_object.default_bands.items()}
    bands = make_bands(band_table, f"{where}: [bands]")

    attacks, seen = [], set()
    for number, attack in enumerate(raw["attacks"]):
        at = f"{where}: attacks[{number}]"
        if not isinstance(attack, dict):
            raise BenchError(f"{at}: expected a table")
        unknown = set(attack) - ATTACK_KEYS
        if unknown:
            raise BenchError(f"{at}: unknown key {sorted(unknown)[0]!r} (expected one of: {', '.join(sorted(ATTACK_KEYS))})")
        for key in ("name", "condition", "extractor"):
            if not isinstance(attack.get(key), str):
                raise BenchError(f"{at}: missing key {key!r} (a string)")
        for key in ("condition_settings", "extractor_settings"):
            if not isinstance(attack.get(key, {}), dict):
                raise BenchError(f"{at}: {key}: expected a table")
        condition_name = registry.get("conditions", attack["condition"], f"{at}: condition").name
        extractor_name = registry.get("extractors", attack["extractor"], f"{at}: extractor").name
        for name, condition_settings, extractor_settings in _expand_sweep(attack, at):
            if name in seen:
                raise BenchError(f"{at}: name {name!r} is used by another attack")
            seen.add(name)
            condition = registry.build("conditions", condition_name, condition_settings, f"{at}: condition_settings")
            declared = model_object.declared_target() if hasattr(model_object, "declared_target") else None
            if declared is not None and hasattr(condition, "check_target"):
                try:
                    condition.check_target(declared)
                except BenchError as error:
                    raise BenchError(f"{at}: condition {condition_name!r} does not fit [model] {model.name!r}: {error}") from None
            extractor = registry.build("extractors", extractor_name, extractor_settings, f"{at}: extractor_settings")
            attacks.append(AttackSpec(
                name,
                ComponentSpec(condition_name, settings_dict(condition) or condition_settings),
                ComponentSpec(extractor_name, settings_dict(extractor) or extractor_settings),
            ))

    scales = _int_list(raw["scales"], "scales", where, 1)
    available = getattr(dataset_object, "max_scale", None)
    if available is not None:
        for scale in scales:
            if scale > available:
                raise BenchError(
                    f"{where}: scales: {scale} is larger than the {available} training images "
                    f"dataset {dataset.name!r} holds beside its held-out split"
                )
    scoring = raw.get("scoring", {})
    knn_backend = scoring.get("knn", "auto")
    if set(scoring) - {"knn"} or knn_backend not in ("auto", "faiss", "torch"):
        raise BenchError(f"{where}: [scoring]: expected only knn = 'auto', 'faiss' or 'torch'")
    return Suite(
        name=raw["name"], path=path, description=raw.get("description", ""),
        dataset=ComponentSpec(dataset.name, settings_dict(dataset_object) or dataset.settings),
        model=ComponentSpec(model.name, settings_dict(model_object) or model.settings),
        features=ComponentSpec(features.name, settings_dict(features_object) or features.settings),
        metrics=metrics, bands=bands, attacks=attacks,
        scales=scales, seeds=_int_list(raw.get("seeds", [0]), "seeds", where, 0),
        n_generations=_generations_per_scale(raw["n_generations"], scales, where), knn_backend=knn_backend,
        gallery_size=raw.get("gallery_size", 8), raw=copy.deepcopy(raw),
    )


def load_suite(name_or_path: str, registry: Registry) -> Suite:
    """A suite by registered name (``side-bench suites``) or by path to a TOML file."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" or path.exists()):
        path = Path(registry.get("suites", name_or_path).component)
    if not path.is_file():
        raise BenchError(f"{path}: suite file not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise BenchError(f"{path}: not valid TOML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: cannot read: {error}") from error
    return parse_suite(raw, str(path), registry)


def expand_cells(suite: Suite, *, versions: dict[str, str], device: str,
                 features_identity: dict[str, Any]) -> list[Cell]:
    """scale x attack x seed; each cell's config holds every input that changes its numbers."""
    cells = []
    for scale, attack, seed in itertools.product(suite.scales, suite.attacks, suite.seeds):
        config = {
            "suite": suite.name,
            "dataset": dataclasses.asdict(suite.dataset),
            "scale": scale,
            "seed": seed,
            "model": dataclasses.asdict(suite.model),
            "attack": dataclasses.asdict(attack),
            "features": {**dataclasses.asdict(suite.features), "identity": features_identity},
            "bands": [dataclasses.asdict(b) for b in suite.bands],
            "metrics": suite.metrics,
            "n_generations": suite.n_generations[scale],
            "knn": suite.knn_backend,
            "device": device,
            "versions": versions,
        }
        cells.append(Cell(suite.name, scale, seed, attack, config, canonical_hash(config), suite.gallery_size))
    return cells
