"""Suites that make no sense are refused at validation: exit 2, file + key + expectation, nothing written."""

import pytest
from cli_helpers import assert_refused
from click.testing import CliRunner

from side_bench.cli import main

REFUSED = [
    ("metrics = []", {'metrics = ["ams", "ums", "p95", "gu-ratio"]': "metrics = []"},
     ["metrics: expected a non-empty list of metric names"]),
    ("a metric listed twice", {'metrics = ["ams", "ums", "p95", "gu-ratio"]': 'metrics = ["ams", "gu", "gu-ratio"]'},
     ["metrics: 'gu-ratio' is listed twice"]),
    ("scales = [32, 32]", {"scales = [16, 32]": "scales = [32, 32]"}, ["scales: 32 is listed twice"]),
    ("seeds = [0, 0]", {"seeds = [0]": "seeds = [0, 0]"}, ["seeds: 0 is listed twice"]),
    ("n_generations = 1e12", {"n_generations = 8": "n_generations = 1e12"},
     ["n_generations: expected int or table"]),
    ("n_generations = 10^12", {"n_generations = 8": "n_generations = 1_000_000_000_000"},
     ["n_generations: 1,000,000,000,000 for scale 16 is more than 100,000,000"]),
    ("a suite name that is a path", {'name = "tiny"': 'name = "../../escaped"'},
     ["name: expected a single folder name", "'../../escaped'"]),
]


@pytest.mark.parametrize(("case", "replace", "fragments"), REFUSED, ids=[c[0] for c in REFUSED])
def test_nonsense_suites_are_refused(case, replace, fragments, write_suite, tmp_path):
    suite = write_suite(replace=replace)
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r")])
    assert_refused(result, str(suite), *fragments)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("edges", ["[0.95, 1.5]", "[-1.5, 0.2]"])
def test_band_edges_outside_the_similarity_range_are_refused(edges, write_suite, tmp_path):
    suite = write_suite(extra=f"[bands]\nband = {edges}\n")
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r")])
    assert_refused(result, str(suite), "[bands]: bands.band: edge", "is outside [-1, 1]", "features 'pixel'")


def test_data_root_for_a_data_set_that_reads_no_files_is_refused(write_suite, tmp_path):
    suite = write_suite()
    for extra in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                           "--cache-dir", str(tmp_path / "c"), "--data-root", str(tmp_path), *extra])
        assert_refused(result, "--data-root: dataset 'digits'", "reads no local files", "drop --data-root")
    assert not (tmp_path / "r").exists()


def test_data_root_from_the_environment_is_not_refused(write_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", str(tmp_path))
    result = CliRunner().invoke(main, ["run", "--suite", str(write_suite()), "--results", str(tmp_path / "r"),
                                       "--dry-run"])
    assert result.exit_code == 0, result.output


def test_dry_run_warns_when_a_suite_is_far_beyond_a_day(write_suite, tmp_path):
    suite = write_suite(replace={"n_generations = 8": "n_generations = 50_000_000"})
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "estimated time: about" in result.stdout
    assert result.stderr.startswith("warning: tiny: about") and "far beyond a day" in result.stderr
    assert not (tmp_path / "r").exists()


def test_dry_run_of_a_small_suite_does_not_warn(write_suite, tmp_path):
    result = CliRunner().invoke(main, ["run", "--suite", str(write_suite()), "--results", str(tmp_path / "r"),
                                       "--dry-run"])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
