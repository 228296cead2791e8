"""One PreparedRun (issue 30, part 4): `side-bench run`, its dry run and `run_suite` prepare the
same run, once; and a package's version is in a cell's config hash only where the cell uses it
(part 6), with run folders hashed the old way (every installed version) still found."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from optional_packages import needs_faiss

import side_bench.run.prepared as prepared_module
import side_bench.run.runner as runner_module
from side_bench import BenchError, run_suite
from side_bench.cli import main
from side_bench.registry import load_registry
from side_bench.run.dryrun import prepare_plan
from side_bench.run.prepared import PreparedRun, prepare_run, suite_cells
from side_bench.run.suite import cell_versions, default_run_id, load_suite

INSTALLED = {"python": "3.11.7", "side-bench": "0.1.0", "torch": "2.13.0+cpu", "diffusers": "0.42.1",
             "numpy": "2.4.6", "scikit-learn": "1.9.1", "faiss-cpu": "1.15.1"}


@pytest.fixture
def installed(monkeypatch):
    """This installation's versions as the committed runs recorded them, faiss-cpu included."""
    monkeypatch.setattr(prepared_module, "versions", lambda: dict(INSTALLED))
    return INSTALLED


def captured_runs(monkeypatch) -> list[PreparedRun]:
    """run_prepared replaced by one that keeps the PreparedRun it is given and runs nothing."""
    runs = []

    def keep(prepared, **_):
        runs.append(prepared)
        return pd.DataFrame()

    monkeypatch.setattr(runner_module, "run_prepared", keep)
    return runs


def summary(prepared: PreparedRun) -> dict:
    return {"suite": prepared.suite.name, "raw": prepared.suite.raw, "run_dir": prepared.run_dir,
            "cells": [(c.config_hash, c.config) for c in prepared.cells], "device": prepared.device,
            "executor": prepared.executor, "settings": prepared.executor_settings, "workers": prepared.workers,
            "threads": prepared.threads, "checks": prepared.checks,
            "executor_type": type(prepared.executor_obj).__name__}


def test_the_cli_and_the_api_prepare_the_same_run_and_the_cli_parses_the_suite_once(write_suite, tmp_path,
                                                                                   monkeypatch):
    suite = write_suite()
    runs = captured_runs(monkeypatch)
    parsed = []
    real_load_suite = prepared_module.load_suite
    monkeypatch.setattr(prepared_module, "load_suite", lambda *a: parsed.append(a[0]) or real_load_suite(*a))
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert parsed == [str(suite)]  # before issue 30 the CLI prepared the run, then run_suite prepared it again
    run_suite(str(suite), results_dir=tmp_path / "r")
    assert len(runs) == 2 and parsed == [str(suite)] * 2
    cli, api = (summary(r) for r in runs)
    assert cli == api
    # by hand: 2 scales x 1 attack x 1 seed; the local executor with one worker, one thread
    assert len(cli["cells"]) == 2 and cli["executor"] == "local" and cli["workers"] == 1 and cli["threads"] == 1
    assert cli["checks"] == ("suite", "device", "executor", "workers")
    assert cli["run_dir"] == tmp_path / "r" / "tiny" / default_run_id(runs[0].cells)
    assert not (tmp_path / "r").exists()  # preparing writes nothing (and run_prepared was replaced)


def test_the_dry_run_plans_the_run_the_api_prepares(write_suite, tmp_path, monkeypatch):
    suite = write_suite()
    runs = captured_runs(monkeypatch)
    run_suite(str(suite), results_dir=tmp_path / "r")
    planned = prepare_plan(str(suite), results_dir=tmp_path / "r")
    assert [c.config_hash for c in planned.cells] == [c.config_hash for c in runs[0].cells]
    assert planned.run_dir == runs[0].run_dir and planned.executor is None
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"run folder: {runs[0].run_dir}" in " ".join(result.stdout.split())
    assert all(c.config_hash[:12] in result.stdout for c in runs[0].cells)


def test_a_run_prepared_for_planning_only_cannot_run(write_suite, tmp_path):
    from side_bench.run.runner import run_prepared

    planned = prepare_plan(str(write_suite()), results_dir=tmp_path / "r")
    with pytest.raises(ValueError, match="without an executor"):
        run_prepared(planned)
    assert not (tmp_path / "r").exists()


def test_bad_workers_are_refused_while_preparing(write_suite, tmp_path):
    with pytest.raises(BenchError, match="--workers: expected 'auto', 0"):
        prepare_run(str(write_suite()), results_dir=tmp_path / "r", executor="local", workers=-1)


