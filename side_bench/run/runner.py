"""The runner: a suite -> cells -> executor -> result store, and the Python API."""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from side_bench import cost
from side_bench.contracts import check_candidates, check_diagnostics, check_ranking
from side_bench.errors import BenchError, use_deterministic_kernels
from side_bench.errors import resolve_device as _resolve
from side_bench.hookspecs import ModelContext, RunContext, no_progress
from side_bench.machine import describe as describe_device
from side_bench.registry import Registry, load_registry, traits_of
from side_bench.results.candidates import cell_file, null_file, write_scores
from side_bench.results.gallery import write_gallery
from side_bench.results.records import ROW_SCHEMA_VERSION, attack_fields, cell_rows, with_null
from side_bench.results.store import atomic_write, default_cache_dir, failure_record
from side_bench.run import canaries
from side_bench.run.prepared import (  # noqa: F401 (auto_workers, cpu_cores, set_workers: the runner's API)
    PreparedRun,
    auto_workers,
    cpu_cores,
    prepare_run,
    set_workers,
    versions,
)
from side_bench.run.suite import Cell, canonical_hash, cell_model
from side_bench.scoring import stats
from side_bench.scoring.rows import copy_decisions, default_copy_metric, metric_rows, model_metric_rows, score_images
from side_bench.scoring.scores import Band, Reference, to_unit


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def resolve_device(device: str) -> torch.device:
    return _resolve(device, "--device")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _unheard(config_hash: str) -> None:
    return None


