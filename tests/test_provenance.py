"""Provenance: every component knows its distribution; a changed plugin recomputes exactly its cells."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from side_bench.cli import main
from side_bench.registry import load_registry, registry_listing

PLUGIN = '''
from side_bench.hookspecs import hookimpl
from side_bench_builtins.extractors import Sample

BEHAVIOUR = 1


@hookimpl
def register_extractors(register):
    register("my-sample", Sample)
'''

@pytest.fixture(autouse=True)
def fresh_plugin_module(monkeypatch):
    """Each test imports its own my_extractor.py (an earlier test's module may be in sys.modules)."""
    monkeypatch.delitem(sys.modules, "my_extractor", raising=False)


TWO_ATTACKS = """
[[attacks]]
name = "mine"
condition = "none"
extractor = "my-sample"
extractor_settings = { ddim_steps = 4, batch_size = 5 }
"""


def test_builtins_carry_their_distribution_version_and_source_hash():
    registration = load_registry().get("metrics", "ams")
    assert registration.distribution == "side-bench" and registration.version
    assert len(registration.source_hash) == 64  # an editable install: its source counts
    assert registration.describe().startswith("metric 'ams' (distribution side-bench ")


def test_a_plugin_knows_its_distribution_and_a_changed_file_changes_its_hash(entry_point_plugin, tmp_path):
    entry_point_plugin("my-extractor", PLUGIN)
    before = load_registry().get("extractors", "my-sample")
    assert (before.distribution, before.version, before.plugin) == ("my-extractor", "0.1", "my-extractor")
    (tmp_path / "site" / "my_extractor.py").write_text(PLUGIN.replace("BEHAVIOUR = 1", "BEHAVIOUR = 2"))
    after = load_registry().get("extractors", "my-sample")
    assert after.version == "0.1" and after.source_hash != before.source_hash


def _run(suite, tmp_path):
    return CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                     "--cache-dir", str(tmp_path / "c"), "--run-id", "fixed"])


def said(result) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def _rows(tmp_path):
    lines = (tmp_path / "r" / "tiny" / "fixed" / "rows.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_changed_plugin_recomputes_exactly_its_cells_and_says_so(entry_point_plugin, write_suite, tmp_path,
                                                                   monkeypatch):
    entry_point_plugin("my-extractor", PLUGIN)
    suite = write_suite(extra=TWO_ATTACKS, replace={"scales = [16, 32]": "scales = [16]",
                                                    '"ums", "p95", "gu-ratio"]': '"p95"]'})
    first = _run(suite, tmp_path)
    assert first.exit_code == 0, first.output
    assert "2 cells (0 already done)" in said(first)
    rows = _rows(tmp_path)
    assert {r["plugins"]["extractor/my-sample"]["version"] for r in rows if r["attack"] == "mine"} == {"0.1"}

    # the plugin's source changes without a version bump: only its cell is recomputed
    (tmp_path / "site" / "my_extractor.py").write_text(PLUGIN.replace("BEHAVIOUR = 1", "BEHAVIOUR = 2"))
    monkeypatch.delitem(sys.modules, "my_extractor")
    second = _run(suite, tmp_path)
    assert second.exit_code == 0, second.output
    assert "2 cells (1 already done)" in said(second)
    assert "1 cell recomputed: extractor/my-sample: my-extractor 0.1 (source" in said(second)
    assert "mine @ 16 seed 0: done" in said(second) and "uncond @ 16" not in said(second)

    # a version bump counts too; rows.jsonl keeps one result per cell, the old record is set aside
    info = tmp_path / "site" / "my_extractor-0.1.dist-info" / "METADATA"
    info.write_text(info.read_text().replace("Version: 0.1", "Version: 0.2"))
    third = _run(suite, tmp_path)
    assert third.exit_code == 0, third.output
    assert "-> my-extractor 0.2" in said(third)
    rows = _rows(tmp_path)
    per_attack = {attack: sum(r["attack"] == attack for r in rows) for attack in ("uncond", "mine")}
    assert per_attack == {"uncond": 4, "mine": 4}  # ams x 3 bands and p95, once each
    assert {r["plugins"]["extractor/my-sample"]["version"] for r in rows if r["attack"] == "mine"} == {"0.2"}
    assert len(list((tmp_path / "r" / "tiny" / "fixed" / "cells" / "superseded").glob("*.json"))) == 2

    # nothing changed: nothing recomputed
    fourth = _run(suite, tmp_path)
    assert "2 cells (2 already done)" in said(fourth) and "recomputed" not in said(fourth)


