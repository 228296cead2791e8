"""Hand-made result rows and run folders for the leaderboard tests (no model is trained)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_row(**changes) -> dict:
    """A valid schema-2 row (ams, band mid [0.9, 0.95)); ``changes`` override fields.

    A rate gets the count behind it (value x N_G, null_value x n_null) and its Wilson
    interval, as the runner writes them, unless ``changes`` give them.
    """
    row = {
        "schema_version": 2, "suite": "hand", "run_id": "run-hand", "scale": 16, "seed": 0,
        "attack": "uncond", "condition": "none", "extractor": "sample",
        "condition_settings": {}, "extractor_settings": {"ddim_steps": 4},
        "features": "pixel", "features_identity": {"extractor": "pixel"},
        "dataset": {"name": "digits", "settings": {"image_size": 8}},
        "model": {"name": "bench-unet", "settings": {"steps": 10}},
        "metric": "ams", "band": "mid", "band_low": 0.9, "band_high": 0.95,
        "value": 0.1, "null_value": 0.0, "n_generations": 100, "n_null": 100, "n_train": 16,
        "seconds": 1.0, "device": "cpu", "versions": {"side-bench": "0.1.0"}, "gallery": None,
        "direction": "higher", "unit": "rate",
    }
    row.update(changes)
    if row["unit"] == "rate" and isinstance(row["value"], float) and isinstance(row["n_generations"], int) \
            and "count" not in changes:
        row.update(_counted(row["value"], row["n_generations"]))
    if row["unit"] == "rate" and isinstance(row["null_value"], float) and "null_count" not in changes:
        row.update({f"null_{k}": v for k, v in _counted(row["null_value"], row["n_null"]).items() if k != "value"})
    if "config_hash" not in changes:  # one cell = one (setup, attack, scale, seed)
        row["config_hash"] = (f"{row['suite']}-{row['attack']}-{row['scale']}-{row['seed']}-"
                              f"{row['n_generations']}-{row['band_low']}")
    return row


def _counted(value: float, n: int) -> dict:
    from side_bench.scoring.stats import wilson

    count = round(value * n)
    low, high = wilson(count, n)
    return {"count": count, "n": n, "ci_low": low, "ci_high": high, "interval": "wilson"}


def write_run(run_dir: Path, rows: list[dict], *, manifest: dict | None = None) -> Path:
    """A run folder: rows.jsonl and a manifest (valid unless ``manifest`` says otherwise)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if manifest is None:
        manifest = {"schema_version": 1, "suite": rows[0]["suite"], "run_id": rows[0]["run_id"],
                    "config": {"name": rows[0]["suite"]}, "started": "2026-01-01T00:00:00+00:00",
                    "finished": None, "cells": []}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def write_gallery(run_dir: Path, config_hash: str) -> str:
    """A small PNG grid where the runner puts one; returns its path relative to the run folder."""
    relative = f"galleries/{config_hash}.png"
    (run_dir / "galleries").mkdir(parents=True, exist_ok=True)
    pixels = (np.indices((64, 128)).sum(axis=0) % 2 * 255).astype(np.uint8)  # a checkerboard
    Image.fromarray(pixels).save(run_dir / relative)
    return relative


def two_attacks_two_seeds() -> list[dict]:
    """The rows whose leaderboard the tests check by hand (ams, band mid, N_G = 100, 100 held out).

    scale 16: uncond 0.10, 0.20 (mean 0.15, std 0.0707; pooled 30/200); side 0.30, 0.50 (mean
              0.40, std 0.1414; pooled 80/200); null 0.01, 0.03 (pooled 4/200). Fisher: side >
              uncond (p ~ 1e-8), both above the null.
    scale 64: uncond 0.05, 0.05 (pooled 10/200); side 0.02, 0.04 (6/200): not significantly
              different (Fisher p ~ 0.45), so they share rank 1 and neither is starred; null 0/200.
    """
    values = {
        (16, "uncond"): (0.10, 0.20), (16, "side"): (0.30, 0.50),
        (64, "uncond"): (0.05, 0.05), (64, "side"): (0.02, 0.04),
    }
    nulls = {16: (0.01, 0.03), 64: (0.0, 0.0)}
    rows = []
    for (scale, attack), pair in values.items():
        for seed, value in enumerate(pair):
            condition = "surrogate" if attack == "side" else "none"
            rows.append(make_row(scale=scale, attack=attack, seed=seed, value=value, condition=condition,
                                 null_value=nulls[scale][seed]))
    return rows
