"""Paths, usage errors, start-up and strict JSON from the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import assert_refused
from click.testing import CliRunner

from side_bench.cli import main


def run_cli(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("run_id", ["../../../x", "/tmp/absolute-run", "a/b", "..", ".hidden", ""])
def test_run_id_must_be_a_single_safe_folder_name(run_id, write_suite, tmp_path):
    result = run_cli("run", "--suite", str(write_suite()), "--results", str(tmp_path / "r"), "--run-id", run_id)
    assert_refused(result, "--run-id: expected a single folder name")
    assert not (tmp_path / "r").exists() and not os.path.exists("/tmp/absolute-run")


def test_a_results_folder_under_a_file_is_one_line(write_suite, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    for option in ("--results", "--cache-dir"):
        result = run_cli("run", "--suite", str(write_suite()), option, str(tmp_path / "file" / "sub"),
                         *(["--results", str(tmp_path / "r")] if option == "--cache-dir" else []))
        assert_refused(result, f"{option} {tmp_path / 'file' / 'sub'}", "is a file, not a folder")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_results_folder_is_one_line(write_suite, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli("run", "--suite", str(write_suite()), "--results", str(locked / "r"))
        assert_refused(result, "--results", "is not writable")
    finally:
        locked.chmod(0o700)


def test_leaderboard_out_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("leaderboard", str(tmp_path), "--out", str(tmp_path / "file" / "board"))
    assert_refused(result, "--out", "is a file, not a folder")


@pytest.mark.parametrize(("args", "fragment"), [
    (["run", "--frobnicate"], "No such option '--frobnicate' (see 'main run --help')"),
    (["show"], "Missing argument 'RUN_DIR'"),
    (["score", "--generated", "g", "--train", "t", "--knn", "bogus"], "--knn: expected 'auto', 'faiss' or 'torch', got 'bogus'"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
])
def test_click_usage_errors_are_one_line_like_ours(args, fragment):
    assert_refused(run_cli(*args), fragment)


def test_version_flag():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("side-bench, version ")


def test_help_and_version_do_not_import_torch():
    code = ("import sys; from click.testing import CliRunner; from side_bench.cli import main; "
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0; "
            "assert CliRunner().invoke(main, ['--version']).exit_code == 0; "
            "import side_bench; print(sorted(m for m in ('torch', 'pandas', 'rich.progress') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_score_json_with_one_training_image_is_strict_json_with_a_reason(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gen.npy", rng.random((4, 1, 8, 8), dtype=np.float32))
    np.save(tmp_path / "train.npy", rng.random((1, 1, 8, 8), dtype=np.float32))
    result = run_cli("score", "--generated", str(tmp_path / "gen.npy"), "--train", str(tmp_path / "train.npy"),
                     "--json")
    assert result.exit_code == 0, result.output

    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    rows = json.loads(result.stdout, parse_constant=refuse)
    gu = next(row for row in rows if row["metric"] == "gu-ratio")
    assert gu["value"] is None and "at least 2 training images" in gu["reason"]


def test_score_carlini_with_fewer_training_images_than_neighbours_says_why(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "gen.npy", rng.random((4, 1, 8, 8), dtype=np.float32))
    np.save(tmp_path / "train.npy", rng.random((10, 1, 8, 8), dtype=np.float32))
    args = ["score", "--generated", str(tmp_path / "gen.npy"), "--train", str(tmp_path / "train.npy"),
            "--metrics", "carlini-l2"]
    rows = json.loads(run_cli(*args, "--json").stdout)
    assert rows[0]["value"] is None and "50 nearest" in rows[0]["reason"]
    table = CliRunner().invoke(main, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "n/a" in table.stdout and "50 nearest" in table.stdout
