"""What a result is: the row layout, schema versions and upgrades, validation, and reading.

``results/store.py`` writes the run folder; this module says what its rows and manifest hold
and reads them back for the runner, ``show``, the leaderboard, ``rescore`` and ``compare``.
The JSON Schema files in ``side_bench/results/schema/`` are the source of truth for what a row, a
manifest and a file of reported figures contain. Files written by older versions of
side-bench are upgraded here, in code, before validation; a malformed file is rejected with
a one-line ``BenchError`` naming the file (and line) and the field.

Schema versions:
    0  rows and manifests written before ``schema_version`` existed: the same fields,
       without ``schema_version``; optional fields may be missing.
    1  manifests (the current version, ``MANIFEST_SCHEMA_VERSION``); rows without
       counts or intervals.
    2  rows (``ROW_SCHEMA_VERSION``): each value with its count (k of n), 95% interval and
       the standard error of a bootstrapped statistic, the null baseline likewise, the
       metric's direction and unit, the cell's diagnostics, stage times, plugin
       distributions and per-candidate record files; ``value`` may be null with a reason.
       Version-1 rows are upgraded with those fields null (their intervals are unknown).
    3  rows (``ROW_SCHEMA_VERSION``): the same fields; values scored against the distinct
       images of the training set (bit-identical copies collapsed, so an exact copy of a
       duplicated image is a Gu copy and UMS counts distinct images) with neighbour
       distances recomputed exactly from the differences (a copy at 0, band edges and
       ratios not decided by float32 rounding). Version-2 rows are upgraded unchanged: they
       were scored against every training image, with float32 distances in expanded form;
       on training sets without duplicates (every suite before canaries) only a pair within
       float32 rounding of a band edge or the Gu threshold can differ. The version tells them
       apart.
    4  rows (``ROW_SCHEMA_VERSION``): the same fields; a membership metric's interval is no
       longer a percentile bootstrap (which gave [1, 1] to every separable sample) but the
       AUC's score interval (``stats.AUC_INTERVAL``; ``n`` members + non-members, no ``se``)
       or, for a TPR at a fixed FPR, Clopper-Pearson on the members above the threshold
       (``stats.TPR_INTERVAL``; ``count`` those members, ``n`` the members, no ``se``).
       Version-3 membership rows (interval "bootstrap-percentile-stratified") are upgraded by
       computing these from their value, ``n_train`` (the members) and ``n_null`` (the
       non-members): they depend on nothing else, so the result is what a new run gives.
       Every other row is upgraded unchanged.
    5  rows (``ROW_SCHEMA_VERSION``): the same fields and ``cost``, what the cell's attack spent
       as the runner measured it (side_bench/cost.py: UNet evaluations forward and backward,
       guide evaluations, images sampled, classifier training, per draw and fixed, rankers and
       diagnostics apart, seconds per attacker stage). Version-4 rows are upgraded with
       ``cost`` null: not measured. The cost is no part of the config hash: a rerun that
       measures it lands in the same run folder under the same cell.

A row's ``device`` is the device the cell ran on with what it can do (an object from
``side_bench/machine.py``: CPU model, speed flags, native bf16; or the GPU); rows written
before it hold the device's name as a string, and both are read as they are (no version
change: the field still names the device, now with its capabilities; it is not in the
config hash, so run ids stay).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from side_bench.errors import BenchError, one_line

if TYPE_CHECKING:  # imported when a file is first validated: the run folder's writers never need it
    import jsonschema

ROW_SCHEMA_VERSION = 6
MANIFEST_SCHEMA_VERSION = 1

ROWS_FILE = "rows.jsonl"
MANIFEST_FILE = "manifest.json"
CELLS_DIR = "cells"


@functools.cache
def schema(name: str) -> dict:
    """A schema shipped with the package: ``row``, ``manifest`` or ``reported``."""
    text = resources.files("side_bench.results").joinpath("schema", f"{name}.schema.json").read_text()
    return json.loads(text)


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    document = schema(name)
    import jsonschema

    validator_class = jsonschema.validators.validator_for(document)
    return validator_class(document)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: jsonschema.ValidationError) -> str:
    """One line: the field's path and what was expected (never the whole instance)."""
    field = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        field = f"{field}.{missing}" if field else missing
        return f"field '{field}': missing (required)"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"field '{field}': expected {expected}, got {_short(error.instance)}"
    if error.validator == "const":
        return f"field '{field}': expected {_short(error.validator_value)}, got {_short(error.instance)}"
    return f"field '{field or '(top level)'}': {error.message[:200]}".replace("\n", " ")


