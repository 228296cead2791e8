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

import functools
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from side_bench.errors import BenchError
from side_bench.results.records import (
    find_rows_files,
    legacy_model_level,
    read_cell_record,
    read_manifest,
    read_rows_file,
)
from side_bench.results.submission import submission_source
from side_bench.scoring import stats

SETUP_COLUMNS = ["setup", "suite", "dataset", "model", "features", "n_generations"]
BAND_COLUMNS = ["band", "band_low", "band_high"]
SAFE_HASH = re.compile(r"[A-Za-z0-9_.-]{1,128}")
LABEL_LIMIT = 80  # characters of a name shown in a page or plot; the CSV and JSON keep the full text
PERCENT_UNITS = frozenset({"rate", "fraction"})  # units shown in percent; data stay fractions
BOUNDED_UNITS = {"rate": (0.0, 1.0)}  # a value outside is a broken result file, never ranked

Warn = Callable[[str], None]


def warn_on_stderr(message: str) -> None:
    """The default for ``warn``: one line, ``warning: ...``, like the CLI's other warnings."""
    print(f"warning: {message}", file=sys.stderr)


def cap(text, limit: int = LABEL_LIMIT) -> str:
    """A label for a page or a plot: one line of at most ``limit`` characters, an ellipsis when cut."""
    text = str(text)
    short = " ".join(text[: 4 * limit].split())
    cut = len(short) > limit or len(text) > 4 * limit
    return short[: limit - 1] + "\u2026" if cut else short


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short_hash(value) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:6]


def parse_swept(attack: str, condition_settings: dict, extractor_settings: dict) -> tuple[str, dict]:
    """``side[guidance_scale=2.0]`` -> ("side", {"guidance_scale": 2.0}); no sweep -> (attack, {}).

    The values come from the row's settings (typed), the names from the attack's name.
    """
    # base[key=value,...] read from the right, in linear time (names may be long or hostile)
    opening = attack.rfind("[")
    if not attack.endswith("]") or opening <= 0 or "]" in attack[opening:-1] or "=" not in attack[opening:]:
        return attack, {}
    base, settings = attack[:opening], attack[opening + 1 : -1]
    swept = {}
    for part in settings.split(","):
        key, sep, text = part.partition("=")
        if not sep or not key:
            return attack, {}
        if key in extractor_settings:
            swept[key] = extractor_settings[key]
        elif key in condition_settings:
            swept[key] = condition_settings[key]
        else:
            swept[key] = text
    return base, swept


def _gallery_path(run_dir: Path, row: dict) -> str | None:
    """The cell's gallery PNG (from the row, else the cell record) if the file exists."""
    relative = row.get("gallery")
    if not relative and SAFE_HASH.fullmatch(str(row["config_hash"])):  # a hash names a file: no paths
        record = read_cell_record(run_dir, row["config_hash"]) or {}
        relative = record.get("gallery")
    if not isinstance(relative, str) or not relative:
        return None
    path = (run_dir / relative).resolve()
    # Only a PNG inside the run folder: a result file must not make us copy files from elsewhere.
    inside = path.is_relative_to(run_dir.resolve())
    return str(path) if inside and path.suffix.lower() == ".png" and path.is_file() else None


