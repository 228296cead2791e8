"""Rescoring: every metric again, from a run's per-candidate records, into a new run folder.

Nothing is sampled or trained. With the bands and metrics of the original run the rows come
out exactly as they were (the metrics read the same stored float32 values); with other bands
or metrics they equal what a fresh run with those settings gives. The original folder is
never written to. Each cell's per-candidate records are copied with the copy decisions of the
metrics and bands as rescored (``results/candidates.py``, version 3; a version-1 table is
copied as it was).

What cannot be recomputed from the records, and is refused with a message saying so:
UMS for a band whose low edge is below the lowest edge the run was scored with (training
images below it were not kept), Carlini's l2 with another ``neighbours`` than the 50 kept,
and model-level metrics (``needs_model``: they need the target model, not the candidates).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from side_bench.errors import BenchError
from side_bench.registry import traits_of
from side_bench.results.candidates import load_scores, rewrite_copies
from side_bench.results.records import (
    METRIC_FIELDS,
    ROW_SCHEMA_VERSION,
    cell_rows,
    find_rows_files,
    read_cell_record,
    read_manifest,
    read_rows_file,
)
from side_bench.results.store import RunStore, write_json
from side_bench.run.suite import canonical_hash
from side_bench.scoring.rows import copy_decisions, default_copy_metric, metric_rows
from side_bench.scoring.scores import Band, make_bands


def parse_bands(specs: list[str] | tuple[str, ...], where: str = "--bands") -> dict[str, list[float]]:
    """``["low=0.85,0.9", "high=0.95,1"]`` -> {"low": [0.85, 0.9], "high": [0.95, 1.0]}."""
    table = {}
    for spec in specs:
        name, sep, edges = spec.partition("=")
        parts = edges.split(",")
        try:
            if not sep or not name or len(parts) != 2:
                raise ValueError
            table[name.strip()] = [float(parts[0]), float(parts[1])]
        except ValueError:
            raise BenchError(f"{where}: {spec!r}: expected NAME=LOW,HIGH (e.g. high=0.95,1.0)") from None
    return table


def rescore_run(run_dir: str | Path, *, bands: dict[str, list[float]] | None = None,
                metrics: list[str] | None = None, out: str | Path | None = None, registry=None) -> Path:
    """Recompute the metrics of the run in ``run_dir`` into a new run folder; return its path.

    ``bands`` (``{"name": [low, high]}``) and ``metrics`` (names) default to the run's own.
    ``out`` defaults to ``<run_dir>-rescored-<hash of bands and metrics>`` beside it; it must
    not exist yet.
    """
    from side_bench.registry import load_registry

    registry = registry or load_registry()
    run_dir = Path(run_dir)
    rows_files = find_rows_files([run_dir])
    if len(rows_files) != 1 or rows_files[0].parent != run_dir.resolve():
        raise BenchError(f"{run_dir}: expected one run folder (with its rows.jsonl), found {len(rows_files)} runs")
    rows = read_rows_file(rows_files[0])
    manifest = read_manifest(run_dir) or {}
    band_list = make_bands(bands, "--bands") if bands is not None else None
    for name in metrics or []:
        registry.get("metrics", name, "--metrics")
    out = Path(out) if out is not None else run_dir.parent / (
        f"{run_dir.name}-rescored-{canonical_hash([bands, metrics])[:8]}")
    if out.resolve() == run_dir.resolve() or out.exists():
        raise BenchError(f"--out: {out} exists; rescoring writes a new run folder and never overwrites one")

    cells: dict[str, list[dict]] = {}
    for row in rows:
        cells.setdefault(row["config_hash"], []).append(row)
    records = [_rescore_cell(run_dir, cell_rows, band_list, metrics, registry, out.name)
               for cell_rows in cells.values()]

    temporary = out.parent / f".{out.name}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    store = RunStore(temporary)
    for record in records:
        copies, copy_default = record.pop("_copies")
        for relative in {r.get(k) for r in record["rows"] for k in ("candidates_file", "null_candidates_file", "gallery")}:
            if relative and (run_dir / relative).is_file() and not (temporary / relative).exists():
                (temporary / relative).parent.mkdir(parents=True, exist_ok=True)
                # the cell's records with the copy decisions of the metrics and bands as rescored
                if relative != record["rows"][0].get("candidates_file") or \
                        not rewrite_copies(run_dir / relative, temporary / relative, copies, copy_default):
                    shutil.copy2(run_dir / relative, temporary / relative)
        write_json(store.cells_dir / f"{record['config_hash']}.json", record)
    store.write_rows()
    write_json(temporary / "manifest.json", {
        **manifest, "run_id": out.name, "schema_version": manifest.get("schema_version", 1),
        "rescored_from": str(run_dir), "rescore": {"bands": bands, "metrics": metrics},
        "cells": [{"config_hash": r["config_hash"], "scale": r["scale"], "attack": r["attack"], "seed": r["seed"]}
                  for r in records],
    })
    temporary.rename(out)  # the new folder appears whole or not at all
    return out


def _rescore_cell(run_dir: Path, rows: list[dict], bands: list[Band] | None, metric_names: list[str] | None,
                  registry, run_id: str) -> dict:
    first = rows[0]
    where = f"{run_dir}: cell {first['config_hash'][:12]} ({first['attack']} @ {first['scale']})"
    if not first.get("candidates_file") or not first.get("null_candidates_file"):
        raise BenchError(f"{where}: no per-candidate records (written before side-bench kept them); run it again")
    record = read_cell_record(run_dir, first["config_hash"]) or {}
    config = record.get("config")
    if bands is None:
        bands = _bands_of(rows, config)
    names = metric_names or (config or {}).get("metrics") or list(dict.fromkeys(r["metric"] for r in rows))
    settings = (config or {}).get("metric_settings") or {}
    components = (config or {}).get("metric_components") or {}
    metrics = {name: registry.build("metrics", components.get(name, name), settings.get(name, {})) for name in names}
    who = {name: registry.get("metrics", components.get(name, name)).describe() for name in metrics}
    model_level = [name for name, metric in metrics.items() if traits_of("metrics", metric).needs_model]
    if model_level and bands is not None and metric_names:
        raise BenchError(f"--metrics: {', '.join(model_level)} need the target model; rescore cannot recompute them")
    recomputable = {name: metric for name, metric in metrics.items() if name not in model_level}
    try:
        scores = load_scores(run_dir / first["candidates_file"])
        null_scores = load_scores(run_dir / first["null_candidates_file"])
        fresh = metric_rows(scores, recomputable, bands, who)
        fresh_null = metric_rows(null_scores, recomputable, bands, who)
        copies = (copy_decisions(scores, recomputable, bands, who), default_copy_metric(metrics))
    except BenchError as error:
        raise BenchError(f"{where}: {error}") from None
    kept = [r for r in rows if r["metric"] in model_level]  # copied as they were
    cell_fields = {k: v for k, v in first.items() if k not in METRIC_FIELDS}
    new_rows = cell_rows(cell_fields, fresh, fresh_null, {n: traits_of("metrics", m) for n, m in metrics.items()},
                         settings) + \
        [{**cell_fields, **{k: r.get(k) for k in METRIC_FIELDS}} for r in kept]
    config_hash = first["config_hash"]
    if config is not None:
        config = {**config, "bands": [{"name": b.name, "low": b.low, "high": b.high} for b in bands],
                  "metrics": names}
        config_hash = canonical_hash(config)
    for row in new_rows:
        row.update(config_hash=config_hash, run_id=run_id, schema_version=ROW_SCHEMA_VERSION)
    order = {name: i for i, name in enumerate(names)}
    new_rows.sort(key=lambda r: (order[r["metric"]], r["band_low"] if r["band_low"] is not None else -1))
    return {**{k: v for k, v in record.items() if k != "rows"}, "config_hash": config_hash, "config": config,
            "scale": first["scale"], "seed": first["seed"], "attack": first["attack"], "status": "done",
            "rows": new_rows, "rescored_from": first["config_hash"], "_copies": copies}


def _bands_of(rows: list[dict], config: dict | None) -> list[Band]:
    if config is not None and config.get("bands") is not None:
        return [Band(**b) for b in config["bands"]]
    found = {(r["band"], r["band_low"], r["band_high"]) for r in rows if r["band"] is not None}
    return sorted((Band(name, low, high) for name, low, high in found), key=lambda b: b.low)