def validate(document: Any, kind: str, where: str) -> None:
    """Raise ``BenchError("<where>: field 'x': ...")`` if ``document`` breaks the schema ``kind``."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(document))
    if error is not None:
        raise BenchError(f"{where}: {_describe(error)}")


# ------------------------------------------------------------------------------------------
# Upgrades from older schema versions: each takes version n and returns version n + 1.
# ------------------------------------------------------------------------------------------

_ROW_DEFAULTS_V0 = {
    "condition": None, "extractor": None, "condition_settings": {}, "extractor_settings": {},
    "features_identity": None, "dataset": None, "model": None, "band_low": None, "band_high": None,
    "null_value": None, "n_null": None, "n_train": None, "seconds": None, "device": None, "versions": {},
}


def _row_0_to_1(row: dict) -> dict:
    return {**_ROW_DEFAULTS_V0, **row, "schema_version": 1}


_ROW_DEFAULTS_V1 = {
    "count": None, "n": None, "ci_low": None, "ci_high": None, "interval": None, "se": None, "reason": None,
    "null_count": None, "null_n": None, "null_ci_low": None, "null_ci_high": None, "null_se": None,
    "direction": None, "unit": None, "diagnostics": {}, "plugins": {}, "candidates_file": None,
    "null_candidates_file": None,
}


def _row_1_to_2(row: dict) -> dict:
    return {**_ROW_DEFAULTS_V1, **row, "schema_version": 2}


def _row_2_to_3(row: dict) -> dict:
    # No field changed: version 3 says how the values were scored (the docstring's note).
    return {**row, "schema_version": 3}


MEMBERSHIP_BOOTSTRAP = "bootstrap-percentile-stratified"  # the membership metrics' interval before version 4


def _row_3_to_4(row: dict) -> dict:
    row = {**row, "schema_version": 4}
    report = (row.get("metric_settings") or {}).get("report") if isinstance(row.get("metric_settings"), dict) else None
    value, members, nonmembers = row.get("value"), row.get("n_train"), row.get("n_null")
    counts = (members, nonmembers, row.get("n"))
    if row.get("interval") != MEMBERSHIP_BOOTSTRAP or not isinstance(report, str) or isinstance(value, bool) \
            or not isinstance(value, (int, float)) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                               for c in counts) \
            or min(members, nonmembers) < 1 or row["n"] != members + nonmembers or not 0 <= value <= 1:
        return row  # not a membership row this upgrade can read: left as it was (validation judges it)
    from side_bench.scoring import stats

    if report == "auc":
        estimate = stats.membership_auc(value, members, nonmembers)
    elif report.startswith("tpr@"):
        count = round(value * members)
        if abs(count / members - value) > 1e-9:  # not k of the members: not this metric's TPR
            return row
        estimate = stats.membership_tpr(count, members)
    else:
        return row
    return {**row, **{key: getattr(estimate, key) for key in ("count", "n", "ci_low", "ci_high", "interval", "se")}}


def _row_4_to_5(row: dict) -> dict:
    # written before the runner measured cost: null, never a guess
    return {**row, "cost": row.get("cost"), "schema_version": 5}


# What the built-in plugins declared when rows began to carry it (schema version 6): rows written
# before say only the components' names, and the page reads nothing but the result files. A
# third-party component of an older row is left without (its legend says only its name).
LEGACY_CONDITION_DESCRIPTIONS = {
    "informative": "the data set's true labels (digit class, identity), as in Carlini et al. 2023's Cond attack",
    "none": "no labels: the unconditional target, as in Carlini et al. 2023's UnCond attack",
    "random": "C random labels per training image, fixed by the seed (Gu et al. 2023)",
    "surrogate": "SIDE's surrogate labels: clusters of the target model's own generations (Chen et al. 2024, "
                 "arXiv 2410.02467)",
    "unique": "one label per training image (Gu et al. 2023)",
}
LEGACY_EXTRACTORS = {  # name -> (description, threat model)
    "classifier-guidance": ("DDIM guided by an ordinary classifier trained on clean images (Carlini et al. 2023, "
                            "Cond)", "white-box"),
    "finextract": ("FineXtract: DDIM guided by the fine-tuned minus the pre-trained model, eps_pre + w (eps_ft - "
                   "eps_pre) (Wu et al. 2025)", "white-box + base model"),
    "sample": ("plain DDIM sampling of the target (Carlini et al. 2023, UnCond)", "black-box"),
    "side": ("SIDE: DDIM guided by a time-dependent classifier p(c | x_t, t) (Chen et al. 2024, arXiv 2410.02467)",
             "white-box"),
    "side-exact": ("SIDE with an exact classifier: p_theta(x | c), c uniform over the kept surrogate clusters, by "
                   "rejection from unguided samples (the bound for side at lambda 1)", "black-box"),
}
LEGACY_RANKERS = {  # the built-in rankers' traits (which of them ran is in the per-candidate records)
    "base-gu": {"attacker": False, "prefix_invariant": True},
    "clique": {"attacker": True, "prefix_invariant": False},
    "denoise-loss": {"attacker": True, "prefix_invariant": True},
    "finextract-clusters": {"attacker": True, "prefix_invariant": False},
}
LEGACY_METRIC_DESCRIPTIONS = {  # for rows written without metric_description (early versions)
    'ams': ('average memorization score: share of candidates whose nearest training image is in the '
            'band'),
    'base-copies': ("share of candidates that copy the base model's training images (Gu ratio < 1/3 against "
                    'them)'),
    'canary-precision-at-k': "share of a ranker's top k candidates that copy a canary",
    'canary-recall': 'canaries of a duplication count copied by at least one candidate, out of those planted',
    'canary-share': 'share of the copies whose copied training image is a canary',
    'carlini-l2': ('Carlini et al.: share of candidates with l2 to NN1 / (alpha x mean l2 to the 50 nearest) <'
                   ' delta'),
    'flagged-distinct': "distinct training images among a ranker's flagged candidates that are copies",
    'gu-ratio': 'Gu et al.: share of candidates with pixel distance ratio NN1/NN2 < 1/3',
    'loss': ('membership inference, the loss attack ||eps - eps_theta(x_t, t)||^2 (t = 100): members '
             '(training images) vs held-out non-members, ROC AUC or TPR at 1% / 0.1% FPR (setting '
             'report)'),
    'memorization-divergence': 'memorization divergence KL(q_eps || p_theta), nats per image (smaller = more memorization)',
    'non-canary-rate': 'share of candidates that copy a training image other than a canary',
    'p95': "95th percentile of each candidate's best similarity to the training set",
    'pia': ('membership inference, PIA (Kong et al. 2024), ||eps_theta(x,0) - eps_theta(x_t,t)||_4^4 (t'
            ' = 200): members (training images) vs held-out non-members, ROC AUC or TPR at 1% / 0.1% '
            'FPR (setting report)'),
    'pian': ("membership inference, PIAN (Kong et al. 2024), PIA with eps_0 rescaled to a normal's scale"
             ' (t = 200): members (training images) vs held-out non-members, ROC AUC or TPR at 1% / 0.1%'
             ' FPR (setting report)'),
    'precision-at-k': "share of copies (Gu ratio < 1/3) among a ranker's top k (k = 0: those it flags)",
    'ranker-auc': "ROC AUC of a ranker's score for 'is a copy' (Gu ratio < 1/3)",
    'secmi': ('membership inference, SecMI (Duan et al. 2023), DDIM round trip at t_sec = 100 by 10: '
              'members (training images) vs held-out non-members, ROC AUC or TPR at 1% / 0.1% FPR '
              '(setting report)'),
    'sima': ('membership inference, SimA (Rao et al. 2025), ||eps_theta(x, t)||_4^4 of the clean image '
             '(t = 100): members (training images) vs held-out non-members, ROC AUC or TPR at 1% / 0.1% '
             'FPR (setting report)'),
    'ums': ('unique memorization score: distinct training images within the band of some candidate, / '
            'N_G'),
}
LEGACY_ALIASES = {"uncond": "none", "true-labels": "informative", "random-labels": "random",
                  "uncond-sample": "sample", "cond": "classifier-guidance", "fine-xtract": "finextract",
                  "divergence": "memorization-divergence", "membership-loss": "loss", "percentile-95": "p95",
                  "gu": "gu-ratio", "carlini": "carlini-l2", "precision": "precision-at-k",
                  "canary-precision": "canary-precision-at-k"}
# the built-in model-level metrics (and aliases), for rows written before ``model_level`` (schema 3)
LEGACY_MODEL_LEVEL = frozenset({"memorization-divergence", "divergence", "loss", "membership-loss", "secmi", "pia",
                                "pian", "sima"})


def legacy_model_level(metric_name: str) -> bool:
    """Whether a row written before ``model_level`` is a model-level metric's: the registered
    metric's name (the cell config's ``metric_components`` maps a metric id to it) among the
    built-in model-level metrics."""
    return metric_name in LEGACY_MODEL_LEVEL


def _row_5_to_6(row: dict) -> dict:
    from side_bench.results.diagnostics import guidance_summary

    condition = LEGACY_ALIASES.get(row.get("condition"), row.get("condition")) \
        if isinstance(row.get("condition"), str) else None
    extractor = LEGACY_ALIASES.get(row.get("extractor"), row.get("extractor")) \
        if isinstance(row.get("extractor"), str) else None
    description, threat = LEGACY_EXTRACTORS.get(extractor, (None, None))
    described = row.get("metric_description")
    if not isinstance(described, str) and isinstance(row.get("metric"), str):
        described = LEGACY_METRIC_DESCRIPTIONS.get(LEGACY_ALIASES.get(row["metric"], row["metric"]))
    return {**row, "schema_version": 6, "metric_description": described,
            "condition_description": LEGACY_CONDITION_DESCRIPTIONS.get(condition),
            "extractor_description": description, "threat_model": threat,
            "rankers": {name: dict(traits) for name, traits in LEGACY_RANKERS.items()},
            "diagnostics_summary": guidance_summary(row.get("diagnostics"))}


def attack_fields(condition_traits, extractor_traits, ranker_traits: dict, diagnostics: dict) -> dict:
    """A cell's fields that say what its attack is, for the page (which reads only result files):
    the condition's and extractor's descriptions, the threat model, each ranker's traits, and
    the extractor's own summary of the diagnostics (``summarize_diagnostics``)."""
    summarize = extractor_traits.summarize_diagnostics
    return {"condition_description": condition_traits.description,
            "extractor_description": extractor_traits.description, "threat_model": extractor_traits.threat_model,
            "rankers": {name: {"attacker": t.attacker, "prefix_invariant": t.prefix_invariant}
                        for name, t in ranker_traits.items()},
            "diagnostics_summary": [str(line) for line in summarize(diagnostics)] if summarize is not None else []}


