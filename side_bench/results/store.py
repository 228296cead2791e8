"""The result store: plain files, every write atomic (write a temporary file, then rename).
What the files hold (the row layout, schema versions, upgrades) is ``records.py``'s.

    results/<suite>/<run-id>/manifest.json   suite, config, versions, device, git, start/end
    results/<suite>/<run-id>/cells/<hash>.json  one per finished cell: its rows or its failure
    results/<suite>/<run-id>/cells/<hash>.lock  while a process computes the cell (its PID)
    results/<suite>/<run-id>/rows.jsonl      all rows, rewritten from cells/ after each cell

A crash loses at most the cell in flight; a rerun skips cells whose file says "done".
A cell whose config changed (a plugin upgraded, a setting edited, same run id) is computed
again; once its new record is written, the old one moves to ``cells/superseded/`` so that
rows.jsonl never holds two results for one (scale, attack, seed).
Several processes may share one run folder: a cell is claimed with a lock file created
exclusively (``O_CREAT | O_EXCL``), so it is computed once; a lock whose process is gone
(same host, PID not alive) is stale and taken over. ``rows.jsonl`` and the manifest are
rewritten under an ``flock`` so that concurrent writers merge instead of clobbering.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from side_bench.contracts import dumps_strict
from side_bench.errors import BenchError
from side_bench.results.records import (
    CELLS_DIR,
    MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION,
    ROWS_FILE,
    row_order,
    upgrade_row,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, writes stay atomic
    fcntl = None

CACHE_ENV = "SIDE_BENCH_CACHE"


def default_cache_dir() -> Path:
    """The cache folder, $SIDE_BENCH_CACHE or ~/.cache/side-bench: trained models, classifiers,
    surrogate pools and clusterings (verified entries, ``cache.py``) and the plugin listing."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "side-bench")


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode() if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(folder: Path, complete: str) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success rename it to ``folder``.

    A killed run never leaves half a cached model. When another process finished the same
    folder first (the rename fails and ``folder / complete`` exists), its copy is kept.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        yield temporary
        temporary.rename(folder)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not (folder / complete).exists():
            raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def check_writable(folder: str | Path, what: str) -> Path:
    """``folder`` can be created or written to, or BenchError naming ``what`` (an option) and why.

    Checked before a run starts, so that an unwritable results, cache or output folder is one
    line and exit code 2 rather than a traceback half-way through. Nothing is created here.
    """
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BenchError(f"{what} {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"{what} {folder}: {probe} is not writable (permission denied)")
    return folder


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks (weights files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def failure_record(cell, error: str, traceback_text: str, seconds: float = 0.0, **extra) -> dict:
    """The record of a cell that failed (written like a finished one, with status "failed")."""
    return {"config_hash": cell.config_hash, "scale": cell.scale, "seed": cell.seed, "attack": cell.attack.name,
            "status": "failed", "error": error, "traceback": traceback_text, "seconds": seconds, **extra}


def write_json(path: Path, value: Any) -> None:
    """Strict JSON (NaN and infinity written as null, never as bare tokens), atomically."""
    atomic_write(path, dumps_strict(value, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``path``, held for the block; released on exit or death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def cell_identity(record: dict) -> tuple:
    """What a cell is, whatever its config: (scale, attack, seed)."""
    return (record.get("scale"), record.get("attack"), record.get("seed"))


def merge_manifests(old: dict, new: dict) -> dict:
    """What two runs into one folder agree on: the earliest start, every cell either listed
    (a cell listed by both with different configs: the new one's)."""
    merged = {**old, **new}
    if old.get("started") and new.get("started"):
        merged["started"] = min(old["started"], new["started"])
    cells = {cell_identity(c): c for c in old.get("cells", [])}
    cells.update({cell_identity(c): c for c in new.get("cells", [])})
    if cells:
        merged["cells"] = sorted(cells.values(), key=lambda c: (c["scale"], c["attack"], c["seed"], c["config_hash"]))
    return merged


class RunStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.cells_dir = self.run_dir / CELLS_DIR
        self.claimed: set[str] = set()

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / MANIFEST_FILE

    @property
    def _write_lock(self) -> Path:
        return self.run_dir / ".write.lock"

    def read_manifest(self) -> dict | None:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return None

    def write_manifest(self, manifest: dict) -> None:
        """Merge into the manifest on disk (another process may share the folder), atomically."""
        with file_lock(self._write_lock):
            merged = merge_manifests(self.read_manifest() or {}, manifest)
            write_json(self.manifest_path, {**merged, "schema_version": MANIFEST_SCHEMA_VERSION})

    def cell_record(self, config_hash: str) -> dict | None:
        path = self.cells_dir / f"{config_hash}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def is_done(self, config_hash: str) -> bool:
        record = self.cell_record(config_hash)
        return record is not None and record.get("status") == "done"

    # -- claims: one process computes a cell ----------------------------------------------

    def lock_path(self, config_hash: str) -> Path:
        return self.cells_dir / f"{config_hash}.lock"

    def lock_owner(self, config_hash: str) -> dict | None:
        """{"pid", "host"} of the process holding the cell, or None when it is free."""
        try:
            return json.loads(self.lock_path(config_hash).read_text() or "{}")
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # being written this instant: someone holds it
            return {}

    def claim(self, config_hash: str) -> bool:
        """Take the cell for this process; False when a live process holds it.

        A lock left by a dead process on this host is removed and retaken. A lock from
        another host cannot be checked and is respected (delete the .lock file by hand).
        """
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        path = self.lock_path(config_hash)
        for _ in range(3):
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.lock_owner(config_hash)
                if owner is None:
                    continue  # released meanwhile: try again
                stale = owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) \
                    and not pid_alive(owner["pid"])
                if not stale:
                    return False
                with file_lock(self._write_lock):  # one process removes a given stale lock
                    if self.lock_owner(config_hash) == owner:
                        path.unlink(missing_ok=True)
                continue
            with os.fdopen(handle, "w") as stream:
                stream.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            self.claimed.add(config_hash)
            return True
        return False

    def release(self, config_hash: str) -> None:
        if config_hash in self.claimed:
            self.claimed.discard(config_hash)
            self.lock_path(config_hash).unlink(missing_ok=True)

    def release_all(self) -> None:
        for config_hash in list(self.claimed):
            self.release(config_hash)

    # -- records and rows ------------------------------------------------------------------

    def write_cell(self, record: dict) -> None:
        write_json(self.cells_dir / f"{record['config_hash']}.json", record)
        self.release(record["config_hash"])
        self._supersede(record)
        self.write_rows()

    def _supersede(self, record: dict) -> None:
        """Move older records of the same (scale, attack, seed) with another config aside."""
        with file_lock(self._write_lock):
            for old in self.previous_records(record):
                folder = self.cells_dir / "superseded"
                folder.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # another process moved it first
                    os.replace(self.cells_dir / f"{old['config_hash']}.json", folder / f"{old['config_hash']}.json")

    def previous_records(self, cell: Any) -> list[dict]:
        """Records in this folder of the same (scale, attack, seed) as ``cell`` (a Cell or a
        record) but another config hash: results of an older config, to be recomputed."""
        if isinstance(cell, dict):
            identity, config_hash = cell_identity(cell), cell["config_hash"]
        else:
            identity, config_hash = (cell.scale, cell.attack.name, cell.seed), cell.config_hash
        return [r for r in self.records() if cell_identity(r) == identity and r.get("config_hash") != config_hash]

    def records(self) -> Iterable[dict]:
        if self.cells_dir.exists():
            for path in sorted(self.cells_dir.glob("*.json")):  # temporaries end in .tmp: never read
                yield json.loads(path.read_text())

    def rows(self) -> list[dict]:
        """Every finished cell's rows, brought up to the current schema version."""
        rows = []
        for record in self.records():
            where = f"{self.cells_dir / record.get('config_hash', '?')}.json"
            rows.extend(upgrade_row(row, where) for row in record.get("rows", []))
        return sorted(rows, key=row_order)

    def failures(self) -> list[dict]:
        return [r for r in self.records() if r.get("status") == "failed"]

    def write_rows(self) -> None:
        # Under the lock, the last writer has read every cell file written before it.
        with file_lock(self._write_lock):
            lines = "".join(dumps_strict(row, sort_keys=True, default=str) + "\n" for row in self.rows())
            atomic_write(self.run_dir / ROWS_FILE, lines)