def _unusable(value, unit: str | None) -> str | None:
    """Why a value from a result file cannot be ranked (non-finite, a rate outside [0, 1]), or None."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"non-finite value {value}"
    if unit in BOUNDED_UNITS:
        low, high = BOUNDED_UNITS[unit]
        if not low <= value <= high:
            return f"{value:g} is outside [{low:g}, {high:g}] for a {unit}"
    return None


def _checked(row: dict, where: str) -> tuple[dict, list[str]]:
    """The row with unusable values (and their counts and intervals) set to null, and why."""
    problems = []
    for prefix in ("", "null_"):
        why = _unusable(row.get(prefix + "value"), row.get("unit"))
        for key in ("ci_low", "ci_high", "se"):  # a broken interval alone is dropped, not the value
            if why is None and isinstance(row.get(prefix + key), float) and not math.isfinite(row[prefix + key]):
                row = {**row, prefix + key: None}
        if why is None:
            continue
        label = "null baseline" if prefix else "value"
        problems.append(f"{where}: {cap(row.get('metric'), 40)} {cap(row.get('band') or '', 20)}".rstrip()
                        + f": {label}: {why}")
        row = {**row, **{prefix + k: None for k in ("value", "count", "n", "ci_low", "ci_high", "se")}}
        if not prefix:
            row["reason"] = f"not ranked: {why} in the result file"
    return row, problems


def load_rows(results: Iterable[str | Path] | str | Path, *, warn: Warn | None = warn_on_stderr) -> pd.DataFrame:
    """All rows under run folders, suite folders or results roots, validated, one per line.

    Adds ``setup`` (a label of what may be averaged together), ``attack_base`` and ``swept``
    (the swept settings of an attack like ``side[guidance_scale=2.0]``), ``run_dir``,
    ``gallery_path`` (absolute, None when the run has no gallery for the cell), ``headline``
    (the suite's headline metric from the run's manifest, when it names one) and
    ``metric_order`` (the position of the metric in the suite) and ``model_level`` (a metric of
    the target model, see ``model_lines``) and ``submission_source`` (the sha256 of the run
    folder's ``submission.toml``, '' for none). The same cell (config hash) found twice in one
    source, e.g. in a copy of a run, is kept once.

    Hostile or broken files: a run with no rows (every cell failed) is left out with a
    warning (all of them empty: ``BenchError``); a non-finite value, or a rate outside
    [0, 1], is set to null with a ``reason`` and a warning, so it is shown but never ranked.
    """
    if isinstance(results, (str, Path)):
        results = [results]
    warn = warn or (lambda message: None)
    records, empty = [], []
    for rows_file in find_rows_files(results):
        run_dir = rows_file.parent
        manifest = read_manifest(run_dir) or {}  # validated when present
        config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        headline = config.get("headline") if isinstance(config.get("headline"), str) else None
        components = _metric_components(config)
        order = [m if isinstance(m, str) else m.get("name") for m in config.get("metrics") or []
                 if isinstance(m, (str, dict))]
        rows = read_rows_file(rows_file)
        source = submission_source(run_dir)  # '' for this project's runs (report/submissions.py)
        if not rows:
            empty.append(str(run_dir))
            continue
        problems = []
        for number, row in enumerate(rows, start=1):
            row, found = _checked(row, f"{rows_file}:{number}")
            problems += found
            if isinstance(row.get("attack_base"), str) and isinstance(row.get("swept"), dict):
                base, swept = row["attack_base"], row["swept"]  # written by the runner (newer rows)
            else:
                base, swept = parse_swept(row["attack"], row.get("condition_settings") or {},
                                          row.get("extractor_settings") or {})
            level = row.get("model_level")  # rows before the field: the built-in metrics of that time say
            if not isinstance(level, bool):
                level = legacy_model_level(str(components.get(row["metric"], row["metric"])))
            records.append({"headline": headline, **row, "model_level": level, "attack_base": base, "swept": swept,
                            "run_dir": str(run_dir), "submission_source": source,
                            "gallery_path": _gallery_path(run_dir, row),
                            "metric_order": order.index(row["metric"]) if row["metric"] in order else len(order)})
        for problem in problems[:5]:
            warn(f"{problem}; shown as n/a, never ranked")
        if len(problems) > 5:
            warn(f"{rows_file}: {len(problems) - 5} more unusable value(s) like these")
    if empty and not records:
        raise BenchError(f"no rows in {', '.join(empty)}: every cell failed (see each run's cells/ folder)")
    for run_dir in empty:
        warn(f"{run_dir}: no rows (every cell failed?); left out of the leaderboard")
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    frame = frame.drop_duplicates(subset=["config_hash", "metric", "band", "submission_source"],
                                  keep="first").reset_index(drop=True)
    frame["setup"] = _setup_labels(frame)
    frame["dataset"] = [(d or {}).get("name", "") if isinstance(d, dict) else str(d or "") for d in frame["dataset"]]
    frame["model"] = [(m or {}).get("name", "") if isinstance(m, dict) else str(m or "") for m in frame["model"]]
    return frame


def _metric_components(config: dict) -> dict:
    """A metric id -> the registered metric it uses: the config's ``metric_components``, else
    (older manifests) its metric tables ``{id = ..., name = ...}``."""
    if isinstance(config.get("metric_components"), dict):
        return config["metric_components"]
    return {m["id"]: m["name"] for m in config.get("metrics") or []
            if isinstance(m, dict) and isinstance(m.get("id"), str) and isinstance(m.get("name"), str)}


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


def _pool(values: pd.DataFrame, prefix: str = "", unit: str | None = "rate") -> dict:
    """One estimate from the seeds' rows: counts pooled for rates, standard errors otherwise.

    A rate (unit "rate") k_i of n_i over seeds becomes sum k / sum n with its Wilson interval; a
    bootstrapped statistic becomes the mean with standard error sqrt(sum se_i^2) / seeds and
    a normal 95% interval (one seed: the row's own bootstrap interval). Anything else (a count
    of distinct images, a value without an interval) is the mean over seeds, untested.
    """
    value = pd.to_numeric(values[prefix + "value"], errors="coerce")
    finite = value.notna() & value.map(lambda v: math.isfinite(v) if pd.notna(v) else False)
    rows = values[finite]
    estimate = {"value": None, "count": None, "n": None, "se": None, "ci_low": None, "ci_high": None}
    if rows.empty:
        return estimate
    counts, ns = rows.get(prefix + "count"), rows.get(prefix + "n")
    ses = rows.get(prefix + "se")
    has_se = ses is not None and pd.to_numeric(ses, errors="coerce").notna().all()
    has_counts = counts is not None and ns is not None and counts.notna().all() and ns.notna().all()
    if has_counts and not has_se and unit in ("rate", None):
        k, n = int(counts.sum()), int(ns.sum())
        low, high = stats.wilson(k, n) if n > 0 else (None, None)
        return {**estimate, "value": k / n if n else None, "count": k, "n": n, "ci_low": low, "ci_high": high}
    mean = float(pd.to_numeric(rows[prefix + "value"]).mean())
    if has_se:
        se = float(np.sqrt((pd.to_numeric(ses) ** 2).sum()) / len(rows))
        if len(rows) == 1:
            low, high = rows.iloc[0].get(prefix + "ci_low"), rows.iloc[0].get(prefix + "ci_high")
        else:
            low, high = mean - 1.959964 * se, mean + 1.959964 * se
        return {**estimate, "value": mean, "se": se, "ci_low": _num(low), "ci_high": _num(high),
                "count": int(counts.sum()) if has_counts else None, "n": int(ns.sum()) if has_counts else None}
    if len(rows) == 1:  # one seed: the row's own interval, if it has one
        first = rows.iloc[0]
        return {**estimate, "value": mean, "ci_low": _num(first.get(prefix + "ci_low")),
                "ci_high": _num(first.get(prefix + "ci_high"))}
    return {**estimate, "value": mean}


def _num(value):
    return None if value is None or pd.isna(value) else float(value)


# How ``aggregate`` (below, through ``_test_group``) ranks the attacks of one table at one scale: the
# one statement of the rule, quoted by the page's legend (report/page.py MARKS).
RANK_RULE = (
    f"Ranks come from pairwise tests at the same scale ({stats.RATE_TEST} for rates, {stats.BOOTSTRAP_TEST} "
    f"otherwise), {stats.CORRECTION}-corrected, alpha {stats.ALPHA}: attacks not significantly different share a "
    "rank. ★ marks the one attack alone at rank 1 and above the null; ties are never starred."
)


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows -> one line per setup x metric x band x attack x scale, with tests and ranks.

    Columns: the setup columns, metric, band, band_low, band_high, attack, attack_base, swept
    (JSON text), scale, n_seeds, mean and std (over seeds; std NaN with one seed), value,
    count, n, ci_low, ci_high, se (the pooled estimate, see ``_pool``), the same for the null
    baseline (null_value, null_count, null_n, null_ci_low, null_ci_high; null_mean, null_std
    over seeds), p_null and above_null (one-sided test against the null, Holm-corrected over
    the attacks at that scale), rank (1 + the number of attacks significantly ahead at that
    scale, by pairwise two-sided tests, Holm-corrected; ties share a rank), best (the one
    attack alone at rank 1, and above the null), test (the test used), direction and unit
    (from the rows: what the metric declares).
    """
    if rows.empty:
        return pd.DataFrame()
    work = rows.copy()
    # pandas drops None from group keys; a metric without bands (p95) gets "" while grouping.
    for column in BAND_COLUMNS:
        work[column] = work[column].astype(object).where(work[column].notna(), "")
    work["swept"] = [_canonical(s) if s else "" for s in work["swept"]]
    for column in ("direction", "unit"):
        work[column] = work[column] if column in work else None
    for column in ("value", "null_value", "count", "n", "se", "ci_low", "ci_high", "null_count", "null_n",
                   "null_se", "null_ci_low", "null_ci_high"):
        work[column] = pd.to_numeric(work[column], errors="coerce") if column in work else np.nan
    keys = SETUP_COLUMNS + ["metric"] + BAND_COLUMNS + ["attack", "attack_base", "swept", "scale"]
    lines = []
    for key, part in work.groupby(keys, sort=False, dropna=False):
        line = dict(zip(keys, key, strict=True))
        values = part["value"].where(np.isfinite(part["value"]))
        line.update(n_seeds=part["seed"].nunique(), mean=values.mean(), std=values.std(),
                    null_mean=part["null_value"].mean(), null_std=part["null_value"].std(),
                    direction=part["direction"].dropna().iloc[0] if part["direction"].notna().any() else "higher",
                    unit=part["unit"].dropna().iloc[0] if part["unit"].notna().any() else None)
        line.update(_pool(part, unit=line["unit"]))
        line.update(membership_pool(part) or {})
        reasons = part["reason"].dropna() if "reason" in part else pd.Series(dtype=object)
        line["reason"] = str(reasons.iloc[0]) if line["value"] is None and len(reasons) else None
        described = part["metric_description"].dropna() if "metric_description" in part else ()
        line["metric_description"] = str(described.iloc[0]) if len(described) else None
        nulls = part.drop_duplicates("seed")
        line.update({f"null_{k}": v for k, v in _pool(nulls, "null_", line["unit"]).items()})
        lines.append(line)
    table = pd.DataFrame(lines)
    per_scale = SETUP_COLUMNS + ["metric"] + BAND_COLUMNS + ["scale"]
    tested = [_test_group(part) for _, part in table.groupby(per_scale, sort=False, dropna=False)]
    table = mark_saturated(pd.concat(tested) if tested else table)
    table["band"] = table["band"].astype(object).where(table["band"] != "", None)
    for column in ("band_low", "band_high"):
        table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    table = table.sort_values(["setup", "metric", "band_low", "band", "scale", "rank", "attack"],
                              na_position="first", kind="stable")
    return table.reset_index(drop=True)


MODEL_LABEL = "target model (every attack)"


def model_groups(work: pd.DataFrame) -> dict[str, str]:
    """Attack -> the label of the target model it attacks, for one setup's model-level rows.

    Attacks that share a model (``model_id``) anywhere share a target; a condition that trains
    its own target (other labels: 'random', 'informative') makes its own group. One group:
    ``MODEL_LABEL``; several: 'target model of random', ..., the largest 'of every other attack'.
    """
    attacks = list(dict.fromkeys(work["attack"]))
    parent = {a: a for a in attacks}

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for _, sharing in work.groupby("model_id", sort=False):
        first, *rest = dict.fromkeys(sharing["attack"])
        for other in rest:
            parent[root(other)] = root(first)
    members: dict[str, list[str]] = {}
    for attack in attacks:
        members.setdefault(root(attack), []).append(attack)
    if len(members) == 1:
        return dict.fromkeys(attacks, MODEL_LABEL)
    largest = max(members.values(), key=len)  # the first of the largest: the attacks that train nothing new
    labels = {}
    for group in members.values():
        names = group if len(group) <= 3 else [*group[:2], f"{len(group) - 2} more"]
        text = ("every other attack" if group is largest and len(group) > 1 else
                ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])
        labels.update(dict.fromkeys(group, f"target model of {text}"))
    return labels