def _manifest_0_to_1(manifest: dict) -> dict:
    return {"finished": None, "cells": [], **manifest, "schema_version": 1}


ROW_UPGRADES: dict[int, Callable[[dict], dict]] = {0: _row_0_to_1, 1: _row_1_to_2, 2: _row_2_to_3, 3: _row_3_to_4,
                                                  4: _row_4_to_5, 5: _row_5_to_6}
MANIFEST_UPGRADES: dict[int, Callable[[dict], dict]] = {0: _manifest_0_to_1}


def upgrade(document: Any, upgrades: dict[int, Callable[[dict], dict]], where: str) -> Any:
    """Bring a row or manifest up to the current version; unknown shapes are left to validate()."""
    current = ROW_SCHEMA_VERSION if upgrades is ROW_UPGRADES else MANIFEST_SCHEMA_VERSION
    if not isinstance(document, dict):
        return document
    version = document.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise BenchError(f"{where}: field 'schema_version': expected integer, got {_short(version)}")
    if version > current:
        raise BenchError(f"{where}: field 'schema_version': {version} was written by a newer side-bench "
                         f"(this one reads versions 0 to {current}); upgrade side-bench")
    while version < current:
        if version not in upgrades:
            raise BenchError(f"{where}: field 'schema_version': unknown version {version}")
        document = upgrades[version](document)
        version = document["schema_version"]
    return document


