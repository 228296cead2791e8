"""Bad input: exit code 2, one line naming the thing, and nothing written."""

import numpy as np
import pytest
from cli_helpers import assert_refused
from click.testing import CliRunner

from side_bench.cli import main


def run_cli(*args):
    return CliRunner().invoke(main, list(args))


SUITE_CASES = [
    ("unknown plugin", {'extractor = "sample"': 'extractor = "sampel"'},
     ["attacks[0]: extractor", "unknown extractor 'sampel'", "did you mean 'sample'"]),
    ("missing key", {"scales = [16, 32]\n": ""}, ["missing key 'scales'"]),
    ("wrong type", {"steps = 12": 'steps = "many"'}, ["[model]", "steps: expected int, got 'many'"]),
    ("scale larger than the data", {"scales = [16, 32]": "scales = [16, 5000]"},
     ["scales: 5000 is larger than the 1765 training images"]),
    ("reversed band edges", {'[dataset]': '[bands]\nlow = [0.9, 0.85]\n\n[dataset]'},
     ["[bands]", "bands.low: low edge 0.9 must be below high edge 0.85"]),
    ("overlapping bands", {'[dataset]': '[bands]\na = [0.8, 0.9]\nb = [0.85, 0.95]\n\n[dataset]'},
     ["overlap"]),
    ("unknown setting", {"steps = 12": "stepz = 12"}, ["[model]", "unknown key 'stepz'", "did you mean 'steps'"]),
    ("unknown metric", {'"gu-ratio"]': '"gu-ration"]'}, ["metrics", "unknown metric 'gu-ration'", "did you mean 'gu-ratio'"]),
    ("bad setting value", {"image_size = 8": "image_size = 2"}, ["[dataset]", "image_size: expected 4..256"]),
]


@pytest.mark.parametrize("case, replace, fragments", SUITE_CASES, ids=[c[0] for c in SUITE_CASES])
def test_bad_suite_is_refused_before_anything_is_written(write_suite, tmp_path, case, replace, fragments):
    suite = write_suite(replace=replace)
    results = tmp_path / "results"
    result = run_cli("run", "--suite", str(suite), "--results", str(results), "--cache-dir", str(tmp_path / "c"))
    assert_refused(result, str(suite), *fragments)
    assert not results.exists()


def test_bad_toml(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text("name = 'x'\nscales = [1, 2\n")
    result = run_cli("run", "--suite", str(suite), "--results", str(tmp_path / "results"))
    assert_refused(result, str(suite), "not valid TOML")
    assert not (tmp_path / "results").exists()


def test_unknown_suite_name_suggests():
    assert_refused(run_cli("run", "--suite", "quickstrat"), "unknown suite 'quickstrat'", "did you mean 'quickstart'")


def test_bad_device(write_suite, tmp_path):
    assert_refused(run_cli("run", "--suite", str(write_suite()), "--device", "tpu",
                           "--results", str(tmp_path / "r")), "--device")


def test_score_empty_folder(tmp_path):
    (tmp_path / "gen").mkdir()
    np.save(tmp_path / "train.npy", np.zeros((2, 1, 4, 4), dtype=np.float32))
    result = run_cli("score", "--generated", str(tmp_path / "gen"), "--train", str(tmp_path / "train.npy"))
    assert_refused(result, "--generated", str(tmp_path / "gen"), "no PNG or JPEG images")


def test_score_unreadable_image(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "broken.png").write_bytes(b"this is not a png")
    np.save(tmp_path / "train.npy", np.zeros((2, 1, 4, 4), dtype=np.float32))
    result = run_cli("score", "--generated", str(tmp_path / "gen"), "--train", str(tmp_path / "train.npy"))
    assert_refused(result, "broken.png", "not a readable image")


def test_score_wrong_array_shape(tmp_path):
    np.save(tmp_path / "gen.npy", np.zeros((4, 8, 8), dtype=np.float32))
    np.save(tmp_path / "train.npy", np.zeros((2, 1, 8, 8), dtype=np.float32))
    result = run_cli("score", "--generated", str(tmp_path / "gen.npy"), "--train", str(tmp_path / "train.npy"))
    assert_refused(result, "gen.npy", "expected an array of shape (N, C, H, W), got shape (4, 8, 8)")


def test_score_values_outside_unit_range(tmp_path):
    np.save(tmp_path / "gen.npy", np.full((2, 1, 4, 4), 2.0, dtype=np.float32))
    np.save(tmp_path / "train.npy", np.zeros((2, 1, 4, 4), dtype=np.float32))
    result = run_cli("score", "--generated", str(tmp_path / "gen.npy"), "--train", str(tmp_path / "train.npy"))
    assert_refused(result, "gen.npy", "expected values in [0, 1]")


def test_score_mismatched_image_sizes(tmp_path):
    np.save(tmp_path / "gen.npy", np.zeros((2, 1, 4, 4), dtype=np.float32))
    np.save(tmp_path / "train.npy", np.zeros((2, 1, 8, 8), dtype=np.float32))
    result = run_cli("score", "--generated", str(tmp_path / "gen.npy"), "--train", str(tmp_path / "train.npy"))
    assert_refused(result, "train", "(1, 8, 8)", "(1, 4, 4)")


def test_show_not_a_run_folder(tmp_path):
    assert_refused(run_cli("show", str(tmp_path)), str(tmp_path), "not a run folder")


def test_n_generations_per_scale_must_cover_every_scale(write_suite, tmp_path):
    suite = write_suite(replace={"n_generations = 8": 'n_generations = { "16" = 8 }'})
    result = run_cli("run", "--suite", str(suite), "--results", str(tmp_path / "results"))
    assert_refused(result, str(suite), "n_generations: no budget for scale 32")


def test_n_generations_per_scale_reaches_the_cells(write_suite):
    from side_bench.registry import load_registry
    from side_bench.run.suite import expand_cells, load_suite

    suite = load_suite(str(write_suite(replace={"n_generations = 8": 'n_generations = { "16" = 8, "32" = 12 }'})),
                       load_registry())
    cells = expand_cells(suite, versions={}, device="cpu", features_identity={})
    assert {(c.scale, c.config["n_generations"]) for c in cells} == {(16, 8), (32, 12)}
