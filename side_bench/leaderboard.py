"""The leaderboard: result rows -> per metric and band, a table of attack x scale.

Each cell of the table is the mean and standard deviation over seeds, next to the null
baseline (the metric on held-out real images) of that scale, with the rank of each attack
at that scale and the best one marked.

Rows are only ever averaged with rows of the same *setup*: suite, data set, model, feature
extractor and N_G (n_generations), and the same band (name and edges). UMS is comparable
only at equal N_G, and a band with other edges measures something else; such rows are shown
apart, each setup in its own tables. A pure function of the result files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from side_bench.errors import BenchError
from side_bench.result_files import find_rows_files, read_cell_record, read_manifest, read_rows_file

# Metrics where a smaller value means more memorization; every other metric ranks high-first.
LOWER_IS_BETTER = frozenset({"memorization-divergence"})
# Metrics that are fractions in [0, 1]; displays show them in percent.
RATE_METRICS = frozenset({"ams", "ums", "gu-ratio", "carlini-l2"})

SETUP_COLUMNS = ["setup", "suite", "dataset", "model", "features", "n_generations"]
BAND_COLUMNS = ["band", "band_low", "band_high"]
SWEPT_NAME = re.compile(r"^(?P<base>.+)\[(?P<settings>[^\[\]]+=[^\[\]]*)\]$")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short_hash(value) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:6]


def parse_swept(attack: str, condition_settings: dict, extractor_settings: dict) -> tuple[str, dict]:
    """``side[guidance_scale=2.0]`` -> ("side", {"guidance_scale": 2.0}); no sweep -> (attack, {}).

    The values come from the row's settings (typed), the names from the attack's name.
    """
    match = SWEPT_NAME.match(attack)
    if not match:
        return attack, {}
    swept = {}
    for part in match["settings"].split(","):
        key, sep, text = part.partition("=")
        if not sep or not key:
            return attack, {}
        if key in extractor_settings:
            swept[key] = extractor_settings[key]
        elif key in condition_settings:
            swept[key] = condition_settings[key]
        else:
            swept[key] = text
    return match["base"], swept


def _gallery_path(run_dir: Path, row: dict) -> str | None:
    """The cell's gallery PNG (from the row, else the cell record) if the file exists."""
    relative = row.get("gallery")
    if not relative:
        record = read_cell_record(run_dir, row["config_hash"]) or {}
        relative = record.get("gallery")
    if not isinstance(relative, str) or not relative:
        return None
    path = (run_dir / relative).resolve()
    # Only a PNG inside the run folder: a result file must not make us copy files from elsewhere.
    inside = path.is_relative_to(run_dir.resolve())
    return str(path) if inside and path.suffix.lower() == ".png" and path.is_file() else None


def load_rows(results: Iterable[str | Path] | str | Path) -> pd.DataFrame:
    """All rows under run folders, suite folders or results roots, validated, one per line.

    Adds ``setup`` (a label of what may be averaged together), ``attack_base`` and ``swept``
    (the swept settings of an attack like ``side[guidance_scale=2.0]``), ``run_dir`` and
    ``gallery_path`` (absolute, None when the run has no gallery for the cell). The same
    cell (config hash) found twice, e.g. in a copy of a run, is kept once.
    """
    if isinstance(results, (str, Path)):
        results = [results]
    records = []
    for rows_file in find_rows_files(results):
        run_dir = rows_file.parent
        read_manifest(run_dir)  # validate it when present; the rows carry what the tables need
        for row in read_rows_file(rows_file):
            base, swept = parse_swept(row["attack"], row.get("condition_settings") or {},
                                      row.get("extractor_settings") or {})
            records.append({**row, "attack_base": base, "swept": swept, "run_dir": str(run_dir),
                            "gallery_path": _gallery_path(run_dir, row)})
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    frame = frame.drop_duplicates(subset=["config_hash", "metric", "band"], keep="first").reset_index(drop=True)
    frame["setup"] = _setup_labels(frame)
    frame["dataset"] = [(d or {}).get("name", "") if isinstance(d, dict) else str(d or "") for d in frame["dataset"]]
    frame["model"] = [(m or {}).get("name", "") if isinstance(m, dict) else str(m or "") for m in frame["model"]]
    return frame