def model_lines(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of model-level metrics (``model_level``) -> one line per setup x metric x band x
    target model x scale (the attack column: the target's label, see ``model_groups``), in the
    columns of ``aggregate`` and ``model_level`` True.

    Such a metric measures the target model, not the attack: every attack on one model carries
    the same row, so each model (``model_key`` and seed) counts once, and the line pools the
    distinct models of that target at that scale (``_pool``: a mean with its standard error).
    It has no null baseline, no test against one and no rank: the attack does not change it.
    Empty when no row is model-level.
    """
    if rows.empty or "model_level" not in rows or not rows["model_level"].astype(bool).any():
        return pd.DataFrame()
    work = rows[rows["model_level"].astype(bool)].copy()
    for column in BAND_COLUMNS:
        work[column] = work[column].astype(object).where(work[column].notna(), "")
    for column in ("direction", "unit"):
        work[column] = work[column] if column in work else None
    for column in ("value", "count", "n", "se", "ci_low", "ci_high"):
        work[column] = pd.to_numeric(work[column], errors="coerce") if column in work else np.nan
    # one model once: rows without a model_key (older runs) are their own cell's model
    keys = work["model_key"] if "model_key" in work else pd.Series(None, index=work.index, dtype=object)
    work["model_id"] = [f"{k}|{seed}" if isinstance(k, str) else f"cell|{h}"
                        for k, seed, h in zip(keys, work["seed"], work["config_hash"], strict=True)]
    work["target"] = ""
    for _, setup in work.groupby("setup", sort=False):
        work.loc[setup.index, "target"] = setup["attack"].map(model_groups(setup))
    group_keys = SETUP_COLUMNS + ["metric"] + BAND_COLUMNS + ["target", "scale"]
    lines = []
    for key, part in work.groupby(group_keys, sort=False, dropna=False):
        models = part.drop_duplicates("model_id")
        line = dict(zip(group_keys, key, strict=True))
        values = models["value"].where(np.isfinite(models["value"]))
        unit = models["unit"].dropna().iloc[0] if models["unit"].notna().any() else None
        target = line.pop("target")
        line.update(attack=target, attack_base=target, swept="", model_level=True, n_seeds=models["seed"].nunique(),
                    n_models=len(models), mean=values.mean(), std=values.std(),
                    direction=models["direction"].dropna().iloc[0] if models["direction"].notna().any()
                    else "higher", unit=unit)
        line.update(_pool(models, unit=unit))
        line.update(membership_pool(models) or {})
        reasons = models["reason"].dropna() if "reason" in models else pd.Series(dtype=object)
        line["reason"] = str(reasons.iloc[0]) if line["value"] is None and len(reasons) else None
        described = models["metric_description"].dropna() if "metric_description" in models else ()
        line["metric_description"] = str(described.iloc[0]) if len(described) else None
        line.update({f"null_{k}": None for k in ("value", "count", "n", "se", "ci_low", "ci_high", "mean", "std")})
        line.update(p_null=None, above_null=False, rank=pd.NA, best=False, test=None)  # nothing is tested
        lines.append(line)
    table = pd.DataFrame(lines)
    table["rank"] = pd.array(table["rank"], dtype="Int64")
    table["band"] = table["band"].astype(object).where(table["band"] != "", None)
    for column in ("band_low", "band_high"):
        table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce")
    table = mark_saturated(table)
    return table.sort_values(["setup", "metric", "band_low", "band", "scale"], na_position="first",
                             kind="stable").reset_index(drop=True)


def membership_pool(models: pd.DataFrame) -> dict | None:
    """The pooled estimate of one target's models for a membership metric, or None for any other.

    ``_pool`` cannot pool these: an AUC's score interval has no standard error (``stats.membership_auc``),
    and a TPR's interval is Clopper-Pearson, not Wilson. An AUC (every row's interval
    ``stats.AUC_INTERVAL``): the mean over the models with the score interval of that mean
    (``stats.auc_interval`` with each model's members, ``n_train``, and non-members, ``n_null``);
    a TPR (``stats.TPR_INTERVAL``): members above the threshold summed over the models, of
    all their members, with its Clopper-Pearson interval. One model: its row's own interval.
    """
    if "interval" not in models or models.empty:
        return None
    kinds = set(models["interval"].dropna())
    values = pd.to_numeric(models["value"], errors="coerce")
    if len(kinds) != 1 or values.isna().any() or not np.isfinite(values).all():
        return None
    kind = kinds.pop()
    if kind == stats.TPR_INTERVAL:
        counts, ns = pd.to_numeric(models["count"], errors="coerce"), pd.to_numeric(models["n"], errors="coerce")
        if counts.isna().any() or ns.isna().any() or ns.sum() <= 0:
            return None
        k, n = int(counts.sum()), int(ns.sum())
        low, high = stats.clopper_pearson(k, n)
        return {"value": k / n, "count": k, "n": n, "se": None, "ci_low": low, "ci_high": high}
    if kind == stats.AUC_INTERVAL:
        members = pd.to_numeric(models.get("n_train"), errors="coerce")
        nonmembers = pd.to_numeric(models.get("n_null"), errors="coerce")
        if members is None or nonmembers is None or members.isna().any() or nonmembers.isna().any() \
                or (members < 1).any() or (nonmembers < 1).any():
            return None
        low, high = stats.auc_interval(values.to_numpy(), members.to_numpy(), nonmembers.to_numpy())
        return {"value": float(values.mean()), "count": None, "n": int(pd.to_numeric(models["n"]).sum()),
                "se": None, "ci_low": low, "ci_high": high}
    return None


SATURATED_LABEL = "cannot rank here"
# The values a metric of this unit cannot pass: every line at one of them cannot be ranked
# (a rate of 0 of N for every attack, an AUC of 1 for every model).
UNIT_EDGES = {"rate": (0.0, 1.0), "ratio": (0.0, 1.0), "fraction": (0.0,), "count": (0.0,)}


def mark_saturated(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``saturated``: True on every line of a setup x metric x band x scale whose values
    (all of them known) are one and the same edge of the metric's range (``UNIT_EDGES``). Such
    lines are ties the metric cannot break, not a shared first place: their rank is cleared
    and none is starred (``best``); the page says "cannot rank here"."""
    if table.empty:
        return table
    table = table.copy()
    saturated = pd.Series(False, index=table.index)
    keys = [table[k].astype(str) for k in SETUP_COLUMNS + ["metric", "band", "band_low", "band_high", "scale"]
            if k in table]
    for _, part in table.groupby(keys, sort=False, dropna=False):
        values = pd.to_numeric(part["value"], errors="coerce")
        unit = next((u for u in part["unit"] if isinstance(u, str)), None) if "unit" in part else None
        edges = UNIT_EDGES.get(unit, ())
        if values.notna().all() and len(values) and values.nunique() == 1 and float(values.iloc[0]) in edges:
            saturated[part.index] = True
    table["saturated"] = saturated
    if "rank" in table:
        table["rank"] = pd.Series(pd.array(table["rank"], dtype="Int64"), index=table.index).mask(saturated)
    if "best" in table:
        table["best"] = table["best"].astype(bool) & ~saturated
    return table


def _estimate(line, prefix: str = "") -> dict:
    return {k: _num(getattr(line, prefix + k)) for k in ("value", "count", "n", "se")}


def _test_group(part: pd.DataFrame) -> pd.DataFrame:
    """Tests among the attacks of one setup, metric, band and scale (see ``aggregate``)."""
    part = part.copy()
    lines = list(part.itertuples(index=False))
    higher = (part["direction"].iloc[0] or "higher") != "lower"
    estimates = [_estimate(line) for line in lines]
    # against the null baseline: one-sided, in the direction of more memorization
    null_p = [stats.compare(e, _estimate(line, "null_"), "greater" if higher else "less") for e, line
              in zip(estimates, lines, strict=True)]
    known = [i for i, p in enumerate(null_p) if p is not None]
    adjusted = stats.holm([null_p[i] for i in known])
    p_null = [None] * len(lines)
    for i, p in zip(known, adjusted, strict=True):
        p_null[i] = p
    part["p_null"] = p_null
    part["above_null"] = [p is not None and p < stats.ALPHA for p in p_null]
    # pairwise, two-sided; a significant difference puts the one with more memorization ahead
    pairs, pvalues = [], []
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            p = stats.compare(estimates[i], estimates[j])
            if p is not None:
                pairs.append((i, j))
                pvalues.append(p)
    ahead = [0] * len(lines)
    for (i, j), p in zip(pairs, stats.holm(pvalues), strict=True):
        if p < stats.ALPHA:
            first_more = estimates[i]["value"] > estimates[j]["value"]
            ahead[j if first_more == higher else i] += 1
    # only values a test can compare are ranked (a count of distinct images without an
    # interval, say, is shown but not ranked: there is no test to separate it from another)
    ranked = [e["value"] is not None and stats.test_name(e) is not None for e in estimates]
    part["rank"] = pd.array([1 + a if r else None for a, r in zip(ahead, ranked, strict=True)], dtype="Int64")
    leaders = [i for i, r in enumerate(part["rank"]) if r is not pd.NA and r == 1]
    part["best"] = [len(lines) > 1 and leaders == [i] and bool(part["above_null"].iloc[i]) for i in range(len(lines))]
    part["test"] = [stats.test_name(e) for e in estimates]
    return part


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
    """One group -> (scales, attacks in order of mean rank, then of mean value (most memorization
    first), {(attack, scale): line}, {scale: null line})."""
    scales = sorted(part["scale"].unique())
    higher = str(part["direction"].iloc[0] or "higher") != "lower" if "direction" in part else True
    means = part.assign(rank=pd.to_numeric(part["rank"], errors="coerce"),
                        value=pd.to_numeric(part["value"], errors="coerce") * (-1 if higher else 1))
    order = means.groupby("attack", sort=False)[["rank", "value"]].mean()
    attacks = list(order.sort_values(["rank", "value"], kind="stable", na_position="last").index)
    cells = {(line.attack, line.scale): line for line in part.itertuples(index=False)}
    nulls = {}
    for scale in scales:
        at_scale = part[part["scale"] == scale]
        nulls[scale] = at_scale.iloc[0]
    return scales, attacks, cells, nulls


def format_value(unit: str | None, value) -> str:
    """Rates and fractions in percent (two decimals), counts as they are (a mean over seeds with
    one decimal), other units with four decimals; missing -> ''."""
    if value is None or pd.isna(value):
        return ""
    if unit in PERCENT_UNITS:
        return f"{100 * value:.2f}%"
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.4f}"


def format_interval(unit: str | None, low, high) -> str:
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    if unit in PERCENT_UNITS:
        return f"[{100 * low:.2f}, {100 * high:.2f}]"
    return f"[{low:.4f}, {high:.4f}]"


def format_cell(unit: str | None, line, prefix: str = "") -> str:
    """'12.50% [9.1, 16.9] (32/256)': the pooled value, its 95% interval and the count behind it."""
    value = getattr(line, prefix + "value")
    text = format_value(unit, value)
    if not text:
        return ""
    interval = format_interval(unit, getattr(line, prefix + "ci_low"), getattr(line, prefix + "ci_high"))
    if interval:
        text = f"{text} {interval}"
    count, n = getattr(line, prefix + "count"), getattr(line, prefix + "n")
    if unit == "rate" and count is not None and n is not None and not pd.isna(count) and not pd.isna(n):
        text = f"{text} ({int(count)}/{int(n)})"
    return text


# ------------------------------------------------------------------------------------------
# What a null baseline can resolve
# ------------------------------------------------------------------------------------------

RESOLUTION_LABEL = "a rate below this cannot be shown above the null"


@functools.lru_cache(maxsize=256)
def null_resolution(n: int, null_n: int, alpha: float = stats.ALPHA) -> float | None:
    """The smallest rate k/n of ``n`` candidates that the leaderboard's test against the null
    (Fisher's exact test, one-sided, ``alpha``) can call above a null baseline of ``null_n``
    held-out images, in the best case: a null of 0/null_n. Then p(k) = prod_{i<k} (n-i)/(n+null_n-i)
    falls with k, so the least k with p(k) < alpha is found by bisection. Holm's correction over
    the attacks only raises p-values: a rate below this is never shown above that null. None
    when not even n/n could be (a null of very few images)."""
    if n < 1 or null_n < 1:
        return None

    def significant(k: int) -> bool:
        return stats.rate_test(k, n, 0, null_n, "greater") < alpha

    if not significant(n):
        return None
    low, high = 0, n  # significant(high) holds, significant(low) does not (p(0) = 1)
    while high - low > 1:
        middle = (low + high) // 2
        if significant(middle):
            high = middle
        else:
            low = middle
    return high / n


def resolution_texts(part: pd.DataFrame, scales: list) -> list[str]:
    """For one table of a rate (counts pooled over seeds, higher = more memorization), per scale:
    the smallest rate any of its attacks could show above that scale's null baseline (the line
    with the most candidates resolves best), as the table prints rates; "none" when no rate
    could be. [] for other metrics: bootstrap statistics have no such bound in counts alone."""
    first = part.iloc[0]
    if first.get("unit") != "rate" or str(first.get("direction") or "higher") == "lower" \
            or "null_n" not in part or ("se" in part and pd.to_numeric(part["se"], errors="coerce").notna().any()):
        return []
    texts = []
    for scale in scales:
        lines = part[(part["scale"] == scale) & part["n"].notna() & part["null_n"].notna()]
        found = [null_resolution(int(line.n), int(line.null_n)) for line in lines.itertuples(index=False)]
        found = [value for value in found if value is not None]
        texts.append(format_value("rate", min(found)) if found else "none" if len(lines) else "")
    return texts


# ------------------------------------------------------------------------------------------
# Measured cost (issue 29): beside each line, what its attack spent
# ------------------------------------------------------------------------------------------

COST_COLUMNS = ("cost", "cost_per_candidate", "cost_seeds")


def has_measured_cost(rows: pd.DataFrame) -> bool:
    """Whether any row carries a cost the runner measured (row schema 5 and later)."""
    return "cost" in rows and any(isinstance(c, dict) and c.get("measured") for c in rows["cost"])


def with_cost(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard frame with ``cost`` (what the attack spent at that scale, the mean over
    its seeds with a measured cost, in UNet-evaluation equivalents: ``side_bench.cost``),
    ``cost_per_candidate`` (that over N_G) and ``cost_seeds`` (the seeds it is the mean of; 0:
    not measured). Unchanged when no row carries a measured cost, so a page of older runs
    stays as it was. A model-level line (the target, not an attack) has none."""
    if table.empty or not has_measured_cost(rows):
        return table
    from side_bench.cost import equivalents

    spent: dict[tuple, list[float]] = {}
    cells = rows.drop_duplicates("config_hash")
    for row in cells.itertuples(index=False):
        cost = getattr(row, "cost", None)
        if isinstance(cost, dict) and cost.get("measured"):
            spent.setdefault((row.setup, row.attack, row.scale), []).append(equivalents(cost))
    table = table.copy()
    found = [spent.get((line.setup, line.attack, line.scale), []) for line in table.itertuples(index=False)]
    model_level = table["model_level"].fillna(False).astype(bool) if "model_level" in table else \
        pd.Series(False, index=table.index)
    table["cost"] = [float(np.mean(values)) if values and not level else np.nan
                     for values, level in zip(found, model_level, strict=True)]
    table["cost_per_candidate"] = table["cost"] / pd.to_numeric(table["n_generations"], errors="coerce")
    table["cost_seeds"] = [0 if level else len(values) for values, level in zip(found, model_level, strict=True)]
    return table


def format_cost(values) -> str:
    """Costs per candidate of one attack over scales: '50', or '53-61' where they differ; '' when none."""
    known = [float(v) for v in values if v is not None and not pd.isna(v)]
    if not known:
        return ""
    low, high = min(known), max(known)
    text = f"{low:,.1f}" if low < 10 else f"{low:,.0f}"
    if high > low * 1.005:
        text += f"\u2013{high:,.1f}" if high < 10 else f"\u2013{high:,.0f}"
    return text
