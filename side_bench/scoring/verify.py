"""``verify``: do a run folder's rows follow from its settings and its per-candidate records?

A result folder from another machine is trusted when its numbers can be recomputed here, not
when it says so. For every run folder under the paths given, and every row of it:

- ``schema``: every line of ``rows.jsonl`` is strict JSON (no NaN or Infinity tokens) and a
  valid row (older versions upgraded first, as every reader does); the manifest and each
  cell record (``cells/<hash>.json``) read and validate;
- ``record``: the row is the one its cell record holds (``rows.jsonl`` is rewritten from
  ``cells/``: an edit to one and not the other is found here), and every row of a finished
  cell record is in ``rows.jsonl``;
- ``config-hash``: the config hash recomputes from the config in the cell record
  (``canonical_hash``) and names that record's file, and the row's own settings (suite,
  scale, seed, attack, condition and extractor with their settings, data set, model,
  features, N_G, versions, plugins, the metric's settings and band) are the config's;
- ``record-file``: the per-candidate records the row names are where a run writes them
  (``candidates/<config hash>.parquet``, ``candidates/null-<64 hex>.parquet``: no other path
  is ever opened), plain files inside the folder (never a link), readable, written for this
  cell (their metadata's ``config_hash``; the null baseline's ``kind`` "null") and of the
  row's size (N_G candidates, ``n_null`` held-out images). Runs record no content hash of
  these files: the config hash in the name and in the metadata is the record's identity;
- ``values``: every metric recomputed from those records with the installed metric plugins
  (as ``rescore`` does) gives the row's numbers: counts, ``n`` and the interval's name
  exactly, values within ``VALUE_TOLERANCE``, intervals and standard errors within
  ``INTERVAL_TOLERANCE``; the null baseline likewise. A model-level metric (``needs_model``)
  needs the target model, which a run folder does not hold: it is ``skipped``, except that a
  membership AUC's or TPR's interval must follow from its value and group sizes;
- ``copy-decisions``: a cell's records that store its metrics' copy decisions (version 3,
  ``results/candidates.py``; the page's cost section and ``compare`` read them, not the
  plugins) hold exactly those the installed metrics make on the stored scores: every metric
  with ``memorized``, per band where it uses bands, the same decision for every candidate (or
  the same refusal); ``skipped`` where the config's metrics cannot be built here (a plugin not
  installed); no line for older records, which store none;
- ``target`` (only with ``targets``, a shared-targets pack, ``run --targets``): the row's
  ``target_model`` is one of the pack's models, found by its key, and names the same files
  with the same sha256 (the weights the row attacked are the pack's). A row without
  ``target_model`` (written before rows recorded it) fails: there is nothing to compare.

Hostile folders are refused line by line, never followed or executed: a link anywhere in the
folder (``folder``), a recorded file name outside that layout (``../``, an absolute path), a
truncated or non-JSON line, a NaN, a non-finite number, markup in a name (text, never
interpreted: every string in a result is shown with control characters escaped and capped).

``verify_runs`` returns one line per check (``CHECK_COLUMNS``); ``failures`` and ``summary``
read it. The CLI prints one line per failed check, then the summary, and exits 1 if any failed.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from side_bench.errors import BenchError, one_line
from side_bench.registry import traits_of

VALUE_TOLERANCE = 1e-9  # absolute, on values recomputed from the same stored float64 records
INTERVAL_TOLERANCE = 1e-6  # absolute, on interval bounds and standard errors (root finding, scipy versions)
CELL_FILE = re.compile(r"candidates/([0-9a-f]{64})\.parquet")
NULL_FILE = re.compile(r"candidates/null-[0-9a-f]{64}\.parquet")
GALLERY_FILE = re.compile(r"galleries/([0-9a-f]{64})\.png")
CONFIG_HASH = re.compile(r"[0-9a-f]{64}")
EXACT_FIELDS = ("count", "n", "interval")
VALUE_FIELDS = ("value",)
INTERVAL_FIELDS = ("ci_low", "ci_high", "se")
NULL_EXACT = ("null_count", "null_n")
NULL_VALUE = ("null_value",)
NULL_INTERVAL = ("null_ci_low", "null_ci_high", "null_se")
CHECKS = ("folder", "schema", "record", "config-hash", "record-file", "values", "copy-decisions", "target")
# the first side-bench whose rows say which weights they attacked (row field target_model)
TARGET_IDENTITY_SINCE = "0.1.0 at commit 49f897a"
CHECK_COLUMNS = ["run", "file", "line", "row", "check", "status", "detail"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value, limit: int = 120) -> str:
    """A string from a result file as it may be printed: control and direction characters
    escaped (no terminal escape sequence or reordering reaches the screen), one line, capped."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        str(value))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass
class Check:
    run: str
    file: str  # relative to the run folder
    line: int | None  # the row's line in rows.jsonl (None: a file's check)
    row: str  # which row: cell, attack, scale, seed, metric and band ('' for a file)
    check: str
    status: str  # "ok", "failed" or "skipped"
    detail: str = ""

    def text(self) -> str:
        line = None if self.line is None or pd.isna(self.line) else int(self.line)
        where = f"{self.run}/{self.file}" + (f":{line}" if line is not None else "")
        return f"{self.status.upper()}\t{where}\t{self.check}\t{self.row}\t{self.detail}".rstrip()


def failures(checks: pd.DataFrame) -> pd.DataFrame:
    return checks[checks["status"] == "failed"] if not checks.empty else checks


def summary(checks: pd.DataFrame) -> pd.DataFrame:
    """Per run folder and check: how many passed, failed and were skipped."""
    if checks.empty:
        return pd.DataFrame(columns=["run", "check", "ok", "failed", "skipped"])
    counts = checks.groupby(["run", "check", "status"], sort=False).size().unstack("status", fill_value=0)
    for status in ("ok", "failed", "skipped"):
        if status not in counts:
            counts[status] = 0
    counts = counts[["ok", "failed", "skipped"]].reset_index()
    order = {check: i for i, check in enumerate(CHECKS)}
    return counts.sort_values(["run", "check"], key=lambda c: c.map(order) if c.name == "check" else c,
                              kind="stable").reset_index(drop=True)