def _setup_labels(frame: pd.DataFrame) -> list[str]:
    """A readable label per row; rows that differ in anything averaging must respect differ here.

    When two setups would read the same (e.g. the same suite name run with other model
    settings), a short hash of their full data set, model and feature identity tells them apart.
    """
    dataset_names = [d.get("name", "") if isinstance(d, dict) else str(d or "") for d in frame["dataset"]]
    readable = [f"{s} | {d} | {f} | N_G={n}" for s, d, f, n in
                zip(frame["suite"], dataset_names, frame["features"], frame["n_generations"], strict=True)]
    identity_columns = [c for c in ("dataset", "model", "features_identity") if c in frame]
    identities = [_short_hash([frame.at[i, c] for c in identity_columns]) for i in frame.index]
    seen: dict[str, set[str]] = {}
    for label, identity in zip(readable, identities, strict=True):
        seen.setdefault(label, set()).add(identity)
    return [label if len(seen[label]) == 1 else f"{label} #{identity}"
            for label, identity in zip(readable, identities, strict=True)]


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows -> one line per setup x metric x band x attack x scale.

    Columns: the setup columns, metric, band, band_low, band_high, attack, attack_base, swept
    (JSON text), scale, n_seeds, mean, std (over seeds; NaN with one seed), null_mean,
    null_std, rank (1 = most memorization at that scale; ties share the better rank) and best
    (rank 1).
    """
    if rows.empty:
        return pd.DataFrame()
    work = rows.copy()
    # pandas drops None from group keys; a metric without bands (p95) gets "" while grouping.
    for column in BAND_COLUMNS:
        work[column] = work[column].astype(object).where(work[column].notna(), "")
    work["swept"] = [_canonical(s) if s else "" for s in work["swept"]]
    work["null_value"] = pd.to_numeric(work["null_value"], errors="coerce")
    keys = SETUP_COLUMNS + ["metric"] + BAND_COLUMNS + ["attack", "attack_base", "swept", "scale"]
    table = (work.groupby(keys, sort=False, dropna=False)
             .agg(n_seeds=("seed", "nunique"), mean=("value", "mean"), std=("value", "std"),
                  null_mean=("null_value", "mean"), null_std=("null_value", "std"))
             .reset_index())
    per_scale = SETUP_COLUMNS + ["metric"] + BAND_COLUMNS + ["scale"]
    ascending = table["metric"].isin(LOWER_IS_BETTER)
    ranking_value = table["mean"].where(ascending, -table["mean"])
    table["rank"] = ranking_value.groupby([table[c] for c in per_scale], sort=False).rank(method="min")
    table["rank"] = table["rank"].astype("Int64")
    table["best"] = table["rank"] == 1
    table["best"] = table["best"].fillna(False).astype(bool)
    table["band"] = table["band"].astype(object).where(table["band"] != "", None)
    for column in ("band_low", "band_high"):
        table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    table = table.sort_values(["setup", "metric", "band_low", "band", "scale", "rank", "attack"],
                              na_position="first", kind="stable")
    return table.reset_index(drop=True)


def build_leaderboard(results: Iterable[str | Path] | str | Path, *, metric: str | None = None,
                      band: str | None = None) -> pd.DataFrame:
    """The leaderboard frame of the result files under ``results`` (see ``aggregate``).

    ``metric`` and ``band`` keep only that metric / band name.
    """
    return aggregate(select(load_rows(results), metric=metric, band=band))


def select(rows: pd.DataFrame, *, metric: str | None = None, band: str | None = None) -> pd.DataFrame:
    """Only the rows of one metric and/or band; an unknown name is a user error."""
    if rows.empty:
        return rows
    if metric is not None:
        if metric not in set(rows["metric"]):
            raise BenchError(f"--metric: no rows for {metric!r} (found: {', '.join(sorted(set(rows['metric'])))})")
        rows = rows[rows["metric"] == metric]
    if band is not None:
        names = sorted({b for b in rows["band"] if isinstance(b, str)})
        if band not in names:
            raise BenchError(f"--band: no rows for {band!r} (found: {', '.join(names) or 'no banded metrics'})")
        rows = rows[rows["band"] == band]
    return rows.reset_index(drop=True)


def band_label(band: str | None, low, high) -> str:
    """'low [0.85, 0.9)', or '' for metrics without bands; a top edge of 1.0 is closed."""
    if band is None or band == "":
        return ""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return str(band)
    closing = "]" if float(high) >= 1.0 else ")"
    return f"{band} [{low:g}, {high:g}{closing}"


def groups(table: pd.DataFrame):
    """Yield (setup, metric, band label, sub-frame) in display order: one table each."""
    if table.empty:
        return
    keys = ["setup", "metric", "band", "band_low", "band_high"]
    for _, part in table.groupby([table[k].astype(str) for k in keys], sort=False, dropna=False):
        first = part.iloc[0]
        yield first["setup"], first["metric"], band_label(first["band"], first["band_low"], first["band_high"]), part


def wide(part: pd.DataFrame) -> tuple[list[int], list[str], dict, dict]:
    """One group -> (scales, attacks in order of mean rank, {(attack, scale): line}, {scale: null line})."""
    scales = sorted(part["scale"].unique())
    order = part.groupby("attack", sort=False)["rank"].mean().sort_values(kind="stable")
    attacks = list(order.index)
    cells = {(line.attack, line.scale): line for line in part.itertuples(index=False)}
    nulls = {}
    for scale in scales:
        at_scale = part[part["scale"] == scale]
        nulls[scale] = at_scale.iloc[0]
    return scales, attacks, cells, nulls


def format_value(metric: str, value) -> str:
    """Rates in percent (two decimals), other metrics with four decimals; missing -> ''."""
    if value is None or pd.isna(value):
        return ""
    if metric in RATE_METRICS:
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def format_cell(metric: str, mean, std, n_seeds) -> str:
    text = format_value(metric, mean)
    if text and n_seeds and n_seeds > 1 and not pd.isna(std):
        spread = f"{100 * std:.2f}" if metric in RATE_METRICS else f"{std:.4f}"
        text = f"{text} ± {spread}"
    return text
