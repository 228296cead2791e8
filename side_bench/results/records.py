"""Reading result files for the leaderboard: find them, upgrade old versions, validate.

The JSON Schema files in ``side_bench/results/schema/`` are the source of truth for what a row, a
manifest and a file of reported figures contain. Files written by older versions of
side-bench are upgraded here, in code, before validation; a malformed file is rejected with
a one-line ``BenchError`` naming the file (and line) and the field.

Schema versions:
    0  rows and manifests written before ``schema_version`` existed: the same fields,
       without ``schema_version``; optional fields may be missing.
    1  manifests (the current version, ``side_bench.results.store.SCHEMA_VERSION``); rows without
       counts or intervals.
    2  rows (``ROW_SCHEMA_VERSION``): each value with its count (k of n), 95% interval and
       the standard error of a bootstrapped statistic, the null baseline likewise, the
       metric's direction and unit, the cell's diagnostics, stage times, plugin
       distributions and per-candidate record files; ``value`` may be null with a reason.
       Version-1 rows are upgraded with those fields null (their intervals are unknown).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from side_bench.errors import BenchError
from side_bench.results.store import SCHEMA_VERSION as MANIFEST_SCHEMA_VERSION
from side_bench.results.store import read_json

ROW_SCHEMA_VERSION = 2

ROWS_FILE = "rows.jsonl"
MANIFEST_FILE = "manifest.json"


@functools.cache
def schema(name: str) -> dict:
    """A schema shipped with the package: ``row``, ``manifest`` or ``reported``."""
    text = resources.files("side_bench.results").joinpath("schema", f"{name}.schema.json").read_text()
    return json.loads(text)


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    document = schema(name)
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


def _manifest_0_to_1(manifest: dict) -> dict:
    return {"finished": None, "cells": [], **manifest, "schema_version": 1}


ROW_UPGRADES: dict[int, Callable[[dict], dict]] = {0: _row_0_to_1, 1: _row_1_to_2}
MANIFEST_UPGRADES: dict[int, Callable[[dict], dict]] = {0: _manifest_0_to_1}


def upgrade(document: Any, upgrades: dict[int, Callable[[dict], dict]], where: str) -> Any:
    current = ROW_SCHEMA_VERSION if upgrades is ROW_UPGRADES else MANIFEST_SCHEMA_VERSION
    """Bring a row or manifest up to the current version; unknown shapes are left to validate()."""
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
# Finding and reading files
# ------------------------------------------------------------------------------------------


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
    path = Path(run_dir) / "cells" / f"{config_hash}.json"
    if not path.exists():
        return None
    record = read_json(path)
    return record if isinstance(record, dict) else None


def read_reported(path: Path) -> dict:
    """A file of figures reported by a paper (results/reported/*.json), validated."""
    document = read_json(path)
    validate(document, "reported", str(path))
    return document
