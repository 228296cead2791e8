"""`run --workers N`: cells computed in N processes give the rows of one, bit for bit; the stage
profile printed at the end of a run."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from side_bench import machine, run_suite
from side_bench.cli import main
from side_bench.run.runner import stage_profile
from tests.cli_helpers import SECOND_ATTACK, TIMING, assert_refused


def values(rows):
    return sorted(tuple((k, repr(v)) for k, v in sorted(row.items()) if k not in TIMING) for row in rows)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_workers_give_the_rows_of_one(write_suite, tmp_path, monkeypatch):
    suite = write_suite(extra=SECOND_ATTACK)  # 2 scales x 2 attacks: 4 cells, 2 models
    run_suite(str(suite), results_dir=tmp_path / "one", cache_dir=tmp_path / "cache-one")
    # the CLI, so the progress forwarded from the workers and the stage table are exercised too;
    # its own cache, so the two workers train the models themselves (two at once: ModelQueue).
    # Its default, --workers auto, on a machine of two cores: one single-thread worker per core
    monkeypatch.delenv("SIDE_BENCH_WORKERS")
    monkeypatch.setattr("side_bench.run.prepared.cpu_cores", lambda: 2)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "two"),
                                       "--cache-dir", str(tmp_path / "cache-two")])
    assert result.exit_code == 0, result.output
    assert "(2 workers)" in result.output
    assert "time per stage (4 cells computed in this run" in result.output
    rows_file = next((tmp_path / "two").glob("tiny/*/rows.jsonl"))
    one, two = (rows(next((tmp_path / name).glob("tiny/*/rows.jsonl"))) for name in ("one", "two"))
    assert len(one) == len(two) == 32  # 4 cells x 8 rows
    assert values(one) == values(two)
    # every row says which CPU computed it and what it can do (side_bench/machine.py)
    assert all(row["device"] == {**machine.describe("cpu"), "threads": 1} for row in one + two)
    manifest = json.loads(next((tmp_path / "two").glob("tiny/*/manifest.json")).read_text())
    assert manifest["hardware"]["model"] == machine.cpu()["model"]
    # the per-candidate records agree too (neighbours and distances, float64)
    for path in next((tmp_path / "one").glob("tiny/*")).glob("candidates/*.parquet"):
        twin = rows_file.parent / "candidates" / path.name
        pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(twin))
    # each model was trained once, by one of the workers: one cache entry per scale
    assert len([p for p in (tmp_path / "cache-two").rglob("*") if p.is_dir() and (p / "manifest.json").exists()]) \
        == len([p for p in (tmp_path / "cache-one").rglob("*") if p.is_dir() and (p / "manifest.json").exists()])


def test_workers_are_refused_where_they_do_not_apply(write_suite, tmp_path):
    from side_bench.run.runner import set_workers

    class OwnProcesses:  # an executor without a worker count, like ray
        pass

    with pytest.raises(Exception, match="--workers: only for --executor local"):
        set_workers(OwnProcesses(), "ray", 2)
    assert set_workers(OwnProcesses(), "ray", 1) == 1
    assert set_workers(OwnProcesses(), "ray", "auto", cells=8) == 1  # the default: Ray schedules its own
    result = CliRunner().invoke(main, ["run", "--suite", str(write_suite()), "--workers", "-1",
                                       "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--workers" in result.output


def test_auto_is_one_single_thread_worker_per_core_where_cells_are_many(monkeypatch):
    from side_bench.run.runner import auto_workers, set_workers

    monkeypatch.setattr("side_bench.run.prepared.cpu_cores", lambda: 8)
    assert auto_workers(cells=20) == 8
    assert auto_workers(cells=3) == 3  # no idle process
    assert auto_workers(cells=1) == 1 and auto_workers(cells=0) == 1
    assert auto_workers(cells=20, threads=2) == 4 and auto_workers(cells=20, threads=16) == 1
    assert auto_workers(cells=20, device="cuda") == 1  # the cells share one GPU

    class Local:
        workers = 1

    executor = Local()
    assert set_workers(executor, "local", "auto", cells=5) == 5 and executor.workers == 5
    for wrong in ("many", -1, 1.5, True):
        with pytest.raises(Exception, match="--workers: expected 'auto', 0"):
            set_workers(Local(), "local", wrong)


def test_stage_profile_sums_each_cell_once_slowest_first():
    records = [
        {"config_hash": "a", "status": "done",
         "rows": [{"stage_seconds": {"data": 1.0, "target": 6.0, "scoring": 1.0}}] * 3},
        {"config_hash": "b", "status": "done", "rows": [{"stage_seconds": {"data": 0.0, "target": 0.0, "scoring": 2.0}}]},
        {"config_hash": "c", "status": "failed", "error": "x"},  # no rows: not counted
    ]
    profile = stage_profile(records)
    # by hand: target 6 + 0, scoring 1 + 2, data 1 + 0 of a total 10
    assert [(p["stage"], p["seconds"], p["share"], p["cells"]) for p in profile] == [
        ("target", 6.0, 0.6, 1), ("scoring", 3.0, 0.3, 2), ("data", 1.0, 0.1, 1)]
    # rows as read back from rows.jsonl count their cell once too
    assert stage_profile([{"config_hash": "a", "stage_seconds": {"x": 2.0}}] * 4) == [
        {"stage": "x", "seconds": 2.0, "share": 1.0, "cells": 1}]


def test_an_address_is_still_refused_for_the_local_executor_with_workers(write_suite, tmp_path):
    result = CliRunner().invoke(main, ["run", "--suite", str(write_suite()), "--executor", "local",
                                       "--workers", "2", "--address", "127.0.0.1:1", "--results", str(tmp_path / "r")])
    assert_refused(result, "--executor local", "takes no settings, got address")