@dataclass
class CellRunner:
    """Runs one cell. Picklable: an executor may ship it to another process."""

    device: str
    cache_dir: str
    run_dir: str
    progress: Callable[[str, int, int], None] = field(default=no_progress, repr=False)
    targets: str | None = None  # a shared-targets pack (run/targets.py): load every target from it, never train
    # called with the cell's config hash when its target model is trained or loaded: the local
    # executor's workers tell its ModelQueue, which then hands out the model's other cells
    target_ready: Callable[[str], None] = field(default=_unheard, repr=False)
    _registry: Registry | None = field(default=None, repr=False)
    _splits: dict = field(default_factory=dict, repr=False)
    _references: dict = field(default_factory=dict, repr=False)
    _null_rows: dict = field(default_factory=dict, repr=False)
    _model_metric_rows: dict = field(default_factory=dict, repr=False)
    _target_labels: dict = field(default_factory=dict, repr=False)
    _built_features: dict = field(default_factory=dict, repr=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(progress=no_progress, target_ready=_unheard, _registry=None, _splits={}, _references={}, _null_rows={},
                     _model_metric_rows={}, _target_labels={}, _built_features={})
        return state

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry()
        return self._registry

    def __call__(self, cell: Cell) -> dict:
        started = time.perf_counter()
        use_deterministic_kernels(self.device)  # here, not per run: an executor may run cells in other processes
        base = {"config_hash": cell.config_hash, "scale": cell.scale, "seed": cell.seed,
                "attack": cell.attack.name, "config": cell.config, "plugins": cell.config.get("plugins", {}),
                "started": now()}
        try:
            rows = self._run(cell, started)
        except Exception as error:  # isolate the cell: record why, let the others go on
            return failure_record(cell, f"{type(error).__name__}: {error}", traceback.format_exc(),
                                  time.perf_counter() - started, **{k: base[k] for k in ("config", "plugins", "started")},
                                  finished=now())
        gallery = rows[0].get("gallery") if rows else None
        return {**base, "status": "done", "rows": rows, "gallery": gallery, "finished": now(),
                "seconds": time.perf_counter() - started}

    def _split(self, config: dict):
        """The scale's DataSplit (with its canaries planted, when the suite has them) and the
        planted canaries' training index -> count (None without canaries); once per scale."""
        spec = canaries.spec_from_config(config)
        key = canonical_hash([config["dataset"], config["scale"], config["seed"],
                              *([spec.as_config()] if spec else [])])
        if key not in self._splits:
            name = config["dataset"]["name"]
            dataset = self.registry.build("datasets", name, config["dataset"]["settings"])
            split, planted = dataset.load(config["scale"], config["seed"]), None
            split_files = traits_of("datasets", dataset).split_files
            if split_files is not None:  # which files were trained on and which held out
                path = Path(self.run_dir) / "data" / f"{config['scale']}-{config['seed']}.json"
                if not path.exists():  # the same for every cell of the scale and seed
                    files = split_files(config["scale"], config["seed"])
                    atomic_write(path, json.dumps({"dataset": name, "scale": config["scale"], "seed": config["seed"],
                                                   **files}, indent=1) + "\n")
            if spec is not None:
                split, planted = canaries.plant(dataset, split, spec, config["scale"], config["seed"], name)
                path = Path(self.run_dir) / "canaries" / f"{config['scale']}-{config['seed']}.json"
                if not path.exists():  # the same for every cell of the scale and seed
                    atomic_write(path, json.dumps(planted.record(spec, config["scale"], config["seed"]),
                                                  indent=1) + "\n")
            self._splits[key] = (split, planted.by_training_index() if planted else None)
        return self._splits[key]

    def _run(self, cell: Cell, started: float) -> list[dict]:
        """The cell's stages, each timed: data, target, condition, extraction, scoring, null, gallery."""
        config = cell.config
        registry = self.registry
        timer = StageTimer()
        features = self._features(config)
        ctx = RunContext(device=torch.device(self.device), seed=cell.seed, cache_dir=Path(self.cache_dir),
                         features=features, progress=self.progress)
        condition = registry.build("conditions", cell.attack.condition.name, cell.attack.condition.settings)
        extractor = registry.build("extractors", cell.attack.extractor.name, cell.attack.extractor.settings)
        with timer("data"):
            data, planted = self._split(config)
        with timer("target"):
            target, model_key, target_model = self._target(cell, data, condition, ctx)
        self.target_ready(cell.config_hash)
        # the attacker's stages run under the cost meter: what they spend is counted where it is
        # spent (side_bench/cost.py), the target's UNets hooked before the condition sees them
        with cost.metering((target.unet, "target"), (getattr(target, "base_unet", None), "base")) as meter:
            with timer("condition"), meter.stage("condition"):
                labelled = condition.attack_labels(target, data, ctx)
            with timer("extraction"), meter.stage("extraction"):
                candidates = check_candidates(
                    extractor.extract(target, labelled, config["n_generations"], ctx),
                    config["n_generations"], target.image_shape,
                    registry.get("extractors", cell.attack.extractor.name).describe())
            candidates01 = to_unit(candidates.images)  # what rankers, features and the gallery see
            with timer("rankers"):  # the attacker's own scores: candidates and model, no training set
                rankings = self._rankings(config, candidates01, target, ctx, meter)
            spent = cell_cost(meter, candidates.images)
        bands = [Band(**b) for b in config["bands"]]
        metrics = build_metrics(registry, config)
        who = {name: registry.get("metrics", (config.get("metric_components") or {}).get(name, name)).describe()
               for name in metrics}
        with timer("scoring"):
            ctx.progress("scoring", 0, 2)
            reference, reference_key = self._reference(config, data, features, ctx.device, planted)
            scores = reference.score(candidates01, bands, targets=candidates.targets)
            scores.ranker_scores = {name: values for name, (values, _) in rankings.items()}
            scores.ranker_thresholds = {name: threshold for name, (_, threshold) in rankings.items()}
            scores.draws = spent.pop("draw_of")
            rows = metric_rows(scores, {n: m for n, m in metrics.items() if not traits_of("metrics", m).needs_model},
                               bands, who)
        with timer("model-metrics"):
            rows += self._model_rows(model_key, metrics, who, target, data, ctx)
        with timer("scoring"):
            candidates_file = cell_file(cell.config_hash)
            # what each metric counts as a copy, stored so the page and compare need no plugin
            write_scores(Path(self.run_dir) / candidates_file, scores, seed=cell.seed, kind="candidates",
                         config_hash=cell.config_hash, copies=copy_decisions(scores, metrics, bands, who),
                         copy_default=default_copy_metric(metrics))
            ctx.progress("scoring", 1, 2)
        with timer("null"):
            null_rows, null_candidates_file = self._null(config, data, reference, reference_key, metrics, bands, who)
            ctx.progress("scoring", 2, 2)
        gallery = None
        with timer("gallery"):
            if cell.gallery_size > 0:  # the most similar candidates, for people to look at
                gallery = f"galleries/{cell.config_hash}.png"
                write_gallery(Path(self.run_dir) / gallery, candidates01, reference.train01,
                              torch.from_numpy(scores.best_similarity), torch.from_numpy(scores.nearest_index),
                              cell.gallery_size)
        diagnostics = {
            **(check_diagnostics(labelled.diagnostics, registry.get("conditions", cell.attack.condition.name)
                                 .describe()) if labelled is not None else {}),
            **candidates.diagnostics}
        hit = target_hit(candidates.targets, scores.nearest_index,
                         labelled.train_targets if labelled is not None else None)
        if hit is not None:
            diagnostics["target_hit"] = hit
        cell_fields = {
            "schema_version": ROW_SCHEMA_VERSION, "suite": cell.suite, "run_id": Path(self.run_dir).name,
            "scale": cell.scale, "seed": cell.seed, "attack": cell.attack.name,
            "attack_base": cell.attack.base or cell.attack.name, "swept": cell.attack.swept,
            "condition": cell.attack.condition.name, "extractor": cell.attack.extractor.name,
            "condition_settings": cell.attack.condition.settings,
            "extractor_settings": cell.attack.extractor.settings,
            "features": config["features"]["name"], "features_identity": features.identity,
            "dataset": config["dataset"], "model": config["model"], "model_key": model_key,
            "target_model": target_model,
            "n_generations": scores.n_candidates, "n_null": len(data.heldout), "n_train": len(data.train),
            "config_hash": cell.config_hash, "seconds": round(time.perf_counter() - started, 3),
            "stage_seconds": timer.seconds, "device": describe_device(self.device),
            # provenance: every installed version where the cell ran, the config's (hashed) ones as it holds them
            "versions": {**versions(), **config["versions"]},
            "plugins": config.get("plugins", {}), "diagnostics": diagnostics, "gallery": gallery,
            "candidates_file": candidates_file, "null_candidates_file": null_candidates_file,
            "hits_truncated": scores.hits_truncated, "cost": spent,
            **attack_fields(traits_of("conditions", condition), traits_of("extractors", extractor),
                            {name: registry.get("rankers", name).traits for name in rankings},
                            diagnostics),
        }
        return cell_rows(cell_fields, rows, null_rows, {n: traits_of("metrics", m) for n, m in metrics.items()},
                         config.get("metric_settings", {}))

    def model_of(self, cell: Cell) -> str | None:
        """A key naming the target model the cell trains or loads, from its config alone (the
        cache key needs the loaded data): cells with one key share one model. The local
        executor hands out one cell per model until the model is ready (``ModelQueue``), so
        that no worker waits on a model another is training. None when the cell's condition
        cannot be built here (its failure is the cell's, when it runs)."""
        config = cell.config
        try:
            condition = self.registry.build("conditions", cell.attack.condition.name, cell.attack.condition.settings)
            labels = condition.training_key()
        except Exception:  # noqa: BLE001 - the cell reports it when it runs
            return None
        spec = canaries.spec_from_config(config)
        return canonical_hash({"dataset": config["dataset"], "scale": config["scale"], "seed": [config["seed"], cell.seed],
                               "canaries": spec.as_config() if spec else None, "labels": labels,
                               "model": cell_model(config), "device": config.get("device")})

    def _target(self, cell: Cell, data, condition, ctx: RunContext):
        """The trained (or cached, or loaded) target model, its cache key and its identity for
        the rows (its files' sha256; and the pack's, from a shared-targets pack)."""
        from side_bench.run import targets
        config = cell.config
        spec = cell_model(config)  # [model] per_scale: this scale's settings
        model = self.registry.build("models", spec["name"], spec["settings"])
        labels = condition.training_labels(data, cell.seed)
        model_key = targets.model_key(data.identity, condition.training_key(), spec, ctx.device.type,
                                      config["versions"])
        if self.targets is not None:  # the pack's model: its key names the weights, not this machine's
            target, model_key, target_model = targets.load_target(
                self.targets, self.registry, spec, data, labels, condition.training_key(), config, ctx)
        else:
            target = model.prepare(data, labels, model_key, ctx)
            target_model = targets.cache_identity(ctx.cache_dir, target, model_key)
        condition.check_target(target)
        # model-level metrics need the labels the target was trained with (random ones for 'random')
        self._target_labels[model_key] = labels.labels if labels is not None else None
        return target, model_key, target_model

    def _features(self, config: dict):
        """The feature extractor, built once per run (SSCD loads and hashes its weights once)."""
        key = canonical_hash(config["features"])
        if key not in self._built_features:
            spec = config["features"]
            self._built_features[key] = self.registry.build("features", spec["name"], spec["settings"])
        return self._built_features[key]

    def _rankings(self, config: dict, candidates01, target, ctx: RunContext, meter: cost.Meter) -> dict:
        """{ranker name: (scores, threshold)} for the suite's rankers (none by default); each
        ranker's cost counted apart (``meter``: the cell's cost meter)."""
        rankings = {}
        for spec in config.get("rankers", []):
            registration = self.registry.get("rankers", spec["name"])
            ranker = self.registry.build("rankers", spec["name"], spec.get("settings", {}))
            with meter.stage(f"ranker:{registration.name}"):
                result = ranker.score(candidates01, target, ctx)
            rankings[registration.name] = check_ranking(result, len(candidates01), registration.describe())
        return rankings

    def _model_rows(self, model_key: str, metrics: dict, who: dict, target, data, ctx: RunContext) -> list[dict]:
        """Rows of model-level metrics (``needs_model``), computed once per target model.

        They measure the model, not the attack's candidates: every attack on one model shares
        them; the null baseline has none (its scores carry no model).
        """
        rows = []
        for name, metric in metrics.items():
            if not traits_of("metrics", metric).needs_model:
                continue
            key = canonical_hash([model_key, name, getattr(metric, "settings", None).__repr__(), ctx.seed])
            if key not in self._model_metric_rows:
                model = ModelContext(target=target, train=data.train, ctx=ctx,
                                     train_labels=self._target_labels.get(model_key), heldout=data.heldout)
                self._model_metric_rows[key] = model_metric_rows(model, {name: metric}, who)
            rows += self._model_metric_rows[key]
        return rows

    def _reference(self, config: dict, data, features, device, planted: dict[int, int] | None = None):
        """The training set's features and index, built once per scale (the canaries are in
        ``data.identity``, so in the key)."""
        reference_key = canonical_hash([data.identity, features.identity, config["knn"]])
        if reference_key not in self._references:
            self._references[reference_key] = Reference(to_unit(data.train), features, backend=config["knn"],
                                                        device=device, canaries=planted)
        return self._references[reference_key], reference_key

    def _null(self, config: dict, data, reference, reference_key: str, metrics: dict, bands: list[Band],
              who: dict[str, str]):
        """The null baseline: the held-out images scored like candidates, once per scale.

        It depends on the scale's data, features, metrics and bands, not on the attack; its
        per-image records are written once per run folder.
        """
        null_key = canonical_hash([reference_key, config["metrics"], config.get("metric_settings"), config["bands"]])
        if null_key not in self._null_rows:
            scores = reference.score(to_unit(data.heldout), bands)
            path = null_file(null_key)
            if not (Path(self.run_dir) / path).exists():
                write_scores(Path(self.run_dir) / path, scores, seed=config["seed"], kind="null", config_hash=None)
            self._null_rows[null_key] = (metric_rows(scores, metrics, bands, who), path)
        return self._null_rows[null_key]


class StageTimer:
    """Wall seconds per named stage of a cell, in the order they ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - started, 3)


def cell_cost(meter, images) -> dict:
    """The row's ``cost`` (side_bench/cost.py ``Meter.record``), and under ``draw_of`` which
    draw made each candidate (None: candidate i was draw i + 1, or it could not be told). The
    attacker's seconds are the row's ``stage_seconds`` (condition, extraction, rankers)."""
    import numpy as np

    draws = meter.draw_of(images)
    record = meter.record(len(images), draws)
    ordered = draws is None or np.array_equal(np.asarray(draws), np.arange(1, len(images) + 1))
    return {**record, "draw_of": None if ordered else np.asarray(draws, dtype=np.int64)}


def target_hit(targets, nearest_index, train_targets) -> dict | None:
    """Share of guided candidates whose nearest training image carries their target, with its interval."""
    if targets is None or train_targets is None:
        return None
    from side_bench.sampling.classifier import target_hit_rate

    hits, n = target_hit_rate(targets, nearest_index, train_targets)
    value = stats.rate(hits, n)
    return {"count": hits, "n": n, "value": value.value, "ci_low": value.ci_low, "ci_high": value.ci_high}


def build_metrics(registry: Registry, config: dict) -> dict:
    """The cell's metrics by name, each built with the suite's settings for it."""
    settings = config.get("metric_settings") or {}
    components = config.get("metric_components") or {}  # a metric id -> the registered metric
    return {name: registry.build("metrics", components.get(name, name), settings.get(name, {}))
            for name in config["metrics"]}




def run_suite(suite: str = "quickstart", *, device: str = "cpu", results_dir: str | Path = "results",
              cache_dir: str | Path | None = None, executor: str = "local", run_id: str | None = None,
              fail_fast: bool = False, progress: Callable[[str, int, int], None] | None = None,
              on_cell: Callable[[Cell, dict], None] | None = None,
              executor_settings: dict | None = None, poll_seconds: float = 0.5,
              threads: int | None = 1, workers: int | str = 1, targets: str | Path | None = None) -> pd.DataFrame:
    """Run a suite (a registered name or a TOML path); return all its rows as a DataFrame.

    Cells already done in the run folder are skipped. ``progress(stage, done, total)`` gets
    training, sampling and scoring progress; ``on_cell(cell, record)`` each finished cell.
    ``executor_settings`` is the executor's settings table (e.g. {"address": ...} for ray).
    ``threads``: torch threads on CPU (default 1: on a shared 2-core machine one thread was
    measured 15-40x faster than two at sampling; 0 or None: leave torch's setting).
    ``workers``: processes of the local executor, each computing whole cells with ``threads``
    threads (the rows are bit-identical to one worker's); 0: one per CPU core; "auto" (the
    CLI's default): one per core where more than one cell is left to run on CPU, else one.
    ``targets``: a shared-targets pack (``export_targets``): every cell attacks the pack's model
    for its data, labels and model settings, never training one; checked before any cell runs.

    Several processes may run the same suite into the same folder: each claims a cell (a lock
    file) before computing it, so every cell is computed once, and a process waits for the
    cells another live process holds (a dead one's locks are taken over).
    """
    prepared = prepare_run(suite, device=device, results_dir=results_dir, run_id=run_id, targets=targets,
                           executor=executor, executor_settings=executor_settings, workers=workers, threads=threads)
    return run_prepared(prepared, cache_dir=cache_dir, fail_fast=fail_fast, progress=progress, on_cell=on_cell,
                        poll_seconds=poll_seconds)


def run_prepared(prepared: PreparedRun, *, cache_dir: str | Path | None = None, fail_fast: bool = False,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_cell: Callable[[Cell, dict], None] | None = None, poll_seconds: float = 0.5) -> pd.DataFrame:
    """Run a prepared run (``prepare_run`` with an executor, or ``for_executor``): the manifest,
    then every cell not done yet; return all its rows. What ``run_suite`` does after preparing."""
    if prepared.executor_obj is None:
        raise ValueError("run_prepared: this run was prepared without an executor (as a dry run is); use for_executor")
    suite_obj, cells, store, registry = prepared.suite, prepared.cells, prepared.store, prepared.registry
    device, threads, targets, executor_obj = prepared.device, prepared.threads, prepared.targets, prepared.executor_obj
    if threads and torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    previous = store.read_manifest() or {}
    manifest = {
        "suite": suite_obj.name, "suite_path": suite_obj.path, "config": suite_obj.raw,
        "run_id": store.run_dir.name, "device": device, "executor": prepared.executor,
        "versions": versions(), "git_commit": git_commit(), "machine": platform.platform(),
        "hardware": describe_device(device), "torch_threads": torch.get_num_threads(),
        "started": previous.get("started", now()), "finished": None,
        "cells": [{"config_hash": c.config_hash, "scale": c.scale, "attack": c.attack.name,
                   "seed": c.seed} for c in cells],
    }
    store.write_manifest(manifest)
    runner = CellRunner(device=device, cache_dir=str(cache_dir or default_cache_dir()),
                        run_dir=str(store.run_dir), progress=progress or no_progress, _registry=registry,
                        targets=str(Path(targets).resolve()) if targets is not None else None)
    by_hash = {c.config_hash: c for c in cells}
    attempted: set[str] = set()  # a cell that fails here is not retried in this run

    def on_done(record: dict) -> None:
        store.write_cell(record)
        if on_cell:
            on_cell(by_hash[record["config_hash"]], record)
        if fail_fast and record["status"] == "failed":
            raise CellFailed(record)

    # Rounds: claim as many free cells as the executor runs at once, run them, repeat; when
    # the only cells left are held by another live process, wait for them.
    parallelism = getattr(executor_obj, "parallelism", None)
    try:
        while True:
            todo = [c for c in cells if c.config_hash not in attempted and not store.is_done(c.config_hash)]
            if not todo:
                break
            mine = []
            for cell in todo:
                if parallelism is not None and len(mine) >= parallelism:
                    break
                if store.claim(cell.config_hash):
                    if store.is_done(cell.config_hash):  # finished by another process just now
                        store.release(cell.config_hash)
                        continue
                    mine.append(cell)
            if not mine:
                time.sleep(poll_seconds)
                continue
            attempted.update(c.config_hash for c in mine)
            executor_obj.run(mine, runner, on_done)
    finally:
        store.release_all()  # interrupted or failed: let a rerun (or another process) take them
    store.write_manifest({**manifest, "finished": now()})
    return pd.DataFrame(store.rows())


def stage_profile(records: list[dict]) -> list[dict]:
    """Where a run's time went: per stage, its seconds summed over the given finished cells
    (cell records or rows; a cell counted once), its share of the total and the cells that
    spent more than a millisecond on it, slowest stage first. Stages that ran once per scale
    or model (data, target, null) are charged to the cell that ran them."""
    totals: dict[str, float] = {}
    cells: dict[str, int] = {}
    seen: set[str] = set()
    for record in records:
        row = (record.get("rows") or [record])[0] if "rows" in record else record
        key = record.get("config_hash") or row.get("config_hash")
        stages = row.get("stage_seconds") or {}
        if not stages or key in seen:
            continue
        seen.add(key)
        for stage, seconds in stages.items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
            cells[stage] = cells.get(stage, 0) + (float(seconds) > 0.001)
    whole = sum(totals.values()) or 1.0
    return [{"stage": stage, "seconds": round(seconds, 3), "share": seconds / whole, "cells": cells[stage]}
            for stage, seconds in sorted(totals.items(), key=lambda item: -item[1])]


class CellFailed(Exception):
    """Raised under --fail-fast when a cell fails; carries the cell's failure record."""

    def __init__(self, record: dict):
        super().__init__(f"cell {record['attack']} @ {record['scale']} (seed {record['seed']}) failed: {record['error']}")
        self.record = record


def score_arrays(generated, train, heldout=None, **options) -> pd.DataFrame:
    """Score images made elsewhere: arrays (N, C, H, W) with values in [0, 1].

    Returns one row per metric (x band): metric, band, band_low, band_high, value, and
    null_value when ``heldout`` is given. Options: features, feature_settings (the features'
    settings table, as in a suite: ``{"path": "/x/sscd.torchscript.pt"}``, checked against its
    Settings), metrics, bands, knn, device.
    """
    return pd.DataFrame(score_rows(generated, train, heldout, **options))


def score_rows(generated, train, heldout=None, *, features: str = "pixel",
               feature_settings: dict[str, Any] | None = None,
               metrics: tuple[str, ...] = ("ams", "ums", "p95", "gu-ratio"),
               bands: dict[str, list[float]] | None = None, knn: str = "auto",
               device: str = "cpu", where: str = "feature_settings") -> list[dict]:
    """``score_arrays`` as a list of plain dicts (band None for metrics without bands).

    ``where`` names the settings in error messages (the CLI passes its option)."""
    from side_bench.scoring.images import as_unit_tensor
    from side_bench.scoring.scores import make_bands

    if feature_settings is not None and not isinstance(feature_settings, dict):
        raise BenchError(f"{where}: expected a table (dict) of settings, got {feature_settings!r}")
    registry = load_registry()
    registry.get("features", features)  # an unknown name is the name's error, not the settings'
    features_obj = registry.build("features", features, feature_settings or {}, where)
    generated = as_unit_tensor(generated, "generated")
    train = as_unit_tensor(train, "train")
    if train.shape[1:] != generated.shape[1:]:
        raise BenchError(f"train: images of shape {tuple(train.shape[1:])}, generated {tuple(generated.shape[1:])}")
    band_list = make_bands(bands or {k: list(v) for k, v in features_obj.default_bands.items()}, "bands")
    metric_objs = {registry.get("metrics", m, "metrics").name: registry.build("metrics", m, {}) for m in metrics}
    reference = Reference(train, features_obj, backend=knn, device=resolve_device(device))
    rows = score_images(generated, reference, metric_objs, band_list)
    if heldout is not None:
        heldout = as_unit_tensor(heldout, "heldout")
        if heldout.shape[1:] != train.shape[1:]:
            raise BenchError(f"heldout: images of shape {tuple(heldout.shape[1:])}, train {tuple(train.shape[1:])}")
        rows = with_null(rows, score_images(heldout, reference, metric_objs, band_list))
    for row in rows:
        row.update(features=features, n_generations=len(generated), n_train=len(train))
    return rows
