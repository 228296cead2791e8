"""`plugins`, `suites` and `show` piped: every name whole at COLUMNS=80, and --json.

Off a terminal rich used to crop tables to 80 columns (`memorizat…`), so `side-bench plugins |
grep divergence` found nothing; these run the real command with stdout a pipe.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from click.testing import CliRunner
from leaderboard_rows import make_row, write_run

from side_bench.cli import main
from side_bench.registry import registry_listing


def piped(*args: str) -> str:
    """The command's stdout through a pipe (not a TTY), with COLUMNS=80 as in a CI log."""
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "side_bench", *args], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def whole(name: str, text: str) -> bool:
    """``name`` appears in ``text`` with no letter, digit or name character glued to either side."""
    return re.search(rf"(?<![\w.\[\]=-]){re.escape(name)}(?![\w.\[\]=-])", text) is not None


def test_plugins_piped_shows_every_name_whole_and_json_is_the_listing():
    listing = registry_listing()
    text = piped("plugins")
    assert "…" not in text
    names = {item["name"] for item in listing} | {alias for item in listing for alias in item["aliases"]}
    assert {"memorization-divergence", "classifier-guidance", "informative"} <= names
    missing = sorted(name for name in names if not whole(name, text))
    assert not missing, missing
    # one line per registration, so grep finds a component with its kind and distribution
    line = next(line for line in text.splitlines() if whole("memorization-divergence", line))
    assert line.split()[0] == "metrics" and "side-bench" in line
    assert json.loads(piped("plugins", "--json")) == listing


def test_suites_piped_shows_every_name_and_path_whole():
    suites = [item for item in registry_listing() if item["kind"] == "suites"]
    text = piped("suites")
    assert "…" not in text
    for item in suites:
        line = next((line for line in text.splitlines() if line.startswith(item["name"] + " ")), None)
        assert line is not None, item["name"]
        assert line.rstrip().endswith(item["path"])  # the path is the last column, whole
    found = json.loads(piped("suites", "--json"))
    assert [s["name"] for s in found] == [s["name"] for s in suites]
    assert {"name", "description", "path"} == set(found[0])
    assert "digits-power-seed2" not in {s["name"] for s in found}  # folded into digits-power


def test_show_piped_keeps_long_attack_names_and_json_has_rows_and_failures(tmp_path):
    long_name = "side[guidance_scale=0.3,class_draw=uniform,classifier_steps=1000]"  # 67 characters
    run_dir = write_run(tmp_path / "run", [make_row(attack=long_name, value=0.25),
                                           make_row(attack="uncond", value=0.125, scale=32)])
    result = CliRunner().invoke(main, ["show", str(run_dir)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    lines = result.stdout.splitlines()
    row = next(line for line in lines if long_name in line)
    # scale, attack, seed, metric, band, value, null: aligned plain columns
    assert row.split() == ["16", long_name, "0", "ams", "mid", "0.2500", "0.0000"]
    assert any(line.split() == ["32", "uncond", "0", "ams", "mid", "0.1250", "0.0000"] for line in lines)
    result = CliRunner().invoke(main, ["show", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [r["attack"] for r in shown["rows"]] == [long_name, "uncond"] and shown["failures"] == []
    assert shown["rows"][0]["value"] == 0.25
