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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from side_bench.errors import BenchError
from side_bench.registry import Registry, settings_dict, traits_of
from side_bench.run.canaries import CanarySpec, parse_canaries
from side_bench.scoring.knn import check_backend, faiss_available, resolve_backend
from side_bench.scoring.scores import Band, make_bands

TOP_LEVEL_KEYS = {
    "name": str, "description": str, "scales": list, "seeds": list, "n_generations": (int, dict),
    "dataset": dict, "model": dict, "features": (str, dict), "metrics": list, "bands": dict,
    "attacks": list, "scoring": dict, "gallery_size": int, "headline": str, "rankers": list,
    "canaries": dict,
}
REQUIRED_KEYS = ("name", "scales", "dataset", "model", "attacks", "metrics", "n_generations")
# The candidates of a cell are held in memory; beyond this a suite is a typo, not a plan
# (Carlini et al. sampled 1.75e8 images from Stable Diffusion, in many runs).
MAX_GENERATIONS = 100_000_000
SIMILARITY_RANGE = (-1.0, 1.0)  # band edges outside it select nothing (cosine; l2 similarity is at most 1)
# A suite whose null baseline (its held-out images) cannot show a rate this small above it gets
# a warning: memorization rates of a few percent are common, and a null of a few images hides them.
MIN_SHOWABLE_RATE = 0.05
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,@\[\]-]*$")
ATTACK_KEYS = {"name", "condition", "extractor", "condition_settings", "extractor_settings", "sweep",
               "seeds", "scales"}


@dataclass(frozen=True)
class ComponentSpec:
    """A named component and its settings table, as written in the suite."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    name: str  # the display name: the base name with the swept settings, e.g. side[guidance_scale=3.0]
    condition: ComponentSpec
    extractor: ComponentSpec
    base: str = ""  # the attack's name in the suite, before a sweep
    swept: dict[str, Any] = field(default_factory=dict)  # {"extractor.guidance_scale": 3.0}: this cell's sweep values


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
    # "kind/name" -> {distribution, version, source_hash} of every component the suite names
    plugins: dict[str, dict[str, str | None]] = field(default_factory=dict)
    metric_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric name (or id) -> its settings
    metric_components: dict[str, str] = field(default_factory=dict)  # a metric id -> the metric it uses
    rankers: list[ComponentSpec] = field(default_factory=list)  # attacker-side rankers run on every cell
    # an attack's name -> the (scale, seed) pairs it runs at, for attacks whose tables set their
    # own ``scales`` or ``seeds`` (or repeat the name to add some); absent: every scale x seed.
    # Not in any cell's config: a cell's numbers depend on its own scale and seed only.
    attack_cells: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    # the metric (and band) the leaderboard opens with, "gu-ratio" or "ams:high"; presentation
    # only, so outside every cell's hash (default: the first metric)
    headline: str = ""
    # planted duplicates (run/canaries.py): in every cell's config when set, absent otherwise
    canaries: CanarySpec | None = None
    # lines for the user, found while validating (a null too small to show the headline rate)
    warnings: list[str] = field(default_factory=list)
    # the data set's ``data_note``: where its training and held-out images come from ("" if none)
    data_note: str = ""
    # the data set's ``heldout_size``: the null baseline's images (None when it does not say)
    heldout_size: int | None = None
    # [model] per_scale: scale -> the model settings that differ at that scale (e.g. steps), so
    # that a larger training set is trained as many epochs; in those cells' configs only
    model_per_scale: dict[int, dict[str, Any]] = field(default_factory=dict)


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


def safe_name(value: str, what: str) -> str:
    """A single path component: letters, digits and ``._+=,@[]-``; no ``/``, no ``..``."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value or len(value) > 200:
        raise BenchError(f"{what}: expected a single folder name (letters, digits, '._-+=,@[]', "
                         f"not starting with '.' or '-', no '/' or '..'), got {value!r}")
    return value