def test_plugins_lists_distribution_and_version_and_notices_a_new_plugin(entry_point_plugin, monkeypatch, tmp_path):
    monkeypatch.setenv("SIDE_BENCH_CACHE", str(tmp_path / "cache"))
    assert "my-sample" not in {item["name"] for item in registry_listing()}
    entry_point_plugin("my-extractor", PLUGIN)
    listing = {item["name"]: item for item in registry_listing()}
    assert listing["my-sample"]["distribution"] == "my-extractor" and listing["my-sample"]["version"] == "0.1"
    assert listing["ams"]["distribution"] == "side-bench"
    result = CliRunner().invoke(main, ["plugins"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "my-extractor" in result.stdout and "side-bench" in result.stdout


def test_plugins_and_suites_do_not_import_torch_once_listed(tmp_path):
    env_code = ("import sys, os; from click.testing import CliRunner; from side_bench.cli import main; "
                "r = CliRunner().invoke(main, [sys.argv[1]]); assert r.exit_code == 0, r.output; "
                "print('torch' in sys.modules)")
    env = {**__import__("os").environ, "SIDE_BENCH_CACHE": str(tmp_path / "cache"), "SIDE_BENCH_PLUGINS": "side-bench"}

    def imported_torch(command: str) -> bool:
        done = subprocess.run([sys.executable, "-c", env_code, command], env=env, check=True,
                              capture_output=True, text=True)
        return done.stdout.strip().splitlines()[-1] == "True"

    for command in ("plugins", "suites"):
        # The first call fills the cache; a source file edited meanwhile (other work in the same
        # checkout) makes a new key, so allow a few rounds: one clean pair is the proof.
        for _ in range(3):
            imported_torch("plugins")  # fills the cache (or finds it filled)
            if not imported_torch(command):
                break
        else:
            raise AssertionError(f"side-bench {command} imported torch with a filled listing cache, three times")


def test_the_default_run_id_does_not_change_with_a_plugin(entry_point_plugin, write_suite, tmp_path):
    from side_bench.run.suite import default_run_id, expand_cells, load_suite

    entry_point_plugin("my-extractor", PLUGIN)
    suite = str(write_suite(extra=TWO_ATTACKS))

    def cells():
        return expand_cells(load_suite(suite, load_registry()), versions={}, device="cpu", features_identity={})

    before = cells()
    (tmp_path / "site" / "my_extractor.py").write_text(PLUGIN.replace("BEHAVIOUR = 1", "BEHAVIOUR = 2"))
    sys.modules.pop("my_extractor", None)
    after = cells()
    assert default_run_id(before) == default_run_id(after)
    assert [c.config_hash for c in before if c.attack.name == "uncond"] == \
        [c.config_hash for c in after if c.attack.name == "uncond"]
    assert {c.config_hash for c in before if c.attack.name == "mine"}.isdisjoint(
        c.config_hash for c in after if c.attack.name == "mine")


@pytest.fixture
def example_modules_forgotten():
    """Forget the example package's modules before and after (other tests import their own copy)."""

    def forget():
        for name in [m for m in sys.modules if m.startswith("side_bench_example_metric")]:
            del sys.modules[name]

    forget()
    yield
    forget()


def test_the_example_package_installed_from_its_folder_carries_version_and_source_hash(
        tmp_path, monkeypatch, example_modules_forgotten):
    """pip install (not editable) from a local folder: a local install, so its source is hashed too."""
    from pathlib import Path

    site = tmp_path / "site"
    example = Path(__file__).resolve().parents[1] / "plugins" / "side-bench-example-metric"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(example)], check=True)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,side-bench-example-metric")
    before = load_registry().get("metrics", "copy-rate")
    assert (before.distribution, before.version) == ("side-bench-example-metric", "0.1.0")
    assert before.source_hash and before.describe() == "metric 'copy-rate' (distribution side-bench-example-metric 0.1.0)"
    plugin = site / "side_bench_example_metric" / "plugin.py"
    plugin.write_text(plugin.read_text().replace("threshold: float = 0.95", "threshold: float = 0.9"))
    assert load_registry().get("metrics", "copy-rate").source_hash != before.source_hash


def test_cuda_cells_ask_for_deterministic_kernels(monkeypatch):
    # On an H200 two quickstart runs of one seed differed (Gu 140 vs 142 of 256) until the
    # runner asked for deterministic kernels; CPU kernels need nothing and are left alone.
    import torch

    from side_bench.errors import use_deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled())
    try:
        use_deterministic_kernels("cpu")
        assert torch.are_deterministic_algorithms_enabled() == saved[0]
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        use_deterministic_kernels("cuda:0")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.mem_efficient_sdp_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        torch.backends.cuda.enable_flash_sdp(saved[4])
        torch.backends.cuda.enable_mem_efficient_sdp(saved[5])
