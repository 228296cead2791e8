"""A third-party plugin whose module raises on import is skipped with one warning (naming its
distribution, its error and SIDE_BENCH_PLUGINS), and every other command still works."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from side_bench import registry as registry_module
from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.registry import load_registry

BROKEN = """
import frobnicate_not_installed  # a dependency that is missing: the import fails

from side_bench.plugin_api import hookimpl


@hookimpl
def register_metrics(register):
    register("copy-rate", object)
"""

WARNING = ("warning: plugin 'broken-plugin' (distribution 'broken-plugin' 0.1, module broken_plugin) failed to "
           "import and is skipped (ModuleNotFoundError: No module named 'frobnicate_not_installed'); to load only "
           "the plugins you name, set SIDE_BENCH_PLUGINS (e.g. SIDE_BENCH_PLUGINS=side-bench); or uninstall it: "
           "pip uninstall broken-plugin")


@pytest.fixture
def broken(entry_point_plugin, monkeypatch, tmp_path):
    entry_point_plugin("broken-plugin", BROKEN)
    monkeypatch.setenv("SIDE_BENCH_CACHE", str(tmp_path / "cache"))


def invoke(monkeypatch, *args):
    """One command, in a fresh 'process' as far as the once-per-process warning goes."""
    monkeypatch.setattr(registry_module, "_warned", set())
    return CliRunner().invoke(main, list(args))


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_plugins_lists_the_rest_and_warns_once(broken, monkeypatch):
    for _ in range(2):  # a listing with a skipped plugin is not cached: the second call warns again
        result = invoke(monkeypatch, "plugins")
        assert result.exit_code == 0, result.output
        assert warnings_in(result.stderr) == [WARNING]
        assert "gu-ratio" in result.stdout and "broken-plugin" not in result.stdout
    listing = invoke(monkeypatch, "suites")
    assert listing.exit_code == 0 and "quickstart" in listing.stdout
    assert warnings_in(listing.stderr) == [WARNING]


def test_score_works_and_warns_once(broken, monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("gen", 6), ("train", 4), ("held", 4)):
        np.save(tmp_path / f"{name}.npy", rng.random((n, 1, 4, 4), dtype=np.float32))
    result = invoke(monkeypatch, "score", "--generated", str(tmp_path / "gen.npy"), "--train",
                    str(tmp_path / "train.npy"), "--heldout", str(tmp_path / "held.npy"), "--metrics", "gu-ratio",
                    "--json")
    assert result.exit_code == 0, result.output
    assert warnings_in(result.stderr) == [WARNING]
    assert '"metric": "gu-ratio"' in result.stdout


def test_run_dry_run_works_and_warns_once(broken, monkeypatch, write_suite, tmp_path):
    results = tmp_path / "results"
    result = invoke(monkeypatch, "run", "--suite", str(write_suite()), "--dry-run", "--results", str(results))
    assert result.exit_code == 0, result.output
    assert "tiny: 2 cells" in result.stdout  # 2 scales x 1 attack x 1 seed
    assert warnings_in(result.stderr) == [WARNING]  # the registry is loaded several times: one warning
    assert not results.exists()


def test_a_name_of_the_skipped_plugin_is_unknown_and_says_why(broken, monkeypatch):
    monkeypatch.setattr(registry_module, "_warned", set())
    registry = load_registry()
    assert "broken-plugin" in registry.skipped and "gu-ratio" in registry.names("metrics")
    with pytest.raises(BenchError, match=r"unknown metric 'copy-rate' .*skipped, failed to import: plugin "
                                         r"'broken-plugin' \(distribution 'broken-plugin' 0.1, module broken_plugin\): "
                                         r"ModuleNotFoundError"):
        registry.get("metrics", "copy-rate")