# ------------------------------------------------------------------------------------------
# The row layout: one row per cell x metric x band. A row holds the cell's fields (who made
# it, with which settings and versions), the metric's value with its count and interval,
# the null baseline's beside it, and what the metric is. schema/row.schema.json describes it.
# ------------------------------------------------------------------------------------------

VALUE_FIELDS = ("value", "count", "n", "ci_low", "ci_high", "interval", "se", "reason")
NULL_FIELDS = ("value", "count", "n", "ci_low", "ci_high", "se")
# The fields a metric (and its band) decides; every other field of a row is the cell's.
METRIC_FIELDS = ("metric", "band", "band_low", "band_high", *VALUE_FIELDS, "direction", "unit",
                 "metric_description", "metric_settings", *(f"null_{key}" for key in NULL_FIELDS))


def metric_row(name: str, band, value, traits) -> dict:
    """One metric's value (a checked ``MetricValue``) on one band (or None), and what the metric is
    (its ``hookspecs.MetricTraits``)."""
    return {
        "metric": name,
        "band": band.name if band else None,
        "band_low": band.low if band else None,
        "band_high": band.high if band else None,
        **{key: getattr(value, key) for key in VALUE_FIELDS},
        "direction": traits.direction,
        "unit": traits.unit,
    }


def with_null(rows: list[dict], null_rows: list[dict]) -> list[dict]:
    """Put the null baseline (value, count, interval) beside the same metric and band."""
    null = {(r["metric"], r["band"]): r for r in null_rows}
    return [{**row, **{f"null_{key}": null[(row["metric"], row["band"])][key] for key in NULL_FIELDS}}
            for row in rows]


