"""Where a leaderboard's attacks come from: this project's runs, or submissions, verified here or not.

A run folder with a ``submission.toml`` beside its ``rows.jsonl`` (``results/submission.py``)
is a submission; every other run folder given to ``leaderboard`` is this project's run (its
maintainer chose to pass it). A submission is a **verified submission** only when
``side-bench verify`` (``scoring/verify.py``: schema, records, config hashes, record files,
every value recomputed from the per-candidate records, and with ``--targets PACK`` each row's
target model) passes on the folder *here, when the leaderboard is built*; otherwise it is an
**unverified submission**, shown but marked.

Why the leaderboard verifies rather than trusting a stamp in the folder: anything in the folder
is the submitter's to write. A ``verified = true`` field, or a stamp listing the verified rows'
hashes, can be edited or recomputed by anyone with ``sha256sum`` after the rows are edited. So
the outcome of a verification is kept where the folder cannot reach it, the leaderboard's own
cache (``$SIDE_BENCH_CACHE/verified/``), keyed by the sha256 of every file in the folder, the
pack checked against, and the verifier's own code and plugins (``registry.listing_key``): any
edit to any file, or a new side-bench, is a new key and the folder is verified again. A cache
that cannot be written only costs the time of verifying again.

Rows of different origins are never pooled: when an attack's name appears in a setup from more
than one source (this project, or a submission), a submission's rows are renamed
``name (submission ATTACK)`` (this project's rows keep their names, so a page without
submissions is unchanged). The table, CSV and JSON carry ``origin`` and ``submission``; the
page marks a submitted attack's row, legend entry and plot labels (``ORIGIN_MARKS``) and lists
the submissions under "Submissions". Figures a paper reports (``--reported``) are never rows: they
keep their own section.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from side_bench.errors import BenchError
from side_bench.report.leaderboard import Warn, cap
from side_bench.results.submission import SUBMISSION_FILE, Submission, read_submission

PROJECT = "this project's run"
VERIFIED = "verified submission"
UNVERIFIED = "unverified submission"
ORIGIN_MARKS = {VERIFIED: "[submitted, verified]", UNVERIFIED: "[submitted, unverified]"}
ORIGIN_LEGEND = (
    "Origin: an attack without a mark comes from this project's runs. [submitted, verified]: from a result "
    "folder submitted with a submission.toml, on which side-bench verify passed when this page was built "
    "(every value recomputed from the folder's per-candidate records; its target models checked only where "
    "the table says so). [submitted, unverified]: submitted, but verify failed on it (the first failure is "
    "named below): its numbers are the submitter's and nothing here vouches for them. Figures reported by "
    "papers are never in these tables: they have their own section."
)
CACHE_FOLDER = "verified"
VERIFICATION_FORMAT = 1  # bump when what a cached verification holds changes


@dataclass(frozen=True)
class Verification:
    """The outcome of ``verify`` on one submitted run folder."""

    passed: bool
    checks: int
    failed: int
    skipped: int
    first_failure: str = ""  # the first failed check's line ('' when it passed)
    targets: str | None = None  # the sha256 of the pack checked against (None: not checked)

    def text(self) -> str:
        if self.passed:
            said = f"verify passed here: {self.checks} checks"
            if self.skipped:
                said += f" ({self.skipped} skipped: model-level values)"
        else:
            said = f"verify failed here: {self.failed} of {self.checks} checks, first: {cap(self.first_failure, 200)}"
        return said


@dataclass
class SubmissionEntry:
    """One source of a page's submitted rows, for the legend's "Submissions" table."""

    attacks: list[str]  # as the page names them (renamed on a clash)
    origin: str
    mark: str
    authors: str
    link: str
    code: str
    licence: str
    contact: str
    verification: str
    targets: str
    folders: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# Verifying a submitted folder, remembered outside it
# ------------------------------------------------------------------------------------------


def folder_files(run_dir: Path) -> list[list[str]]:
    """[relative path, sha256] of every file in the folder (a link: its target, never followed)."""
    found = []
    for root, folders, files in os.walk(run_dir, followlinks=False):
        folders.sort()
        for name in sorted(files) + [f for f in folders if (Path(root) / f).is_symlink()]:
            path = Path(root) / name
            relative = path.relative_to(run_dir).as_posix()
            if path.is_symlink():
                found.append([relative, "link:" + os.readlink(path)])
            else:
                found.append([relative, hashlib.sha256(path.read_bytes()).hexdigest()])
    return found


def _verifier_identity() -> str:
    from side_bench.registry import listing_key, selected_entry_points

    return listing_key(selected_entry_points())


def verification_key(run_dir: Path, pack_sha: str | None) -> str:
    parts = [VERIFICATION_FORMAT, _verifier_identity(), pack_sha, folder_files(run_dir)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def verify_submission(run_dir: str | Path, *, targets: str | Path | None = None,
                      cache_dir: str | Path | None = None) -> Verification:
    """``verify`` on one run folder (with ``targets``: a pack every row's target model must be
    in), its outcome remembered in the cache by the folder's contents (see the module's docstring)."""
    from side_bench.results.store import atomic_write, default_cache_dir
    from side_bench.scoring.verify import Check, failures, verify_runs

    run_dir = Path(run_dir)
    pack_sha = None
    if targets is not None:
        from side_bench.run.targets import read_pack

        pack_sha = read_pack(targets, check_files=False).sha256
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / CACHE_FOLDER
    entry = cache / f"{verification_key(run_dir, pack_sha)}.json"
    try:
        found = json.loads(entry.read_text())
        if isinstance(found, dict) and found.get("format") == VERIFICATION_FORMAT:
            return Verification(**{k: found[k] for k in Verification.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not verified here yet (or an unreadable entry): verify
    checks = verify_runs([run_dir], targets=targets)
    failed = failures(checks)
    first = Check(**next(failed.itertuples(index=False))._asdict()).text().removeprefix("FAILED\t") \
        if len(failed) else ""
    outcome = Verification(passed=failed.empty, checks=len(checks), failed=len(failed),
                           skipped=int((checks["status"] == "skipped").sum()),
                           first_failure=first.replace("\t", " ").replace(str(run_dir) + "/", ""),
                           targets=pack_sha)
    try:
        atomic_write(entry, json.dumps({"format": VERIFICATION_FORMAT, "run_dir": str(run_dir.resolve()),
                                        **vars(outcome)}, indent=1) + "\n")
    except OSError:
        pass  # a read-only cache: verified again next time
    return outcome


# ------------------------------------------------------------------------------------------
# Origins of the rows
# ------------------------------------------------------------------------------------------


def _targets_text(rows: pd.DataFrame, verification: Verification) -> str:
    """Which target models a submission's rows say they attacked, and whether that was checked."""
    identities = [t for t in rows["target_model"]] if "target_model" in rows else []
    packs = {t.get("pack") for t in identities if isinstance(t, dict)}
    if verification.targets is not None:
        pack = verification.targets[:12]
        return (f"the models of the pack {pack}, checked (--targets)" if verification.passed
                else f"checked against the pack {pack} (--targets); verify failed")
    if not identities or not all(isinstance(t, dict) for t in identities):
        return "not recorded (rows from before target_model)"
    if packs == {None}:
        return "its own, trained where it ran (not checked: no --targets)"
    named = ", ".join(sorted(str(p)[:12] for p in packs if p))
    return f"the pack {named}, by its rows (not checked: no --targets)"


