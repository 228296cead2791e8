"""The cache folder: every cached artefact is an entry, a folder of files with a manifest.

    <cache>/models/<key>/                 a trained target model (diffusers layout)
    <cache>/classifiers/<key>/            a guidance classifier, its config and record
    <cache>/surrogates/pools/<key>/       SIDE's sampled pool
    <cache>/surrogates/clusterings/<key>/ its clustering: kept images, labels, centroids, record
    <cache>/registry/                     the plugin listing (registry.py; remade when unreadable)

An entry is written into a temporary folder beside it; once its files are complete, the
manifest (``cache-manifest.json``: every file's size and sha256) is written last inside it,
and the folder is renamed into place, so an entry is never seen half written. Reading checks
each file against the manifest first. A file that is missing, unreadable, of another size or
another hash (truncated, bit-flipped) means the entry is damaged: one warning names the file,
the entry is moved aside to ``<entry>.corrupt-<timestamp>`` (a user's data is never deleted)
and the caller rebuilds it, so the run goes on with numbers a clean cache would give.

Entries written before manifests existed (no ``cache-manifest.json``) are hashed on first use:
they were written atomically by the same code, so one that loads is complete, and one that does
not load (truncated weights, a missing file) is damaged and rebuilt as above. Rebuilding all
of them instead would retrain every model (an hour of CPU for the digits suites) to get the
same weights; what hashing on first use cannot catch is a flip made before the upgrade that
still loads, and ``side-bench cache verify`` lists those entries as ``unverified``.
Hashing a 140 MB UNet takes 0.09-0.3 s on this project's 2-core machine (docs/user-guide.md, Caches).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from side_bench import cost
from side_bench.errors import BenchError
from side_bench.results.store import atomic_directory, atomic_write, file_lock, sha256_file

MANIFEST = "cache-manifest.json"
MANIFEST_FORMAT = 1
ASIDE = ".corrupt-"  # <entry>.corrupt-<timestamp>: a damaged entry moved out of the way
LEGACY_KINDS = ("models", "classifiers")  # folders whose entries predate manifests

log = logging.getLogger("side_bench.cache")
T = TypeVar("T")


def hash_files(folder: Path) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file in ``folder`` but the manifest."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def write_manifest(folder: Path, kind: str, adopted: bool = False, made_cost: dict | None = None) -> None:
    """Hash the entry's files and write its manifest, atomically (after the files). ``made_cost``:
    what making the entry cost an attack (side_bench/cost.py), charged again to a cell that loads it."""
    manifest = {"format": MANIFEST_FORMAT, "kind": kind, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": hash_files(folder)}
    if adopted:  # hashed on first use, not when written: see the module's docstring
        manifest["adopted"] = True
    if made_cost is not None:
        manifest["cost"] = made_cost
    atomic_write(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict:
    """The entry's manifest, or OSError/ValueError when it cannot be read or makes no sense."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
            for v in files.values()):
        raise ValueError("no list of files with their sizes and sha256")
    return manifest


def entry_problem(folder: Path) -> str | None:
    """Why the entry at ``folder`` cannot be trusted, naming the file; None when every file
    matches its manifest. An entry without a manifest is the caller's to judge (legacy)."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as error:
        return f"{folder / MANIFEST}: unreadable manifest ({' '.join(str(error).split())[:120]})"
    for name, expected in sorted(manifest["files"].items()):
        path = folder / name
        try:
            size = path.stat().st_size
            if size != expected["bytes"]:
                return f"{path}: {size} bytes, expected {expected['bytes']} (truncated or replaced)"
            if sha256_file(path) != expected["sha256"]:
                return f"{path}: sha256 differs from the manifest (damaged)"
        except FileNotFoundError:
            return f"{path}: missing"
        except OSError as error:
            return f"{path}: unreadable ({error.strerror or error})"
    return None


def move_aside(folder: Path) -> Path | None:
    """Rename a damaged entry to ``<entry>.corrupt-<timestamp>``; None when another process
    moved it first. Never deletes: the user decides what to do with the bad copy."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for attempt in range(100):
        target = folder.with_name(f"{folder.name}{ASIDE}{stamp}" + (f"-{attempt}" if attempt else ""))
        if target.exists():
            continue
        try:
            folder.rename(target)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BenchError(f"{folder}: a damaged cache entry that cannot be moved aside "
                             f"({error.strerror or error}); move or delete it by hand") from error
        return target
    raise BenchError(f"{folder}: a damaged cache entry, and 100 earlier copies are already moved aside; "
                     f"delete them ({folder.name}{ASIDE}*)")


def _discard(folder: Path, kind: str, problem: str) -> None:
    target = move_aside(folder)
    where = f"moved aside to {target.name}" if target else "already moved aside by another process"
    log.warning("warning: cached %s: %s; %s; it will be rebuilt", kind, problem, where)