def find_run_folders(paths) -> list[Path]:
    """Run folders (a folder holding a plain ``rows.jsonl``) under the paths, links never followed."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and path.name == "rows.jsonl":
            path = path.parent
        if not path.is_dir():
            raise BenchError(f"{path}: no such folder (expected run folders, suite folders or a results root)")
        for root, folders, files in os.walk(path, followlinks=False):
            if "rows.jsonl" in files:
                found.append(Path(root))
                folders[:] = []  # a run folder holds no other run
            folders[:] = [f for f in sorted(folders) if f not in ("cells", "candidates", "galleries")]
    unique = list(dict.fromkeys(found))
    if not unique:
        raise BenchError(f"{', '.join(map(str, paths))}: no rows.jsonl found (expected run folders, suite "
                         "folders or a results root)")
    return unique


def verify_runs(paths, *, registry=None, targets=None) -> pd.DataFrame:
    """Check every run folder under ``paths`` (see the module's docstring); one line per check.

    ``targets``: a shared-targets pack (its folder): every row's target model must be one of
    its models (the ``target`` check). A pack that is itself altered or incomplete is a
    ``BenchError`` before any folder is checked."""
    from side_bench.registry import load_registry

    folders = find_run_folders(paths)
    pack = None
    if targets is not None:
        from side_bench.run.targets import read_pack

        pack = read_pack(targets)  # every model file against its sha256: the reference must be sound
    registry = registry or load_registry()
    checks: list[Check] = []
    for folder in folders:
        checks += RunVerifier(folder, registry, pack).run()
    frame = pd.DataFrame([asdict(c) for c in checks], columns=CHECK_COLUMNS)
    frame["line"] = frame["line"].astype("Int64")  # a row's line, or <NA> for a file's check
    return frame


# ------------------------------------------------------------------------------------------
# One run folder
# ------------------------------------------------------------------------------------------


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not JSON")


def strict_json(text: str):
    """JSON without NaN, Infinity or -Infinity (Python's json reads them; a result must not hold them)."""
    return json.loads(text, parse_constant=_refuse_constant)


class RunVerifier:
    def __init__(self, folder: Path, registry, pack=None):
        self.folder = folder
        self.root = folder.resolve()
        self.registry = registry
        self.pack = pack  # run.targets.Pack: the target check, or None
        self.checks: list[Check] = []
        self.scores: dict[str, object] = {}  # record file -> CandidateScores (or the error reading it)

    def add(self, file: str, line: int | None, row: str, check: str, status: str, detail: str = "") -> None:
        self.checks.append(Check(str(self.folder), file, line, row, check, status, shown(detail, 300)))

    def run(self) -> list[Check]:
        self._links()
        self._manifest()
        rows = self._rows()
        records = self._records()
        by_cell: dict[str, list[tuple[int, dict]]] = {}
        for number, row in rows:
            by_cell.setdefault(row["config_hash"], []).append((number, row))
        for config_hash, numbered in by_cell.items():
            self._cell(config_hash, numbered, records.get(config_hash))
        if self.pack is not None:
            for number, row in rows:
                problem = target_problem(row, self.pack)
                self.add("rows.jsonl", number, _label(row), "target", "failed" if problem else "ok", problem or "")
        for config_hash, record in records.items():
            if config_hash not in by_cell and isinstance(record, dict) and record.get("status") == "done" \
                    and record.get("rows"):
                self.add(f"cells/{config_hash}.json", None, "", "record", "failed",
                         f"{len(record['rows'])} row(s) of this finished cell are not in rows.jsonl")
        return self.checks

    # -- files ------------------------------------------------------------------------------

    def _links(self) -> None:
        """Every link in the folder is refused: a result must not point at files elsewhere."""
        if self.folder.is_symlink():
            self.add(".", None, "", "folder", "failed", "the run folder is a link; refused (never followed)")
        for root, folders, files in os.walk(self.folder, followlinks=False):
            for name in folders + files:
                path = Path(root) / name
                if path.is_symlink():
                    self.add(str(path.relative_to(self.folder)), None, "", "folder", "failed",
                             "a link; refused (never followed)")

    def plain_file(self, relative: str) -> Path | None:
        """The path of a plain file inside the folder, no link on the way; None otherwise."""
        path = self.folder / relative
        probe = self.folder
        for part in Path(relative).parts:
            probe = probe / part
            try:
                mode = os.lstat(probe).st_mode
            except OSError:
                return None
            if stat.S_ISLNK(mode):
                return None
        inside = path.resolve().is_relative_to(self.root)
        return path if inside and stat.S_ISREG(os.lstat(path).st_mode) else None

    def _read_text(self, relative: str, line: int | None, check: str) -> str | None:
        path = self.plain_file(relative)
        if path is None:
            if not (self.folder / relative).is_symlink():  # links are reported once, by _links
                self.add(relative, line, "", check, "failed", "missing, or not a plain file inside the run folder")
            return None
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            self.add(relative, line, "", check, "failed", f"unreadable: {one_line(error)}")
            return None

    def _manifest(self) -> None:
        from side_bench.results.records import MANIFEST_UPGRADES, upgrade, validate

        if not (self.folder / "manifest.json").exists() and not (self.folder / "manifest.json").is_symlink():
            self.add("manifest.json", None, "", "schema", "failed", "no manifest.json")
            return
        text = self._read_text("manifest.json", None, "schema")
        if text is None:
            return
        try:
            manifest = upgrade(strict_json(text), MANIFEST_UPGRADES, "manifest.json")
            validate(manifest, "manifest", "manifest.json")
        except (ValueError, BenchError) as error:
            self.add("manifest.json", None, "", "schema", "failed", one_line(error))
            return
        self.add("manifest.json", None, "", "schema", "ok")

    def _rows(self) -> list[tuple[int, dict]]:
        from side_bench.results.records import ROW_UPGRADES, upgrade, validate

        text = self._read_text("rows.jsonl", None, "schema")
        if text is None:
            return []
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = upgrade(strict_json(line), ROW_UPGRADES, f"line {number}")
                validate(row, "row", f"line {number}")
                problem = _non_finite(row)
                if problem:
                    raise ValueError(f"field '{problem}': not a finite number")
                if not CONFIG_HASH.fullmatch(row["config_hash"]):
                    raise ValueError("field 'config_hash': expected 64 hex digits (it names the cell's files)")
            except (ValueError, BenchError) as error:
                detail = one_line(error)
                self.add("rows.jsonl", number, "", "schema", "failed",
                         detail if detail.startswith("line") else f"not a valid row: {detail}")
                continue
            self.add("rows.jsonl", number, _label(row), "schema", "ok")
            rows.append((number, row))
        return rows

    def _records(self) -> dict[str, dict | None]:
        """Every cell record (cells/<hash>.json), read strictly; None where it could not be."""
        from side_bench.results.records import ROW_UPGRADES, upgrade, validate

        records: dict[str, dict | None] = {}
        cells = self.folder / "cells"
        if not cells.is_dir() or cells.is_symlink():
            return records
        for path in sorted(cells.iterdir()):
            if path.suffix != ".json" or path.is_symlink() or not path.is_file():
                continue
            relative = f"cells/{path.name}"
            config_hash = path.stem
            if not CONFIG_HASH.fullmatch(config_hash):
                self.add(relative, None, "", "schema", "failed", "a cell record's name must be its 64-hex config hash")
                continue
            text = self._read_text(relative, None, "schema")
            try:
                record = strict_json(text) if text is not None else None
                if record is not None and not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
                if record is not None:
                    record["rows"] = [upgrade(r, ROW_UPGRADES, relative) for r in record.get("rows") or []]
                    for row in record["rows"]:
                        validate(row, "row", relative)
            except (ValueError, BenchError, AttributeError, TypeError) as error:
                self.add(relative, None, "", "schema", "failed", f"not a readable cell record: {one_line(error)}")
                record = None
            records[config_hash] = record
        return records

    # -- one cell ---------------------------------------------------------------------------

    def _cell(self, config_hash: str, numbered: list[tuple[int, dict]], record: dict | None) -> None:
        relative = f"cells/{config_hash}.json"
        if record is None:
            why = "unreadable (see its schema line)" if config_hash in self._unreadable() else "missing"
            for number, row in numbered:
                self.add("rows.jsonl", number, _label(row), "config-hash", "failed",
                         f"its cell record {relative} is {why}: the config hash cannot be recomputed")
            return
        config = record.get("config") if isinstance(record.get("config"), dict) else None
        from side_bench.run.suite import canonical_hash

        recomputed = canonical_hash(config) if config is not None else None
        stored = {(r.get("metric"), r.get("band")): r for r in record.get("rows") or []}
        for number, row in numbered:
            label = _label(row)
            twin = stored.pop((row["metric"], row["band"]), None)
            if twin is None:
                self.add("rows.jsonl", number, label, "record", "failed", f"not in its cell record {relative}")
            elif twin != row:
                fields = sorted(k for k in set(twin) | set(row) if twin.get(k) != row.get(k))
                self.add("rows.jsonl", number, label, "record", "failed",
                         f"differs from its cell record {relative} in {', '.join(fields[:6])}")
            else:
                self.add("rows.jsonl", number, label, "record", "ok")
            if config is None:
                self.add("rows.jsonl", number, label, "config-hash", "failed", f"{relative} holds no config")
            elif recomputed != config_hash or record.get("config_hash") != config_hash:
                self.add("rows.jsonl", number, label, "config-hash", "failed",
                         f"the config in {relative} hashes to {recomputed[:12]}, not {config_hash[:12]}: "
                         "its settings were edited")
            elif differing := _settings_differ(row, config):
                self.add("rows.jsonl", number, label, "config-hash", "failed",
                         f"the row's {', '.join(differing[:4])} differ from the config its hash names")
            else:
                self.add("rows.jsonl", number, label, "config-hash", "ok")
        for (metric, band) in stored:
            self.add(relative, None, f"{metric} {band or ''}".strip(), "record", "failed",
                     "a row of the cell record is not in rows.jsonl")
        self._values(config_hash, numbered, config)

    def _unreadable(self) -> set[str]:
        return {Path(c.file).stem for c in self.checks if c.file.startswith("cells/") and c.status == "failed"}

    def _scores(self, relative: str, *, kind: str, config_hash: str | None, size: int | None):
        """CandidateScores of a record file, or the reason it cannot be used (a string)."""
        key = f"{relative}|{config_hash}|{size}"
        if key in self.scores:
            return self.scores[key]
        from side_bench.results.candidates import load_scores, read_table

        pattern = CELL_FILE if kind == "candidates" else NULL_FILE
        result: object
        match = pattern.fullmatch(relative) if isinstance(relative, str) else None
        if match is None:
            result = (f"recorded file name {shown(relative, 80)!s} is not candidates/"
                      f"{'<config hash>' if kind == 'candidates' else 'null-<64 hex>'}.parquet: refused, never opened")
        elif kind == "candidates" and match.group(1) != config_hash:
            result = f"{relative} is not named by the row's config hash"
        elif (path := self.plain_file(relative)) is None:
            result = f"{relative}: missing, or not a plain file inside the run folder"
        else:
            try:
                _, metadata = read_table(path)
                scores = load_scores(path)
            except (BenchError, OSError, ValueError, KeyError, TypeError) as error:
                result = f"{relative}: {one_line(error)}"
            else:
                if metadata.get("kind") != kind:
                    result = f"{relative}: its metadata says kind {shown(metadata.get('kind'), 20)}, expected {kind}"
                elif kind == "candidates" and metadata.get("config_hash") != config_hash:
                    result = f"{relative}: written for cell {shown(metadata.get('config_hash'), 12)}, not this one"
                elif size is not None and scores.n_candidates != size:
                    result = f"{relative}: {scores.n_candidates} records, the row says {size}"
                else:
                    result = scores
        self.scores[key] = result
        return result

    def _values(self, config_hash: str, numbered: list[tuple[int, dict]], config: dict | None) -> None:
        from side_bench.results.records import cell_rows
        from side_bench.scoring.rows import metric_rows
        from side_bench.scoring.scores import Band

        first = numbered[0][1]
        scores = self._scores(first.get("candidates_file"), kind="candidates", config_hash=config_hash,
                              size=first.get("n_generations"))
        null_scores = self._scores(first.get("null_candidates_file"), kind="null", config_hash=None,
                                   size=first.get("n_null"))
        for field, found in (("candidates_file", scores), ("null_candidates_file", null_scores)):
            if isinstance(found, str):  # why it cannot be used, on the row that names it
                self.add("rows.jsonl", numbered[0][0], _label(first, metric=False), "record-file", "failed",
                         f"{field}: {found}")
            else:
                self.add(first[field], None, _label(first, metric=False), "record-file", "ok")
        gallery = first.get("gallery")
        if gallery is not None and not (isinstance(gallery, str) and GALLERY_FILE.fullmatch(gallery)):
            self.add("rows.jsonl", numbered[0][0], _label(first, metric=False), "record-file", "failed",
                     f"gallery {shown(gallery, 80)}: not galleries/<config hash>.png; refused")
        unusable = next((f for f in (scores, null_scores) if isinstance(f, str)), None)
        if config is None or unusable is not None:
            why = "no config to rebuild the metrics from" if config is None else "its records cannot be read"
            for number, row in numbered:
                self.add("rows.jsonl", number, _label(row), "values", "failed", f"not recomputed: {why}")
            return
        try:
            names = list(dict.fromkeys(config.get("metrics") or []))
            settings = config.get("metric_settings") or {}
            components = config.get("metric_components") or {}
            bands = [Band(**b) for b in config.get("bands") or []]
            metrics, who = {}, {}
            for name in names:
                registration = self.registry.get("metrics", components.get(name, name), "metric")
                metrics[name] = self.registry.build("metrics", components.get(name, name), settings.get(name, {}),
                                                    f"config.metric_settings.{name}")
                who[name] = registration.describe()
            recomputable = {n: m for n, m in metrics.items() if not traits_of("metrics", m).needs_model}
            fresh = metric_rows(scores, recomputable, bands, who)
            fresh_null = metric_rows(null_scores, recomputable, bands, who)
            expected = cell_rows({}, fresh, fresh_null, {n: traits_of("metrics", m) for n, m in metrics.items()},
                                 settings)
        except (BenchError, TypeError, ValueError, KeyError) as error:
            for number, row in numbered:
                self.add("rows.jsonl", number, _label(row), "values", "failed",
                         f"the metrics cannot be rebuilt here: {one_line(error)}")
            self._copy_decisions(first, scores, None, [], {})
            return
        self._copy_decisions(first, scores, recomputable, bands, who)
        by_key = {(r["metric"], r["band"]): r for r in expected}
        for number, row in numbered:
            label = _label(row)
            metric = metrics.get(row["metric"])
            if metric is not None and traits_of("metrics", metric).needs_model:
                problem = _model_level_interval(row)
                self.add("rows.jsonl", number, label, "values", "failed" if problem else "skipped",
                         problem or "a model-level metric: it needs the target model, which a run folder does not "
                                    "hold")
                continue
            again = by_key.get((row["metric"], row["band"]))
            if again is None:
                self.add("rows.jsonl", number, label, "values", "failed",
                         "no such metric and band in the config: nothing recomputes it")
                continue
            differences = _differences(row, again)
            self.add("rows.jsonl", number, label, "values", "failed" if differences else "ok",
                     "; ".join(differences[:4]))


    def _copy_decisions_problem(self, relative: str, scores, metrics: dict, bands: list, who: dict) -> str | None:
        """Why the stored copy decisions of a cell's records differ from what ``metrics`` decide
        on its scores (None: they agree)."""
        import numpy as np

        from side_bench.results.candidates import stored_copies
        from side_bench.scoring.rows import copy_decisions

        stored = stored_copies(self.plain_file(relative))
        if stored is None:
            return None
        fresh = copy_decisions(scores, metrics, bands, who)

        def name(key: tuple) -> str:
            return key[0] + (f" {key[1]}" if key[1] else "")

        extra = sorted(set(stored.decisions) - set(fresh), key=str)
        missing = sorted(set(fresh) - set(stored.decisions), key=str)
        if extra or missing:
            return "; ".join(([f"stores {', '.join(map(name, extra))}, which no metric here decides"] if extra else [])
                             + ([f"lacks {', '.join(map(name, missing))}"] if missing else []))
        for key, decided in fresh.items():
            held = stored.decisions[key]
            if isinstance(decided, str) or isinstance(held, str):
                if decided != held:
                    return f"{name(key)}: stored {shown(held, 80)!s}, recomputed {shown(decided, 80)!s}"
            elif len(held) != len(decided) or (differ := int(np.sum(held != decided))):
                return (f"{name(key)}: {differ if len(held) == len(decided) else 'all'} of {len(decided)} "
                        "candidates decided otherwise than the records store")
        return None

    def _copy_decisions(self, first: dict, scores, metrics: dict, bands: list, who: dict) -> None:
        from side_bench.results.candidates import stored_copies

        relative = first["candidates_file"]
        try:
            stored = stored_copies(self.plain_file(relative), read=False)
        except (BenchError, OSError, ValueError, KeyError, TypeError) as error:
            self.add(relative, None, _label(first, metric=False), "copy-decisions", "failed", one_line(error))
            return
        if stored is None:
            return  # written before records stored them: nothing to check
        if metrics is None:  # a metric of the config is not installed here (the values line says which)
            self.add(relative, None, _label(first, metric=False), "copy-decisions", "skipped",
                     "not recomputed: the config's metrics cannot be built here")
            return
        try:
            problem = self._copy_decisions_problem(relative, scores, metrics, bands, who)
        except (BenchError, OSError, ValueError, KeyError, TypeError) as error:
            problem = one_line(error)
        self.add(relative, None, _label(first, metric=False), "copy-decisions", "failed" if problem else "ok",
                 problem or "")


def target_problem(row: dict, pack) -> str | None:
    """Why a row's recorded target model is not one of ``pack``'s models (``run.targets.Pack``),
    or None when it is: found by its key, the same files with the same sha256. Which pack the
    row names (``target_model.pack``) does not decide: a model trained here and exported into
    the pack, or a pack exported twice, are the same weights."""
    identity = row.get("target_model")
    if not isinstance(identity, dict):
        return (f"no target identity recorded: run with side-bench >= {TARGET_IDENTITY_SINCE} and --targets "
                f"{shown(pack.root, 80)}")
    key = identity.get("key")
    if not isinstance(key, str) or key not in pack.targets:
        held = ", ".join(sorted({f"scale {t.get('scale')} seed {t.get('seed')}" for t in pack.targets.values()}))
        return (f"target model {shown(str(key)[:12])} is not in the pack {shown(pack.root, 80)} "
                f"(it holds {shown(held, 120)})")
    expected = pack.identity(key)["files"]
    recorded = identity.get("files") if isinstance(identity.get("files"), dict) else {}
    differing = sorted(name for name in set(expected) | set(recorded) if expected.get(name) != recorded.get(name))
    if differing:
        name = differing[0]
        said = (f"file {shown(name, 60)}: sha256 {shown(str(recorded.get(name) or 'absent')[:12])}, "
                f"the pack's {shown(str(expected.get(name) or 'absent')[:12])}")
        more = f" (and {len(differing) - 1} more)" if len(differing) > 1 else ""
        return f"target model {key[:12]} is not the pack's: {said}{more}"
    return None


def _label(row: dict, metric: bool = True) -> str:
    text = f"cell {str(row.get('config_hash'))[:12]} ({shown(row.get('attack'), 60)} @ {row.get('scale')}, " \
           f"seed {row.get('seed')})"
    if metric:
        text += f" {shown(row.get('metric'), 40)}" + (f" {shown(row.get('band'), 20)}" if row.get("band") else "")
    return text


def _non_finite(value, path: str = "") -> str | None:
    """The first field holding a non-finite float (JSON cannot, but a reader might be lenient)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)"
    if isinstance(value, dict):
        for key, item in value.items():
            if (found := _non_finite(item, f"{path}.{key}" if path else str(key))) is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _non_finite(item, f"{path}[{i}]")) is not None:
                return found
    return None


def _settings_differ(row: dict, config: dict) -> list[str]:
    """The row's fields that are not what its config says (the runner copies them from it)."""
    attack = config.get("attack") if isinstance(config.get("attack"), dict) else {}
    condition = attack.get("condition") if isinstance(attack.get("condition"), dict) else {}
    extractor = attack.get("extractor") if isinstance(attack.get("extractor"), dict) else {}
    features = config.get("features") if isinstance(config.get("features"), dict) else {}
    expected = {
        "suite": config.get("suite"), "scale": config.get("scale"), "seed": config.get("seed"),
        "attack": attack.get("name"), "condition": condition.get("name"),
        "condition_settings": condition.get("settings"), "extractor": extractor.get("name"),
        "extractor_settings": extractor.get("settings"), "features": features.get("name"),
        "features_identity": features.get("identity"), "dataset": config.get("dataset"),
        "model": config.get("model"), "n_generations": config.get("n_generations"),
        "plugins": config.get("plugins", {}),
        "metric_settings": (config.get("metric_settings") or {}).get(row.get("metric"), {}),
    }
    differing = [key for key, value in expected.items() if key in row and row[key] != value]
    # a row records every installed version (provenance); the config only those its cell uses
    # (run/suite.py cell_versions), and the row must agree with each of them
    hashed, recorded = config.get("versions"), row.get("versions")
    if "versions" in row and recorded != hashed and not (
            isinstance(hashed, dict) and isinstance(recorded, dict)
            and all(k in recorded and recorded[k] == v for k, v in hashed.items())):
        differing.append("versions")
    if row.get("metric") not in (config.get("metrics") or []):
        differing.append("metric")
    if row.get("band") is not None:
        bands = [(b.get("name"), b.get("low"), b.get("high")) for b in config.get("bands") or [] if isinstance(b, dict)]
        if (row["band"], row.get("band_low"), row.get("band_high")) not in bands:
            differing.append("band")
    return differing


def _close(a, b, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= tolerance + tolerance * abs(float(b))


def _differences(row: dict, again: dict) -> list[str]:
    """What the stored row says and the recomputation does not (within the tolerances)."""
    found = []
    for keys, tolerance in ((EXACT_FIELDS + NULL_EXACT, None), (VALUE_FIELDS + NULL_VALUE, VALUE_TOLERANCE),
                            (INTERVAL_FIELDS + NULL_INTERVAL, INTERVAL_TOLERANCE)):
        for key in keys:
            stored, fresh = row.get(key), again.get(key)
            same = stored == fresh if tolerance is None else _close(stored, fresh, tolerance)
            if not same:
                found.append(f"{key} {shown(stored, 24)} recomputes to {shown(fresh, 24)}")
    return found


def _model_level_interval(row: dict) -> str | None:
    """For a membership AUC or TPR: why its interval does not follow from its value, or None."""
    from side_bench.scoring import stats

    value, members, nonmembers = row.get("value"), row.get("n_train"), row.get("n_null")
    if value is None or not isinstance(members, int) or not isinstance(nonmembers, int):
        return None
    if row.get("interval") == stats.AUC_INTERVAL:
        low, high = stats.auc_interval(value, members, nonmembers)
    elif row.get("interval") == stats.TPR_INTERVAL and isinstance(row.get("count"), int) and row.get("n"):
        if abs(row["count"] / row["n"] - value) > VALUE_TOLERANCE:
            return f"value {value} is not count / n ({row['count']} / {row['n']})"
        low, high = stats.clopper_pearson(row["count"], row["n"])
    else:
        return None
    if not (_close(row.get("ci_low"), low, INTERVAL_TOLERANCE) and _close(row.get("ci_high"), high, INTERVAL_TOLERANCE)):
        return (f"interval [{shown(row.get('ci_low'), 12)}, {shown(row.get('ci_high'), 12)}] does not follow from "
                f"its value and group sizes ([{low:.6g}, {high:.6g}])")
    return None
