"""Per-candidate records: one Parquet table per cell, and one per scale for the null baseline.

    results/<suite>/<run-id>/candidates/<config_hash>.parquet   one row per candidate
    results/<suite>/<run-id>/candidates/null-<key>.parquet       the held-out images, once per scale

A row holds what every metric needs (``side_bench.scoring.scores.CandidateScores``): the candidate
and its generation (seed, sample index), the class or cluster it was guided to, its nearest
and second-nearest training images in feature space, its pixel distances (nearest, second,
mean of the 50 nearest) and every training image at or above the lowest band edge (indices
and similarities, at most ``HITS_CAP``, best first), plus each ranker's score. The file's
metadata (key ``side_bench``) says how it was made, and which training images were
bit-identical copies of each other (``duplicates``: the candidates were scored against the
distinct images); ``schema/candidates.schema.json`` describes both. Values are float64 (the
exact distances, so a band edge read back is decided as it was when scored; version-1
files hold float32 and are read as those values), so 50,000 candidates take a few MB.
Written atomically: a crash leaves the old file or none.

Since version 3 a cell's table also holds each metric's copy decision per candidate
(``memorized``, per band where the metric uses bands), one bool column ``copy:<metric>`` or
``copy:<metric>:<band>`` each (Parquet packs them to a bit a candidate: about 400 bytes per
column at 4,096 candidates), and the metadata's ``copies`` lists them: what the page's cost
section and ``compare`` count as a copy is what the metric decided when the cell was scored,
read without its plugin (``StoredCopies``). Older records have none: their readers ask the
installed metric, as they always did. The null baseline's tables hold none (nothing reads them).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from side_bench.errors import BenchError
from side_bench.results.records import find_rows_files, read_rows_file, validate
from side_bench.results.store import atomic_write
from side_bench.scoring.scores import HITS_CAP, CandidateScores

CANDIDATES_DIR = "candidates"
# 2: float64 values, scored against distinct training images; 3: a cell's copy decisions stored
CANDIDATES_SCHEMA_VERSION = 3
COPY_PREFIX = "copy:"
METADATA_KEY = b"side_bench"
RANKER_PREFIX = "rank_"
FLOAT_COLUMNS = ("best_similarity", "second_similarity", "pixel_d1", "pixel_d2", "pixel_knn_mean")


def cell_file(config_hash: str) -> str:
    return f"{CANDIDATES_DIR}/{config_hash}.parquet"


def null_file(key: str) -> str:
    return f"{CANDIDATES_DIR}/null-{key}.parquet"


def to_frame(scores: CandidateScores, seed: int) -> pd.DataFrame:
    n = scores.n_candidates
    starts = np.searchsorted(scores.hit_rows, np.arange(n + 1), side="left")
    frame = pd.DataFrame({
        "candidate": np.arange(n, dtype=np.int32),
        "seed": np.full(n, seed, dtype=np.int64),
        "sample_index": scores.sample_index.astype(np.int64),
        "target": (scores.targets if scores.targets is not None else np.full(n, -1)).astype(np.int32),
        "nearest_index": scores.nearest_index.astype(np.int32),
        **{name: getattr(scores, name).astype(np.float64) for name in FLOAT_COLUMNS},
        "hit_index": [scores.hit_index[a:b].astype(np.int32) for a, b in zip(starts[:-1], starts[1:], strict=True)],
        "hit_similarity": [scores.hit_similarity[a:b].astype(np.float64)
                           for a, b in zip(starts[:-1], starts[1:], strict=True)],
    })
    if scores.draws is not None:  # absent: candidate i was draw i + 1 (CandidateScores.draws)
        frame["draw"] = scores.draws.astype(np.int64)
    for name, values in scores.ranker_scores.items():
        frame[RANKER_PREFIX + name] = np.asarray(values, dtype=np.float64)
    return frame


def copy_column(metric: str, band: str | None) -> str:
    return COPY_PREFIX + metric + (f":{band}" if band is not None else "")


@dataclass(frozen=True)
class StoredCopies:
    """The copy decisions a cell's records hold (version 3): {(metric, band or None): a bool
    array over the candidates, or the reason the metric's ``memorized`` refused}; ``default``:
    the metric that declared itself the default copy criterion when the cell was scored."""

    decisions: dict
    default: str | None
    path: str

    def metrics(self) -> set[str]:
        return {metric for metric, _ in self.decisions}

    def decided(self, metric: str, band: str | None) -> np.ndarray:
        """The stored decisions of ``metric`` on ``band``; a ``BenchError`` naming the file where
        the metric refused or has none for that band."""
        found = self.decisions.get((metric, band))
        if found is None:
            held = ", ".join(sorted(f"{m}:{b}" if b else m for m, b in self.decisions)) or "none"
            raise BenchError(f"{self.path}: no stored copy decisions of {metric!r}"
                             + (f" in band {band!r}" if band else "") + f" (it holds: {held})")
        if isinstance(found, str):
            raise BenchError(f"{self.path}: {found}")
        return found


def _copies_metadata(decisions: dict | None, default: str | None) -> dict:
    entries = []
    for (metric, band), decided in (decisions or {}).items():
        entry = {"metric": metric, "band": band}
        if isinstance(decided, str):
            entry["refused"] = decided
        else:
            entry["column"] = copy_column(metric, band)
        entries.append(entry)
    return {"copies": entries, "copy_default": default}


def _copies_columns(decisions: dict | None) -> dict[str, np.ndarray]:
    return {copy_column(metric, band): np.asarray(decided, dtype=bool)
            for (metric, band), decided in (decisions or {}).items() if not isinstance(decided, str)}


def duplicate_groups(distinct_of: np.ndarray) -> list[list[int]]:
    """The training indices of every distinct image with more than one copy, ascending (the
    first is the index the records name): a few entries, where the full map would be n_train."""
    distinct_of = np.asarray(distinct_of, dtype=np.int64)
    counts = np.bincount(distinct_of) if len(distinct_of) else np.empty(0, dtype=np.int64)
    order = np.argsort(distinct_of, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    groups = [order[starts[j] : starts[j + 1]] for j in np.flatnonzero(counts > 1)]
    return sorted((g.tolist() for g in groups), key=lambda g: g[0])


def distinct_from_groups(n_train: int, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct_of, multiplicity)`` back from ``duplicate_groups`` (distinct images numbered
    by their first copy, as ``scoring.scores.distinct_images`` numbers them)."""
    rep_of = np.arange(n_train, dtype=np.int64)
    for group in groups:
        rep_of[group] = group[0]
    representatives = np.unique(rep_of)
    distinct_of = np.searchsorted(representatives, rep_of).astype(np.int64)
    return distinct_of, np.bincount(distinct_of, minlength=len(representatives)).astype(np.int64)