# -- part 6: versions in the config hash ------------------------------------------------------


def config(knn="auto", kmeans=None):
    condition = {"name": "surrogate", "settings": {"kmeans": kmeans} if kmeans else {}}
    return {"dataset": {"name": "digits", "settings": {}}, "model": {"name": "bench-unet", "settings": {}},
            "attack": {"name": "side", "condition": condition, "extractor": {"name": "side", "settings": {}}},
            "features": {"name": "pixel", "settings": {}, "identity": {}}, "metric_settings": {}, "rankers": [],
            "knn": knn}


def test_faiss_enters_a_cells_versions_only_where_the_cell_uses_it():
    without = {k: v for k, v in INSTALLED.items() if k != "faiss-cpu"}
    assert cell_versions(config("auto"), INSTALLED) == without  # auto is the torch search
    assert cell_versions(config("torch"), INSTALLED) == without
    assert cell_versions(config("torch", kmeans="sklearn"), INSTALLED) == without
    assert cell_versions(config("auto"), without) == without  # not installed: nothing to drop


@needs_faiss
def test_a_cell_searching_or_clustering_with_faiss_keeps_its_version():
    assert cell_versions(config("faiss"), INSTALLED) == INSTALLED
    assert cell_versions(config("auto", kmeans="faiss"), INSTALLED) == INSTALLED


def test_upgrading_faiss_keeps_the_hashes_of_cells_that_do_not_use_it(write_suite, installed, monkeypatch):
    registry = load_registry()
    suite = load_suite(str(write_suite()), registry)
    before = [c.config_hash for c in suite_cells(suite, "cpu", registry)]
    monkeypatch.setattr(prepared_module, "versions", lambda: {**installed, "faiss-cpu": "1.99"})
    assert [c.config_hash for c in suite_cells(suite, "cpu", registry)] == before
    assert "faiss-cpu" not in suite_cells(suite, "cpu", registry)[0].config["versions"]
    # hashed as before issue 30, every installed version counts
    legacy = suite_cells(suite, "cpu", registry, every_package=True)
    assert legacy[0].config["versions"]["faiss-cpu"] == "1.99" and legacy[0].config_hash not in before


def test_a_run_folder_hashed_before_issue_30_is_still_found_with_its_cells(write_suite, installed, tmp_path):
    registry = load_registry()
    path = str(write_suite())
    suite = load_suite(path, registry)
    legacy = suite_cells(suite, "cpu", registry, every_package=True)
    fresh = prepare_run(path, results_dir=tmp_path)  # no folder yet: the cells as hashed now
    assert "faiss-cpu" not in fresh.cells[0].config["versions"]
    assert fresh.run_dir.name == default_run_id(fresh.cells) != default_run_id(legacy)
    # a folder holding a cell hashed the old way (every committed run under results/ is one)
    cells_dir = tmp_path / "tiny" / default_run_id(legacy) / "cells"
    cells_dir.mkdir(parents=True)
    (cells_dir / f"{legacy[0].config_hash}.json").write_text(json.dumps(
        {"config_hash": legacy[0].config_hash, "status": "done", "config": legacy[0].config}))
    again = prepare_run(path, results_dir=tmp_path)
    assert again.run_dir == cells_dir.parent and again.cells_done() == 1
    assert [c.config_hash for c in again.cells] == [c.config_hash for c in legacy]
    # and with the folder named by --run-id
    named = tmp_path / "tiny" / "mine" / "cells"
    named.mkdir(parents=True)
    changed_plugin = {**legacy[1].config, "plugins": {"metric/ams": {"version": "0.0"}}}  # found all the same
    (named / "an-older-hash.json").write_text(json.dumps({"config_hash": "an-older-hash", "status": "done",
                                                          "config": changed_plugin}))
    assert [c.config_hash for c in prepare_run(path, results_dir=tmp_path, run_id="mine").cells] == \
        [c.config_hash for c in legacy]


def test_faiss_asked_for_but_not_installed_is_refused_before_any_cell(write_suite, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError, as without the extra
    suite = write_suite(extra='[scoring]\nknn = "faiss"\n')
    with pytest.raises(BenchError, match=r"tiny.toml: \[scoring\] knn: 'faiss' asked for, but faiss is not "
                                         r"installed \(pip install 'side-bench\[faiss\]'\)"):
        prepare_run(str(suite), results_dir=tmp_path)
    with pytest.raises(BenchError, match="kmeans: 'faiss' asked for, but faiss is not installed"):
        load_registry().build("conditions", "surrogate", {"kmeans": "faiss"})
    assert not (tmp_path / "tiny").exists()