def read_cache_entry(folder: Path, load: Callable[[Path], T], kind: str) -> T | None:
    """``load(folder)`` if the entry is there and whole; None when it is absent or damaged
    (then it has been moved aside with one warning, and the caller rebuilds it).

    With a manifest, the files are checked against it before ``load`` runs; an error from
    ``load`` on files that match is not damage (it propagates). Without one (an entry from
    before manifests), an error from ``load`` is damage, and an entry that loads is hashed now.
    """
    folder = Path(folder)
    value = _read_entry(folder, load, kind)
    if value is None:  # it will be made now: what that costs an attack is measured from here
        cost.cache_missed(str(folder))
    return value


def _read_entry(folder: Path, load: Callable[[Path], T], kind: str) -> T | None:
    if not folder.is_dir():
        return None
    if (folder / MANIFEST).exists():
        problem = entry_problem(folder)
        if problem is None:
            value = load(folder)
            # an attack that loads it is charged what making it cost (side_bench/cost.py)
            with contextlib.suppress(OSError, ValueError):
                cost.cache_loaded(read_manifest(folder).get("cost"), kind)
            return value
        _discard(folder, kind, problem)
        return None
    try:
        value = load(folder)
    except Exception as error:  # noqa: BLE001 - any failure to load an unverified entry is damage
        _discard(folder, kind, f"{folder}: no manifest and it does not load "
                               f"({type(error).__name__}: {' '.join(str(error).split())[:160]})")
        return None
    with contextlib.suppress(OSError):  # a read-only cache still serves; it stays unverified
        write_manifest(folder, kind, adopted=True)
    cost.cache_loaded(None, kind)
    return value


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold the entry's build lock (``<key>.lock`` beside it, an flock released on exit or
    death) around "read it, or build and write it": two processes sharing a run folder reach
    the same model at once (the first cells of a scale), and without it both would train it."""
    folder = Path(folder)
    with file_lock(folder.with_name(f"{folder.name}.lock")):
        yield


@contextlib.contextmanager
def write_cache_entry(folder: Path, kind: str) -> Iterator[Path]:
    """Yield a temporary folder to write the entry's files into; then the manifest is written
    (hashing them) and the folder renamed to ``folder``. A killed run leaves no entry; when
    another process wrote the same entry first, its copy is kept (``atomic_directory``)."""
    with atomic_directory(folder, complete=MANIFEST) as temporary:
        yield temporary
        write_manifest(temporary, kind, made_cost=cost.cache_made(str(folder)))


# -- side-bench cache verify ------------------------------------------------------------------

@dataclass(frozen=True)
class CacheCheck:
    """One line of ``cache verify``: an entry (or a folder of other files) and what it is.

    status: ``ok`` (every file matches its manifest), ``bad`` (damaged: ``detail`` names the
    file), ``moved`` (bad, moved aside by ``--fix``), ``unverified`` (an entry from before
    manifests, hashed when next used), ``aside`` (moved aside earlier), ``stale`` (a temporary
    left by a killed run), ``other`` (files that are no entry, e.g. the plugin listing).
    """

    status: str
    path: Path
    detail: str = ""

    def line(self) -> str:
        return "\t".join([self.status, str(self.path), self.detail]).rstrip("\t")


def verify_cache(root: Path, fix: bool = False) -> list[CacheCheck]:
    """Check every entry under ``root`` (``cache verify``); with ``fix``, move bad ones aside."""
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"{root}: not a folder (expected a side-bench cache folder)")
    checks: list[CacheCheck] = []

    def walk(folder: Path, depth: int) -> None:
        loose = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):  # .<name>.<random>: a write a killed run never finished
                checks.append(CacheCheck("stale", path, "temporary left by an interrupted write"))
            elif ASIDE in path.name:
                checks.append(CacheCheck("aside", path, "moved aside earlier; delete it when no longer needed"))
            elif path.is_file() and path.suffix == ".lock":  # an entry's build lock (cache_lock): no data
                continue
            elif path.is_dir() and (path / MANIFEST).exists():
                checks.append(check_entry(path))
            elif path.is_dir() and depth == 1 and folder.name in LEGACY_KINDS:
                checks.append(CacheCheck("unverified", path, "no manifest (an older side-bench); hashed when next used"))
            elif path.is_dir():
                walk(path, depth + 1)
            else:
                loose.append(path)
        if loose:
            checks.append(CacheCheck("other", folder, f"{len(loose)} file(s) outside any entry; left alone"))

    def check_entry(path: Path) -> CacheCheck:
        problem = entry_problem(path)
        if problem is None:
            return CacheCheck("ok", path, read_manifest(path).get("kind", ""))
        if not fix:
            return CacheCheck("bad", path, problem)
        target = move_aside(path)
        return CacheCheck("moved", path, f"{problem}; moved to {target.name if target else '(gone already)'}")

    walk(root, 0)
    return checks