def write_scores(path: Path, scores: CandidateScores, *, seed: int, kind: str, config_hash: str | None,
                 copies: dict | None = None, copy_default: str | None = None) -> None:
    """Write one table of per-candidate records atomically. ``copies``: the cell's copy
    decisions (``scoring.rows.copy_decisions``; None for the null baseline, which stores none),
    ``copy_default``: the metric that declares itself the default copy criterion, if any."""
    metadata = {
        "schema_version": CANDIDATES_SCHEMA_VERSION, "kind": kind, "config_hash": config_hash,
        "n_train": scores.n_train, "knn_neighbours": scores.knn_neighbours, "hits_floor": scores.hits_floor,
        "hits_cap": HITS_CAP, "hits_truncated": scores.hits_truncated,
        "ranker_thresholds": scores.ranker_thresholds, "guided": scores.targets is not None,
        "n_distinct": scores.n_distinct, "duplicates": duplicate_groups(scores.distinct_of),
    }
    if scores.canaries is not None:  # [training index of the first copy, planted count] per canary
        representatives = scores.representatives
        metadata["canaries"] = [[int(representatives[j]), int(scores.canaries[j])]
                                for j in np.flatnonzero(scores.canaries)]
    if copies is not None:
        metadata.update(_copies_metadata(copies, copy_default))
    frame = to_frame(scores, seed)
    for column, decided in _copies_columns(copies).items():
        frame[column] = decided
    _write_table(path, frame, metadata)


