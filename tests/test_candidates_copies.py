"""A cell's per-candidate records store each metric's copy decisions (candidates schema 3):
written compactly beside a committed version-2 table, read back as stored, the scores as they were."""

from pathlib import Path

import numpy as np
import pytest

from side_bench.errors import BenchError
from side_bench.results.candidates import load_scores, read_table, rewrite_copies, stored_copies

ROOT = Path(__file__).resolve().parents[1]
# a digits-finetune cell: 4,096 candidates, written at version 2 (no decisions; the committed
# digits-power and digits-power-side folders are rescores made since, whose records hold them)
CELL = next(iter(sorted((ROOT / "results" / "digits-finetune").glob("run-*/candidates/[0-9a-f]*.parquet"))))


def test_decisions_written_beside_old_records_read_back_and_the_scores_are_unchanged(tmp_path):
    assert stored_copies(CELL) is None  # version 2: readers ask the installed metric
    scores = load_scores(CELL)
    n = scores.n_candidates
    decisions = {("ams", "high"): np.arange(n) % 7 == 0, ("gu-ratio", None): np.zeros(n, dtype=bool),
                 ("carlini-l2", None): "metric 'carlini-l2': needs the 50 nearest training images"}
    out = tmp_path / CELL.name
    assert rewrite_copies(CELL, out, decisions, "ams")
    copies = stored_copies(out)
    assert copies.default == "ams" and set(copies.decisions) == set(decisions)
    assert (copies.decided("ams", "high") == decisions[("ams", "high")]).all()
    assert not copies.decided("gu-ratio", None).any()
    with pytest.raises(BenchError, match="needs the 50 nearest"):
        copies.decided("carlini-l2", None)
    with pytest.raises(BenchError, match="no stored copy decisions of 'ams' in band 'low'"):
        copies.decided("ams", "low")
    again = load_scores(out)
    assert np.array_equal(again.nearest_index, scores.nearest_index)
    assert np.array_equal(again.best_similarity, scores.best_similarity)
    frame, metadata = read_table(out)
    assert metadata["schema_version"] == 3 and {"copy:ams:high", "copy:gu-ratio"} <= set(frame.columns)
    assert "copy:carlini-l2" not in frame.columns  # a refusal is its reason, no column
    # rewritten again with other decisions: the old columns go
    assert rewrite_copies(out, tmp_path / "again.parquet", {("ums", None): np.ones(n, dtype=bool)}, None)
    assert [c for c in read_table(tmp_path / "again.parquet")[0].columns if c.startswith("copy:")] == ["copy:ums"]