def mark_origins(rows: pd.DataFrame, *, targets: str | Path | None = None, cache_dir: str | Path | None = None,
                 warn: Warn | None = None) -> tuple[pd.DataFrame, list[SubmissionEntry]]:
    """``rows`` (``load_rows``) with ``origin`` and ``submission`` (JSON text, '' for this project's
    rows) and with submitted attacks renamed where their name clashes with another source's in
    one setup; and the legend's entries. Every ``submission.toml`` is validated, and its
    ``attack`` must be one of its folder's attacks, before any folder is verified."""
    if rows.empty:
        return rows, []
    rows = rows.copy()
    folders = list(dict.fromkeys(rows["run_dir"]))
    submitted: dict[str, Submission] = {}
    for folder in folders:
        submission = read_submission(folder)
        if submission is None:
            continue
        mine = rows[rows["run_dir"] == folder]
        names = set(mine["attack"]) | set(mine["attack_base"])
        if submission.attack not in names:
            raise BenchError(f"{Path(folder) / SUBMISSION_FILE}: field 'attack': {submission.attack!r} is not an "
                             f"attack of its rows (found: {cap(', '.join(sorted(map(str, names))), 200)})")
        submitted[folder] = submission
    rows["origin"], rows["submission"] = PROJECT, ""
    if not submitted:
        return rows, []
    rows["_source"] = ""
    verdicts = {folder: verify_submission(folder, targets=targets, cache_dir=cache_dir) for folder in submitted}
    sources: dict[tuple, dict] = {}  # (submission, origin) -> the folders of one legend entry
    for folder, submission in submitted.items():
        verdict = verdicts[folder]
        origin = VERIFIED if verdict.passed else UNVERIFIED
        if not verdict.passed and warn is not None:
            warn(f"{folder}: submitted, and verify failed here ({verdict.failed} of {verdict.checks} checks; first: "
                 f"{cap(verdict.first_failure, 160)}); shown as an unverified submission")
        mask = rows["run_dir"] == folder
        rows.loc[mask, "origin"] = origin
        rows.loc[mask, "submission"] = json.dumps({**submission.as_dict(), "verification": verdict.text()})
        rows.loc[mask, "_source"] = json.dumps([submission.as_dict(), origin])  # one source: folders alike
        sources.setdefault((submission, origin), {"folders": [], "verdicts": []})
        sources[(submission, origin)]["folders"].append(folder)
        sources[(submission, origin)]["verdicts"].append(verdict)
    rows = _rename_clashes(rows)
    entries = []
    for (submission, origin), found in sources.items():
        part = rows[rows["run_dir"].isin(found["folders"])]
        verdict = next((v for v in found["verdicts"] if not v.passed), found["verdicts"][0])
        entries.append(SubmissionEntry(
            attacks=[cap(a) for a in dict.fromkeys(part["attack"])], origin=origin, mark=ORIGIN_MARKS[origin],
            authors=cap(", ".join(submission.authors), 200), link=cap(submission.link, 200),
            code=cap(submission.code, 120), licence=cap(submission.licence, 80), contact=cap(submission.contact, 120),
            verification=verdict.text() + (f" ({len(found['folders'])} run folders)" if len(found["folders"]) > 1
                                           else ""),
            targets=_targets_text(part, verdict), folders=[cap(f, 160) for f in found["folders"]]))
    return rows, entries