def _write_table(path: Path, frame_or_table, metadata: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    validate(metadata, "candidates", str(path))
    table = frame_or_table if isinstance(frame_or_table, pa.Table) else \
        pa.Table.from_pandas(frame_or_table, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write(path, buffer.getvalue())


def rewrite_copies(source: Path, path: Path, copies: dict, copy_default: str | None) -> bool:
    """Write ``source``'s records to ``path`` with these copy decisions in place of any it held
    (``rescore``: new bands or metrics decide anew). False, and nothing written, for a version-1
    table (float32, every training image scored: it stays as it was, its readers ask the metric)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, metadata = read_metadata(source)
    if metadata["schema_version"] < 2:
        return False
    table = pq.read_table(source)
    table = table.drop_columns([c for c in table.column_names if c.startswith(COPY_PREFIX)])
    for column, decided in _copies_columns(copies).items():
        if len(decided) != table.num_rows:
            raise BenchError(f"{source}: {table.num_rows} records, {len(decided)} copy decisions for {column}")
        table = table.append_column(column, pa.array(decided))
    metadata = {**{k: v for k, v in metadata.items() if k not in ("copies", "copy_default")},
                "schema_version": CANDIDATES_SCHEMA_VERSION, **_copies_metadata(copies, copy_default)}
    _write_table(path, table, metadata)
    return True


def read_metadata(path: Path):
    """(the table's column names, its side_bench metadata), from the file's footer alone."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as error:
        raise BenchError(f"{path}: not a readable candidates table: {error}") from error
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise BenchError(f"{path}: no side_bench metadata: not a candidates table written by side-bench")
    metadata = json.loads(raw)
    validate(metadata, "candidates", str(path))
    return schema.names, metadata


def stored_copies(path: Path, *, read: bool = True) -> StoredCopies | None:
    """The copy decisions ``path`` holds (None: written before records stored them, version < 3,
    or a null baseline's). ``read=False``: which are held, the arrays left empty (the footer only)."""
    import pyarrow.parquet as pq

    names, metadata = read_metadata(path)
    if "copies" not in metadata:
        return None
    columns = [e["column"] for e in metadata["copies"] if "column" in e]
    missing = [c for c in columns if c not in names]
    if missing:
        raise BenchError(f"{path}: its metadata lists copy decisions {', '.join(missing)}, the table has no such column")
    table = pq.read_table(path, columns=columns) if read and columns else None
    decisions = {}
    for entry in metadata["copies"]:
        key = (entry["metric"], entry.get("band"))
        if "column" not in entry:
            decisions[key] = entry.get("refused") or "memorized refused when the cell was scored"
        elif table is None:
            decisions[key] = np.zeros(0, dtype=bool)
        else:
            decisions[key] = table.column(entry["column"]).to_numpy(zero_copy_only=False).astype(bool)
    return StoredCopies(decisions, metadata.get("copy_default"), str(path))


def read_table(path: Path) -> tuple[pd.DataFrame, dict]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:
        raise BenchError(f"{path}: not a readable candidates table: {error}") from error
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise BenchError(f"{path}: no side_bench metadata: not a candidates table written by side-bench")
    metadata = json.loads(raw)
    validate(metadata, "candidates", str(path))
    return table.to_pandas(), metadata


def load_scores(path: Path) -> CandidateScores:
    """The stored records back as the ``CandidateScores`` the metrics read."""
    frame, metadata = read_table(path)
    lengths = np.array([len(h) for h in frame["hit_index"]], dtype=np.int64)
    def flat(column, dtype):
        return (np.concatenate([np.asarray(h, dtype=dtype) for h in frame[column]])
                if len(frame) and lengths.sum() else np.empty(0, dtype=dtype))
    rankers = [c for c in frame.columns if c.startswith(RANKER_PREFIX)]
    # version 1 (before duplicates were collapsed): no groups, read as every image distinct
    distinct_of, multiplicity = distinct_from_groups(metadata["n_train"], metadata.get("duplicates", []))
    canaries = None
    if "canaries" in metadata:
        canaries = np.zeros(len(multiplicity), dtype=np.int64)
        for index, count in metadata["canaries"]:
            canaries[distinct_of[index]] = count
    return CandidateScores(
        **{name: frame[name].to_numpy(np.float64) for name in FLOAT_COLUMNS},
        nearest_index=frame["nearest_index"].to_numpy(),
        knn_neighbours=metadata["knn_neighbours"],
        hit_rows=np.repeat(np.arange(len(frame)), lengths), hit_index=flat("hit_index", np.int64),
        hit_similarity=flat("hit_similarity", np.float64), hits_floor=metadata["hits_floor"],
        hits_truncated=metadata["hits_truncated"], n_train=metadata["n_train"],
        sample_index=frame["sample_index"].to_numpy(),
        targets=frame["target"].to_numpy() if metadata["guided"] else None,
        ranker_scores={c[len(RANKER_PREFIX):]: frame[c].to_numpy(np.float64) for c in rankers},
        ranker_thresholds=metadata.get("ranker_thresholds") or {},
        distinct_of=distinct_of, multiplicity=multiplicity, canaries=canaries,
        draws=frame["draw"].to_numpy(np.int64) if "draw" in frame else None,
    )


def load_candidates(run_dir: str | Path, *, attack: str | None = None, scale: int | None = None,
                    seed: int | None = None, null: bool = False) -> pd.DataFrame:
    """The per-candidate records of a run as one DataFrame (``null=True``: the held-out images).

    Adds the cell's ``attack``, ``scale`` and ``config_hash`` to each record; ``attack``,
    ``scale`` and ``seed`` keep only those cells.
    """
    parts = []
    seen = set()
    for rows_file in find_rows_files([run_dir]):
        folder = rows_file.parent
        for row in read_rows_file(rows_file):
            relative = row.get("null_candidates_file" if null else "candidates_file")
            key = (str(folder), relative)
            if not relative or key in seen:
                continue
            if (attack is not None and row["attack"] != attack) or (scale is not None and row["scale"] != scale) \
                    or (seed is not None and row["seed"] != seed):
                continue
            seen.add(key)
            frame, _ = read_table(folder / relative)
            frame.insert(0, "scale", row["scale"])
            frame.insert(0, "attack", None if null else row["attack"])
            frame.insert(0, "config_hash", None if null else row["config_hash"])
            parts.append(frame)
    if not parts:
        raise BenchError(f"{run_dir}: no per-candidate records match (runs written before side-bench 0.2 "
                         "have none: run the suite again)")
    return pd.concat(parts, ignore_index=True)
