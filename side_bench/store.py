"""The result store: plain files, every write atomic (write a temporary file, then rename).

    results/<suite>/<run-id>/manifest.json   suite, config, versions, device, git, start/end
    results/<suite>/<run-id>/cells/<hash>.json  one per finished cell: its rows or its failure
    results/<suite>/<run-id>/rows.jsonl      all rows, rewritten from cells/ after each cell

A crash loses at most the cell in flight; a rerun skips cells whose file says "done".
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


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


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "rows.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.cells_dir = self.run_dir / "cells"

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / "manifest.json"

    def read_manifest(self) -> dict | None:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return None

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.manifest_path, {"schema_version": SCHEMA_VERSION, **manifest})

    def cell_record(self, config_hash: str) -> dict | None:
        path = self.cells_dir / f"{config_hash}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def is_done(self, config_hash: str) -> bool:
        record = self.cell_record(config_hash)
        return record is not None and record.get("status") == "done"

    def write_cell(self, record: dict) -> None:
        write_json(self.cells_dir / f"{record['config_hash']}.json", record)
        self.write_rows()

    def records(self) -> Iterable[dict]:
        if self.cells_dir.exists():
            for path in sorted(self.cells_dir.glob("*.json")):
                yield json.loads(path.read_text())

    def rows(self) -> list[dict]:
        rows = []
        for record in self.records():
            rows.extend(record.get("rows", []))
        return sorted(rows, key=lambda r: (r["scale"], r["attack"], r["seed"], r["metric"], str(r["band"])))

    def failures(self) -> list[dict]:
        return [r for r in self.records() if r.get("status") == "failed"]

    def write_rows(self) -> None:
        lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in self.rows())
        atomic_write(self.run_dir / "rows.jsonl", lines)