def cell_rows(cell_fields: dict, rows: list[dict], null_rows: list[dict], metric_traits: dict,
              metric_settings: dict) -> list[dict]:
    """A cell's result rows: its own fields, then each metric row with its null baseline, the
    metric's description, the settings it ran with (``metric_settings``: name -> table) and
    whether it measures the target model (``model_level``: the metric's ``needs_model``), from
    ``metric_traits`` (name -> its ``hookspecs.MetricTraits``, ``registry.traits_of``)."""
    return [{**cell_fields, **row, "metric_description": metric_traits[row["metric"]].description,
             "metric_settings": metric_settings.get(row["metric"], {}),
             "model_level": metric_traits[row["metric"]].needs_model}
            for row in with_null(rows, null_rows)]


def row_order(row: dict) -> tuple:
    """How rows are sorted in rows.jsonl and in ``show``."""
    return row["scale"], row["attack"], row["seed"], row["metric"], str(row["band"])


def upgrade_row(row: dict, where: str) -> dict:
    """A row of any older version, brought up to ``ROW_SCHEMA_VERSION``."""
    return upgrade(row, ROW_UPGRADES, where)


# ------------------------------------------------------------------------------------------
# Finding and reading files
# ------------------------------------------------------------------------------------------


def read_json(path: Path, what: str | None = None) -> Any:
    """A JSON file's contents, or BenchError naming the file (and what it should hold)."""
    about = f" ({what})" if what else ""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise BenchError(f"{path}: file not found{about}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: unreadable{about}: {one_line(error)}") from error
    except json.JSONDecodeError as error:
        raise BenchError(f"{path}: not readable JSON{about} ({error.msg} at line {error.lineno})") from error



def find_rows_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every rows.jsonl under the given run folders, suite folders, results roots or files."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.rglob(ROWS_FILE) if p.is_file()))
        else:
            raise BenchError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise BenchError(f"{', '.join(map(str, paths))}: no {ROWS_FILE} found (expected run folders, "
                         "suite folders or a results root)")
    return unique


def read_rows_file(path: Path) -> list[dict]:
    """The rows of one rows.jsonl, upgraded and validated; errors name the file, line and field."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: unreadable: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BenchError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from error
        row = upgrade(row, ROW_UPGRADES, where)
        validate(row, "row", where)
        rows.append(row)
    return rows


def read_manifest(run_dir: Path) -> dict | None:
    """The run's manifest, upgraded and validated; None when the run folder has none."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    manifest = upgrade(read_json(path), MANIFEST_UPGRADES, str(path))
    validate(manifest, "manifest", str(path))
    return manifest


def read_cell_record(run_dir: Path, config_hash: str) -> dict | None:
    """A cell's record (cells/<hash>.json), or None; only its optional 'gallery' is used here."""
    path = Path(run_dir) / CELLS_DIR / f"{config_hash}.json"
    if not path.exists():
        return None
    record = read_json(path)
    return record if isinstance(record, dict) else None


def read_reported(path: Path) -> dict:
    """A file of figures reported by a paper (results/reported/*.json), validated."""
    document = read_json(path)
    validate(document, "reported", str(path))
    return document