def _int_list(value, key: str, where: str, minimum: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BenchError(f"{where}: {key}: expected a non-empty list of integers, got {value!r}")
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < minimum:
            raise BenchError(f"{where}: {key}: expected integers >= {minimum}, got {item!r}")
    repeated = sorted({item for item in value if value.count(item) > 1})
    if repeated:
        raise BenchError(f"{where}: {key}: {repeated[0]} is listed twice (expected distinct values)")
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
        if n > MAX_GENERATIONS:
            raise BenchError(f"{where}: n_generations: {n:,} for scale {key} is more than {MAX_GENERATIONS:,} "
                             "(a cell holds its candidates in memory; split the budget over seeds or runs)")
    return {scale: table[str(scale)] for scale in scales}


def _expand_sweep(attack: dict, where: str) -> list[tuple[str, dict, dict, dict]]:
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
        suffix, swept = [], {}
        for (part, setting), value in zip(keys, combination, strict=False):
            (condition if part == "condition" else extractor)[setting] = value
            suffix.append(f"{setting}={value}")
            swept[f"{part}.{setting}"] = value
        name = attack["name"] + (f"[{','.join(suffix)}]" if suffix else "")
        expanded.append((name, condition, extractor, swept))
    return expanded


def _attack_grid(attack: dict, scales: list[int], seeds: list[int], at: str) -> list[tuple[int, int]]:
    """The (scale, seed) pairs of one attack table: its own ``scales`` and ``seeds`` where given,
    else the suite's. Its scales must be among the suite's, which carry the N_G budgets, the null
    baseline and the leaderboard's columns; its seeds may be any (a seed only it runs)."""
    own_scales = _int_list(attack["scales"], "scales", at, 1) if "scales" in attack else scales
    extra = [scale for scale in own_scales if scale not in scales]
    if extra:
        raise BenchError(f"{at}: scales: {extra[0]} is not one of the suite's scales "
                         f"({', '.join(map(str, scales))}); an attack runs at a subset of them")
    own_seeds = _int_list(attack["seeds"], "seeds", at, 0) if "seeds" in attack else seeds
    return [(scale, seed) for scale in own_scales for seed in own_seeds]


def _check_band_range(bands: list[Band], features_name: str, features_object, where: str) -> None:
    """Band edges must lie in the similarity's range (a features plugin may declare
    ``similarity_range``; else [-1, 1]: cosine's range, and l2 similarity is at most 1)."""
    low, high = traits_of("features", features_object).similarity_range or SIMILARITY_RANGE
    for band in bands:
        for edge in band.edges:
            if not low <= edge <= high:
                raise BenchError(f"{where}: bands.{band.name}: edge {edge} is outside [{low:g}, {high:g}], "
                                 f"the range of the {getattr(features_object, 'similarity', '')} similarity "
                                 f"of features {features_name!r}")


def parse_suite(raw: dict[str, Any], path: str, registry: Registry) -> Suite:
    """Check a suite's TOML table, building every component once so that a bad name or setting
    fails before any work, and return the ``Suite``. The checks run in the order of the steps
    below (cheap first, the data set's own ``check`` last), so one mistake gives one error."""
    where = path
    _check_top_level(raw, where)
    named = _ComponentNames(registry)
    dataset, model, features, per_scale_raw = _core_components(raw, named, where)
    # Build each component once now, so bad names and settings fail before any work.
    dataset_object = _build_dataset(registry, dataset, where)
    model_object = registry.build("models", model.name, model.settings, f"{where}: [model]")
    declare = traits_of("models", model_object).declared_target
    declared = declare() if declare is not None else None
    _check_shapes(dataset, dataset_object, model, declared, where)
    canaries = parse_canaries(raw.get("canaries"), where)
    features_object = registry.build("features", features.name, features.settings, f"{where}: features")
    metrics, metric_settings, metric_components = _parse_metrics(raw["metrics"], named, registry, where)
    rankers = _parse_rankers(raw.get("rankers", []), named, registry, where)
    band_table = raw.get("bands") or {k: list(v) for k, v in features_object.default_bands.items()}
    bands = make_bands(band_table, f"{where}: [bands]")
    _check_band_range(bands, features.name, features_object, f"{where}: [bands]")
    headline = _headline(raw.get("headline"), metrics, bands, registry, where)

    scales = _int_list(raw["scales"], "scales", where, 1)
    seeds = _int_list(raw.get("seeds", [0]), "seeds", where, 0)
    attacks, attack_cells = _parse_attacks(raw["attacks"], scales, seeds, declared, model.name, named, registry, where)
    model_per_scale = _model_per_scale(per_scale_raw, model, scales, registry, where)
    _check_canary_metrics(metrics, metric_settings, metric_components, canaries, registry, where)
    full = [(scale, seed) for scale in scales for seed in seeds]
    attack_cells = {name: pairs for name, pairs in attack_cells.items() if sorted(pairs) != sorted(full)}
    _check_scales(scales, dataset_object, dataset.name, canaries, where)
    knn_backend = _knn_backend(raw.get("scoring", {}), where)
    n_generations = _generations_per_scale(raw["n_generations"], scales, where)
    warnings = _null_warnings(dataset_object, headline, metrics, metric_settings, metric_components,
                              n_generations, registry, where)
    data_traits = traits_of("datasets", dataset_object)
    if declared is not None and data_traits.fixed_scale is None:
        # a model trained elsewhere, scored against a subset the data set picked by seed
        warnings.append(f"{where}: [dataset] {dataset.name!r} picks each scale's training set itself (a seed-fixed "
                        f"subset), but [model] {model.name!r} was trained elsewhere: the images scored against, and "
                        "held out, are that subset, not necessarily the model's training images (image-folder: name "
                        "them with train and heldout)")
    if data_traits.check is not None:  # last: it may read every image, and everything cheap has passed
        _with_suite_path(data_traits.check, where)
    return Suite(
        name=raw["name"], path=path, description=raw.get("description", ""),
        dataset=ComponentSpec(dataset.name, settings_dict(dataset_object) or dataset.settings),
        model=ComponentSpec(model.name, settings_dict(model_object) or model.settings),
        features=ComponentSpec(features.name, settings_dict(features_object) or features.settings),
        metrics=metrics, metric_settings=metric_settings, metric_components=metric_components, rankers=rankers, bands=bands, attacks=attacks,
        scales=scales, seeds=seeds, attack_cells=attack_cells,
        n_generations=n_generations, knn_backend=knn_backend,
        gallery_size=raw.get("gallery_size", 8), raw=copy.deepcopy(raw), plugins=named.plugins, headline=headline,
        canaries=canaries, model_per_scale=model_per_scale, warnings=warnings,
        data_note=data_traits.data_note or "",
        heldout_size=data_traits.heldout_size,
    )


def _check_top_level(raw: dict[str, Any], where: str) -> None:
    """Known top-level keys of the right types, the required ones present, a usable name."""
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
    safe_name(raw["name"], f"{where}: name")


class _ComponentNames:
    """Resolves each component a suite names (aliases to one canonical name, so the config names
    it one way) and keeps the provenance of every one: ``plugins``, "kind/name" -> dict."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.plugins: dict[str, dict] = {}

    def __call__(self, kind: str, name: str, at: str) -> str:
        registration = self.registry.get(kind, name, at)
        self.plugins[registration.key] = registration.provenance.as_dict()
        return registration.name


def _core_components(raw: dict[str, Any], named: _ComponentNames, where: str):
    """[dataset], [model] (its ``per_scale`` table apart, returned raw) and ``features``, named."""
    dataset = _component(raw["dataset"], f"{where}: [dataset]")
    model = _component(raw["model"], f"{where}: [model]")
    per_scale_raw = model.settings.get("per_scale", {})
    model = ComponentSpec(model.name, {k: v for k, v in model.settings.items() if k != "per_scale"})
    features = _component(raw.get("features", "pixel"), f"{where}: features")
    dataset = ComponentSpec(named("datasets", dataset.name, f"{where}: [dataset]"), dataset.settings)
    model = ComponentSpec(named("models", model.name, f"{where}: [model]"), model.settings)
    features = ComponentSpec(named("features", features.name, f"{where}: features"), features.settings)
    return dataset, model, features, per_scale_raw


def _parse_metrics(entries: list, named: _ComponentNames, registry: Registry, where: str):
    """``metrics = [...]`` -> (row labels, label -> settings, label -> metric where they differ)."""
    metrics, metric_settings, metric_components = [], {}, {}
    if not entries:
        raise BenchError(f"{where}: metrics: expected a non-empty list of metric names (e.g. [\"ams\", \"p95\"])")
    for entry in entries:
        if not isinstance(entry, (str, dict)):
            raise BenchError(f"{where}: metrics: expected metric names or tables {{ name = ..., setting = ... }}, "
                             f"got {entry!r}")
        # A table may name its rows with ``id`` to use one metric several times (e.g. k = 10, 50).
        label = entry.get("id") if isinstance(entry, dict) else None
        if label is not None and not isinstance(label, str):
            raise BenchError(f"{where}: metrics: id: expected a string, got {label!r}")
        spec = _component({k: v for k, v in entry.items() if k != "id"} if isinstance(entry, dict) else entry,
                          f"{where}: metrics")
        canonical = named("metrics", spec.name, f"{where}: metrics")
        label = label or canonical
        if label in metrics:
            raise BenchError(f"{where}: metrics: {label!r} is listed twice (expected distinct metrics; "
                             "give a table an id to use one metric with other settings)")
        metric = registry.build("metrics", canonical, spec.settings, f"{where}: metrics.{label}")
        metrics.append(label)
        metric_settings[label] = settings_dict(metric) or spec.settings
        if label != canonical:
            metric_components[label] = canonical
    return metrics, metric_settings, metric_components


def _parse_rankers(entries: list, named: _ComponentNames, registry: Registry, where: str) -> list[ComponentSpec]:
    """``rankers = [...]`` -> one ComponentSpec each, with the settings the ranker was built with."""
    rankers = []
    for entry in entries:
        if not isinstance(entry, (str, dict)):
            raise BenchError(f"{where}: rankers: expected ranker names or tables {{ name = ..., setting = ... }}, "
                             f"got {entry!r}")
        spec = _component(entry, f"{where}: rankers")
        canonical = named("rankers", spec.name, f"{where}: rankers")
        if any(r.name == canonical for r in rankers):
            raise BenchError(f"{where}: rankers: {spec.name!r} is listed twice")
        ranker = registry.build("rankers", canonical, spec.settings, f"{where}: rankers.{canonical}")
        rankers.append(ComponentSpec(canonical, settings_dict(ranker) or spec.settings))
    return rankers


def _parse_attacks(entries: list, scales: list[int], seeds: list[int], declared, model_name: str,
                   named: _ComponentNames, registry: Registry, where: str):
    """``[[attacks]]`` -> (attacks, name -> its (scale, seed) cells): each table checked, its sweeps
    expanded, each condition and extractor built once; a name may repeat only to add cells."""
    attacks, first_at, attack_cells = [], {}, {}  # first_at: name -> (its AttackSpec, where it was defined)
    for number, attack in enumerate(entries):
        at = f"{where}: attacks[{number}]"
        _check_attack_table(attack, at)
        condition_name = named("conditions", attack["condition"], f"{at}: condition")
        extractor_name = named("extractors", attack["extractor"], f"{at}: extractor")
        grid = _attack_grid(attack, scales, seeds, at)
        for name, condition_settings, extractor_settings, swept in _expand_sweep(attack, at):
            condition = registry.build("conditions", condition_name, condition_settings, f"{at}: condition_settings")
            if declared is not None and traits_of("conditions", condition).check_target is not None:
                try:
                    condition.check_target(declared)
                except BenchError as error:
                    raise BenchError(f"{at}: condition {condition_name!r} does not fit [model] {model_name!r}: {error}") from None
            extractor = registry.build("extractors", extractor_name, extractor_settings, f"{at}: extractor_settings")
            spec = AttackSpec(
                name,
                ComponentSpec(condition_name, settings_dict(condition) or condition_settings),
                ComponentSpec(extractor_name, settings_dict(extractor) or extractor_settings),
                base=attack["name"], swept=swept,
            )
            if name not in first_at:
                first_at[name] = (spec, at)
                attacks.append(spec)
                attack_cells[name] = list(grid)
                continue
            # The name again: more cells of the same attack (seed 2 at some scales, say), so that
            # the leaderboard pools them with the first table's; anything else is a mistake.
            earlier, earlier_at = first_at[name]
            if spec != earlier:
                raise BenchError(f"{at}: name {name!r} is used by another attack ({earlier_at.rpartition(': ')[2]}) "
                                 "with other settings (a name repeats only to give the same attack more "
                                 "scales or seeds)")
            overlap = [pair for pair in grid if pair in attack_cells[name]]
            if overlap:
                raise BenchError(f"{at}: {name!r} at scale {overlap[0][0]}, seed {overlap[0][1]} is already "
                                 f"in {earlier_at.rpartition(': ')[2]} (expected other scales or seeds)")
            attack_cells[name].extend(grid)
    return attacks, attack_cells


def _check_attack_table(attack, at: str) -> None:
    """One ``[[attacks]]`` table: known keys; name, condition and extractor strings; settings tables."""
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


def _check_canary_metrics(metrics: list[str], metric_settings: dict, metric_components: dict, canaries,
                          registry: Registry, where: str) -> None:
    """A metric that needs planted canaries is listed only with a ``canaries`` table."""
    for label in metrics:
        metric = registry.build("metrics", metric_components.get(label, label), metric_settings[label])
        if traits_of("metrics", metric).needs_canaries and canaries is None:
            raise BenchError(f"{where}: metrics.{label}: needs planted canaries; add a top-level "
                             "canaries = { counts = [...], per_count = N } or drop the metric")


def _check_scales(scales: list[int], dataset_object, dataset_name: str, canaries, where: str) -> None:
    """The scales the data set can give: its one fixed scale, or at most its training images
    (with the canaries beside them)."""
    fixed = traits_of("datasets", dataset_object).fixed_scale
    if fixed is not None and scales != [fixed]:
        raise BenchError(f"{where}: scales: dataset {dataset_name!r} takes one scale, {fixed}: the size of the "
                         f"training set it names (every training image is scored against); got "
                         f"{', '.join(map(str, scales))}")
    available = traits_of("datasets", dataset_object).max_scale
    if available is None:
        return
    for scale in scales:
        if scale > available:
            raise BenchError(
                f"{where}: scales: {scale} is larger than the {available} training images "
                f"dataset {dataset_name!r} holds beside its held-out split"
            )
        if canaries is not None and scale + canaries.n_canaries > available:
            raise BenchError(
                f"{where}: canaries: scale {scale} and {canaries.n_canaries} canaries need "
                f"{scale + canaries.n_canaries} images beside the held-out split; dataset "
                f"{dataset_name!r} holds {available}"
            )


def _knn_backend(scoring: dict, where: str) -> str:
    """``[scoring] knn`` (the only key of [scoring]), checked."""
    if set(scoring) - {"knn"}:
        raise BenchError(f"{where}: [scoring]: unknown keys {sorted(set(scoring) - {'knn'})} (expected only knn)")
    backend = check_backend(scoring.get("knn", "auto"), f"{where}: [scoring] knn")
    if backend == "faiss" and not faiss_available():  # an optional extra
        raise BenchError(f"{where}: [scoring] knn: 'faiss' asked for, but faiss is not installed "
                         "(pip install 'side-bench[faiss]')")
    return backend


def _with_suite_path(build, where: str):
    """``build()``, its one-line errors naming the suite file (a component's own errors know only
    the component: "dataset 'image-folder': train: ...")."""
    try:
        return build()
    except BenchError as error:
        if str(error).startswith(where):
            raise
        raise BenchError(f"{where}: {error}") from error


def _build_dataset(registry: Registry, dataset: ComponentSpec, where: str):
    return _with_suite_path(lambda: registry.build("datasets", dataset.name, dataset.settings,
                                                   f"{where}: [dataset]"), where)


def _check_shapes(dataset: ComponentSpec, dataset_object, model: ComponentSpec, declared, where: str) -> None:
    """The data set's images (``image_shape``) must be what the model makes (its declaration's
    ``image_shape``, from a checkpoint's config), when both say: else every cell would fail."""
    data_shape = traits_of("datasets", dataset_object).image_shape
    model_shape = declared.image_shape if declared is not None else None
    if data_shape is None or model_shape is None or tuple(data_shape) == tuple(model_shape):
        return
    channels, height, _ = model_shape
    raise BenchError(f"{where}: [dataset] {dataset.name!r} gives images of shape {tuple(data_shape)} (C, H, W), "
                     f"[model] {model.name!r} makes {tuple(model_shape)} (from its config): set the dataset's "
                     f"channels = {channels} and image_size = {height} where it has them")


def _null_warnings(dataset_object, headline: str, metrics: list[str], metric_settings: dict,
                   metric_components: dict, n_generations: dict[int, int], registry: Registry,
                   where: str) -> list[str]:
    """A warning when the held-out set (``heldout_size``) is too small for the null baseline to
    show the headline rate (or the first rate metric) above it: the smallest rate it could
    show, in the best case of a null of 0, is above ``MIN_SHOWABLE_RATE`` and the held-out
    set is the smaller sample of the test (fewer images than N_G; when N_G is the smaller, as
    in a tiny test suite, more generations are what would help, and the dry run shows N_G)."""
    held = traits_of("datasets", dataset_object).heldout_size
    if held is None or held < 1:
        return []

    def candidate_rate(label: str) -> bool:  # a share of the candidates, higher = more memorization
        metric = registry.build("metrics", metric_components.get(label, label), metric_settings[label])
        traits = traits_of("metrics", metric)
        return traits.unit == "rate" and traits.direction != "lower" and not traits.needs_model

    headline_metric = headline.partition(":")[0]
    rate = next((label for label in dict.fromkeys([headline_metric, *metrics])
                 if label in metrics and candidate_rate(label)), None)
    if rate is None:
        return []
    from side_bench.report.leaderboard import null_resolution

    warnings = []
    for scale, n in n_generations.items():
        showable = null_resolution(n, held)
        if held >= n or (showable is not None and showable <= MIN_SHOWABLE_RATE):
            continue
        enough = max(MIN_SHOWABLE_RATE, null_resolution(n, n) or 1.0)  # as good as N_G allows
        better = next((m for m in (100, 200, 500, 1000, 2000, 5000, 10000)
                       if held < m <= max(n, 100) and (null_resolution(n, m) or 1.0) <= enough), None)
        limit = (f"no {rate} rate below {showable:.1%} can be shown above it" if showable is not None
                 else f"not even a {rate} rate of 100% can be shown above it")
        advice = (f"; hold out more images ({better} would show {null_resolution(n, better):.1%})"
                  if better else "; hold out more images")
        warnings.append(f"{where}: [dataset]: the null baseline holds {held} held-out image(s): at scale {scale}, "
                        f"N_G = {n}, {limit} (even against a null of 0 of {held}){advice}")
    return warnings


def _model_per_scale(table, model: ComponentSpec, scales: list[int], registry: Registry,
                     where: str) -> dict[int, dict[str, Any]]:
    """``[model] per_scale = { "1024" = { steps = 12000 } }``: settings that differ at a scale,
    each merged over [model]'s and checked like them; a scale without an entry keeps [model]."""
    at = f"{where}: [model] per_scale"
    if not isinstance(table, dict):
        raise BenchError(f"{at}: expected a table {{ \"SCALE\" = {{ SETTING = VALUE }} }}, got {table!r}")
    found = {}
    for key, overrides in table.items():
        if not key.isdigit() or int(key) not in scales:
            raise BenchError(f"{at}: {key!r} is not one of the scales ({', '.join(map(str, scales))})")
        if not isinstance(overrides, dict) or not overrides:
            raise BenchError(f"{at}.{key}: expected a non-empty table of model settings")
        merged = {**model.settings, **overrides}
        built = registry.build("models", model.name, merged, f"{at}.{key}")
        found[int(key)] = settings_dict(built) or merged
    return found


def _headline(value: str | None, metrics: list[str], bands: list[Band], registry: Registry, where: str) -> str:
    """``headline = "METRIC"`` or ``"METRIC:BAND"``, naming one of the suite's metrics and bands."""
    if value is None:
        return metrics[0]
    metric, _, band = value.partition(":")
    canonical = registry.aliases["metrics"].get(metric.strip(), metric.strip())
    if canonical not in metrics:
        raise BenchError(f"{where}: headline: {metric.strip()!r} is not one of the suite's metrics "
                         f"({', '.join(metrics)})")
    names = [b.name for b in bands]
    if band.strip() and band.strip() not in names:
        raise BenchError(f"{where}: headline: band {band.strip()!r} is not one of the suite's bands ({', '.join(names)})")
    return f"{canonical}:{band.strip()}" if band.strip() else canonical


def check_data_root(suite: Suite, registry: Registry) -> None:
    """``--data-root`` only means something to a data set with a ``root`` setting left empty."""
    component = registry.get("datasets", suite.dataset.name).component
    settings = getattr(component, "Settings", None)
    fields = {f.name for f in dataclasses.fields(settings)} if dataclasses.is_dataclass(settings) else set()
    if "root" not in fields:
        raise BenchError(f"--data-root: dataset {suite.dataset.name!r} in {suite.path} reads no local files "
                         "(it has no 'root' setting); drop --data-root")
    table = suite.raw.get("dataset")
    if isinstance(table, dict) and table.get("root"):
        raise BenchError(f"--data-root: {suite.path}: [dataset] root = {table['root']!r} is set in the suite "
                         "and wins; drop one of them")


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


def cell_plugins(suite: Suite, attack: AttackSpec) -> dict[str, dict[str, str | None]]:
    """The provenance of every component one attack's cells use (``kind/name`` -> dict)."""
    keys = [f"dataset/{suite.dataset.name}", f"model/{suite.model.name}", f"features/{suite.features.name}",
            f"condition/{attack.condition.name}", f"extractor/{attack.extractor.name}",
            *(f"metric/{suite.metric_components.get(name, name)}" for name in suite.metrics),
            *(f"ranker/{r.name}" for r in suite.rankers)]
    return {key: suite.plugins[key] for key in sorted(set(keys)) if key in suite.plugins}


def plugin_changes(old: dict | None, new: dict | None) -> list[str]:
    """What differs between two cells' ``plugins``: ["metric/copy-rate: example 0.1 -> 0.2"]."""
    old, new = old or {}, new or {}

    def label(entry):
        if not entry:
            return "absent"
        text = f"{entry.get('distribution')} {entry.get('version')}"
        return f"{text} (source {entry['source_hash'][:8]})" if entry.get("source_hash") else text

    changes = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            before, after = label(old.get(key)), label(new.get(key))
            if before == after:  # the same words: only a source hash that is not shown differs
                before, after = before + " (source changed)", after
            changes.append(f"{key}: {before} -> {after}")
    return changes


def cell_model(config: dict) -> dict[str, Any]:
    """The model a cell trains or loads, ``{"name", "settings"}``: [model]'s settings, or its
    ``per_scale`` entry for the cell's scale (what the model cache key is made of)."""
    model = config["model"]
    settings = (model.get("per_scale") or {}).get(str(config["scale"]), model["settings"])
    return {"name": model["name"], "settings": settings}


def default_run_id(cells: list[Cell]) -> str:
    """``run-<hash>`` of the cells' configs *without* their plugins' provenance: after a plugin
    changes, a rerun lands in the same folder and recomputes only the cells that use it."""
    configs = [{key: value for key, value in cell.config.items() if key != "plugins"} for cell in cells]
    return "run-" + canonical_hash(configs)[:12]


# Packages that are optional extras (pyproject.toml), by the module a setting names to choose
# them: a cell's config (and so its hash) holds their versions only when the cell uses them, so
# that installing or upgrading faiss reruns only the cells that search or cluster with it.
OPTIONAL_PACKAGES = {"faiss": ("faiss-cpu", "faiss-gpu")}


def _settings_values(value: Any):
    """Every string in a config's settings, nested tables and lists included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _settings_values(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _settings_values(item)


def cell_versions(config: dict[str, Any], installed: dict[str, str]) -> dict[str, str]:
    """The installed versions a cell's config holds: every required package's, and an optional
    package's (``OPTIONAL_PACKAGES``) only where the cell uses it: its k-NN backend resolves to
    it, or one of its components' settings names it (the surrogate condition's ``kmeans =
    "faiss"``); the way a component chooses an optional implementation is a setting naming it.

    Before issue 30 every installed package entered every cell (faiss-cpu was required): those
    configs hash as they were recorded, and ``every_package`` gives them again (the runner's
    fall-back to a run folder that holds them, run/prepared.py ``prepare_run``)."""
    components = {key: config[key] for key in ("dataset", "model", "attack", "features", "metric_settings",
                                               "rankers")}
    used = set(_settings_values(components))
    if resolve_backend(config["knn"]) in OPTIONAL_PACKAGES:
        used.add(resolve_backend(config["knn"]))
    optional = {package for module, packages in OPTIONAL_PACKAGES.items() if module not in used for package in packages}
    return {package: version for package, version in installed.items() if package not in optional}


def expand_cells(suite: Suite, *, versions: dict[str, str], device: str,
                 features_identity: dict[str, Any], every_package: bool = False) -> list[Cell]:
    """scale x attack x seed; each cell's config holds every input that changes its numbers,
    the distribution, version and source hash of every plugin it uses included (``plugins``),
    and the ``versions`` of the installed packages it uses (``cell_versions``; all of them with
    ``every_package``, as every cell's config held before issue 30)."""
    cells = []
    # the suite's seeds, then any seed only some attacks run; an attack without its own
    # scales or seeds runs at all of the suite's, in the same order as before they existed
    seeds = list(dict.fromkeys([*suite.seeds, *(seed for pairs in suite.attack_cells.values() for _, seed in pairs)]))
    for scale, attack, seed in itertools.product(suite.scales, suite.attacks, seeds):
        own = suite.attack_cells.get(attack.name)
        runs_here = (scale, seed) in own if own is not None else seed in suite.seeds
        if not runs_here:
            continue
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
            "metric_settings": suite.metric_settings,
            "metric_components": suite.metric_components,
            "rankers": [dataclasses.asdict(r) for r in suite.rankers],
            "n_generations": suite.n_generations[scale],
            "knn": suite.knn_backend,
            "device": device,
            "versions": versions,
            "plugins": cell_plugins(suite, attack),
        }
        if not every_package:
            config["versions"] = cell_versions(config, versions)
        if suite.canaries is not None:  # only then: a suite without canaries keeps its hashes
            config["canaries"] = suite.canaries.as_config()
        if suite.model_per_scale:  # the same at every scale, so that the leaderboard keeps one setup
            config["model"]["per_scale"] = {str(s): settings for s, settings in suite.model_per_scale.items()}
        cells.append(Cell(suite.name, scale, seed, attack, config, canonical_hash(config), suite.gallery_size))
    return cells