def _rename_clashes(rows: pd.DataFrame) -> pd.DataFrame:
    """A submitted attack whose name another source (``_source``: '' for this project, else the
    submission's fields and origin) also uses in the same setup gets ' (submission ATTACK)'
    (and, for a second status of one submission, ', unverified'): rows of different origins
    are never averaged together."""
    renamed = {}
    for (_, attack), part in rows.groupby(["setup", "attack"], sort=False):
        kinds = list(dict.fromkeys(part["_source"]))
        if len(kinds) < 2:
            continue
        for kind in kinds:
            if not kind:
                continue  # this project's rows keep their names
            submission, origin = json.loads(kind)
            label = f"submission {submission['attack']}"
            statuses = {json.loads(k)[1] for k in kinds if k and json.loads(k)[0] == submission}
            if len(statuses) > 1 and origin == UNVERIFIED:
                label += ", unverified"
            renamed[(kind, attack)] = label
    if not renamed:
        return rows.drop(columns="_source")
    rows = rows.copy()
    for index in rows.index:
        label = renamed.get((rows.at[index, "_source"], rows.at[index, "attack"]))
        if label is not None:
            rows.at[index, "attack"] = f"{rows.at[index, 'attack']} ({label})"
            rows.at[index, "attack_base"] = f"{rows.at[index, 'attack_base']} ({label})"
    return rows.drop(columns="_source")


def origin_columns(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The aggregated ``table`` with each line's ``origin`` and ``submission`` (by setup and attack)."""
    if table.empty:
        return table
    if "origin" not in rows:
        return table.assign(origin=PROJECT, submission="")
    by_attack = rows.drop_duplicates(["setup", "attack"]).set_index(["setup", "attack"])
    keys = list(zip(table["setup"], table["attack"], strict=True))
    table = table.copy()
    table["origin"] = [by_attack["origin"].get(k, PROJECT) for k in keys]
    table["submission"] = [by_attack["submission"].get(k, "") for k in keys]
    return table


def origin_marks(rows: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(setup as the page shows it, ``cap(setup, 160)``; attack) -> its mark (``ORIGIN_MARKS``), for
    every submitted attack of ``rows`` (``mark_origins``); this project's attacks have none. The
    tables (``mark_page``) and the plots (``plots.attack_label``) mark from this one map."""
    if rows.empty or "origin" not in rows:
        return {}
    submitted = rows[rows["origin"].isin(list(ORIGIN_MARKS))].drop_duplicates(["setup", "attack"])
    return {(cap(setup, 160), str(attack)): ORIGIN_MARKS[origin]
            for setup, attack, origin in submitted[["setup", "attack", "origin"]].itertuples(index=False)}


def mark_page(page, rows: pd.DataFrame, entries: list[SubmissionEntry]) -> None:
    """Mark submitted attacks on the page (``report/page.py``'s model): their rows in every table
    and their legend entries; the legend's "Submissions" table and the marks' meaning. The plots
    carry the same marks (``origin_marks``, drawn in ``files._draw``)."""
    if not entries or "origin" not in rows:
        return
    marks = {(setup, cap(attack)): mark for (setup, attack), mark in origin_marks(rows).items()}
    for table in page.tables():
        for row in table.rows:
            mark = None if row.null else marks.get((table.setup, row.label))
            if mark is not None:
                row.label = f"{row.label} {mark}"
    legend = {attack: mark for (_, attack), mark in marks.items()}
    for attack in page.attacks:
        if attack.name in legend:
            attack.name = f"{attack.name} {legend[attack.name]}"
    page.submissions = entries
    page.origin_legend = ORIGIN_LEGEND
