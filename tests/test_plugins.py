"""Plugin discovery: entry points, the restriction variable, errors, the example package."""

import subprocess
import sys
from pathlib import Path

import pytest

from side_bench import BenchError
from side_bench.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "side-bench-example-metric"


def test_builtins_are_plain_entry_point_plugins():
    registry = load_registry()
    assert registry.get("metrics", "ams").plugin == "builtin-metrics"
    assert registry.get("datasets", "digits").plugin == "builtin-datasets"
    assert "quickstart" in registry.names("suites")


def test_restriction_variable_limits_what_loads(monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "builtin-metrics")
    registry = load_registry()
    assert registry.names("metrics") and registry.names("datasets") == []


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(BenchError) as error:
        load_registry().get("metrics", "umz")
    message = str(error.value)
    assert "unknown metric 'umz'" in message and "known: ams, carlini-l2, gu-ratio, p95, ums" in message
    assert "did you mean 'ums'" in message


def test_aliases_resolve():
    assert load_registry().get("metrics", "gu").name == "gu-ratio"


@pytest.fixture(scope="module")
def example_installed():
    """pip-install the example third-party package into this environment (no network)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    str(EXAMPLE)], check=True)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "side-bench-example-metric"], check=True)


def test_example_plugin_is_listed_after_pip_install(example_installed, monkeypatch):
    monkeypatch.delenv("SIDE_BENCH_PLUGINS")
    listing = subprocess.run([sys.executable, "-m", "side_bench", "plugins"], capture_output=True, text=True,
                             check=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert "copy-rate" in listing.stdout and "example-metric" in listing.stdout
    # and it can be excluded
    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench")
    assert "copy-rate" not in load_registry().names("metrics")


def test_a_suite_uses_the_example_metric(example_installed, monkeypatch, write_suite, tmp_path):
    from side_bench import run_suite

    monkeypatch.setenv("SIDE_BENCH_PLUGINS", "side-bench,side-bench-example-metric")
    suite = write_suite(replace={'"gu-ratio"]': '"gu-ratio", "copy-rate"]', "scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    copy_rate = rows[rows["metric"] == "copy-rate"]
    assert len(copy_rate) == 1
    # copy-rate at 0.95 equals the share of candidates in the high band [0.95, 1.0]
    ams_high = rows[(rows["metric"] == "ams") & (rows["band"] == "high")]["value"].item()
    assert copy_rate["value"].item() == pytest.approx(ams_high)
