"""The leaderboard on hostile or broken result files (issue 11): each case gets a clear answer.

Empty runs are named and left out, unusable numbers are shown but never ranked, labels are
capped, ``--out`` is replaced atomically and CSV cells cannot run as spreadsheet formulas.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time

import pytest
from click.testing import CliRunner
from leaderboard_rows import make_row, two_attacks_two_seeds, write_run

from side_bench import build_leaderboard, write_report
from side_bench.cli import main

UNCOUNTED = {"count": None, "n": None, "ci_low": None, "ci_high": None, "interval": None}


def leaderboard(*args):
    return CliRunner().invoke(main, ["leaderboard", *map(str, args)])


def test_a_run_with_no_rows_is_named_and_the_others_are_shown(tmp_path):
    write_run(tmp_path / "good", two_attacks_two_seeds())
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "rows.jsonl").write_text("")
    result = leaderboard(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {tmp_path / 'failed'}: no rows (every cell failed?); left out of the leaderboard"]
    assert "| side |" in result.stdout


def test_only_empty_runs_is_exit_2_naming_them(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows.jsonl").write_text("\n")
    result = leaderboard(tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [(
        f"error: no rows in {tmp_path / 'a'}, {tmp_path / 'b'}: every cell failed (see each run's cells/ folder)")]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_value_is_never_ranked_or_starred(tmp_path, value):
    rows = [make_row(attack="broken", value=value, **UNCOUNTED), make_row(attack="uncond", value=0.3)]
    write_run(tmp_path / "run", rows)
    result = leaderboard(tmp_path / "run", "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"warning: {tmp_path / 'run' / 'rows.jsonl'}:1: ams mid: value: non-finite value")
    records = {r["attack"]: r for r in json.loads(result.stdout)}
    assert records["broken"]["value"] is None and records["broken"]["rank"] is None
    assert records["broken"]["best"] is False and records["broken"]["reason"].startswith("not ranked: non-finite")
    markdown = write_report(tmp_path / "run", formats=["md"], warn=None)["md"]
    assert "| broken | n/a (not ranked: non-finite value" in markdown and "inf%" not in markdown


def test_a_rate_outside_zero_one_is_flagged_and_never_ranked(tmp_path):
    rows = [make_row(attack="ams-of-7.5", value=7.5, **UNCOUNTED), make_row(attack="uncond", value=0.3)]
    write_run(tmp_path / "run", rows)
    warnings = []
    table = build_leaderboard(tmp_path)
    broken = table[table["attack"] == "ams-of-7.5"].iloc[0]
    assert broken["value"] is None or math.isnan(broken["value"])
    assert not broken["best"] and broken["reason"] == "not ranked: 7.5 is outside [0, 1] for a rate in the result file"
    markdown = write_report(tmp_path, formats=["md"], warn=warnings.append)["md"]
    assert "750%" not in markdown
    assert "| ams-of-7.5 | n/a (not ranked: 7.5 is outside [0, 1] for a rate in the result file) |" in markdown
    assert "| uncond | **30.00%" in markdown  # the one ranked attack is ahead; the broken one never is
    assert warnings == [f"{tmp_path / 'run' / 'rows.jsonl'}:1: ams mid: value: 7.5 is outside [0, 1] for a rate; "
                        "shown as n/a, never ranked"]
    # a UMS-like fraction may exceed 1: not flagged
    write_run(tmp_path / "frac", [make_row(metric="ums", unit="fraction", value=1.5, **UNCOUNTED)])
    assert build_leaderboard(tmp_path / "frac")["value"].iloc[0] == pytest.approx(1.5)


def test_a_five_megabyte_attack_name_is_capped_and_quick(tmp_path):
    name = "A" * (5 * 1024 * 1024)
    write_run(tmp_path / "res" / "run", [make_row(attack=name, value=0.3), make_row(attack="uncond", value=0.1)])
    start = time.perf_counter()
    written = write_report(tmp_path / "res", formats=["md", "html", "json", "csv"], out=tmp_path / "out", warn=None)
    assert time.perf_counter() - start < 30  # minutes before the cap
    page, markdown = written["html"].read_text(), written["md"].read_text()
    assert len(page) < 200_000 and len(markdown) < 100_000
    assert "A" * 79 + "\u2026" in page and "A" * 81 not in page
    records = json.loads(written["json"].read_text())
    assert name in {r["attack"] for r in records}  # the full text stays in the JSON
    cells = {row["attack"] for row in csv.DictReader(io.StringIO(written["csv"].read_text()))}
    assert cells == {"A" * 31_999 + "\u2026", "uncond"}  # a spreadsheet cell holds 32,767 characters


def test_out_is_replaced_atomically_and_keeps_what_it_did_not_write(tmp_path, monkeypatch):
    write_run(tmp_path / "res" / "run", two_attacks_two_seeds())
    out = tmp_path / "out"
    write_report(tmp_path / "res", formats=["md", "html"], out=out, warn=None)
    (out / "README.txt").write_text("published by hand")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    import side_bench.report.files as report

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(report, "plot_against_scale", broken)
    with pytest.raises(RuntimeError, match="fell over"):
        write_report(tmp_path / "res", formats=["md", "html"], out=out, warn=None)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # untouched: nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "res"]  # no temporary folder left

    monkeypatch.undo()
    write_report(tmp_path / "res", formats=["csv"], out=out, warn=None)
    assert (out / "README.txt").read_text() == "published by hand" and (out / "index.html").exists()
    assert (out / "leaderboard.csv").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out", "res"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    attacks = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "plain"]
    write_run(tmp_path / "run", [make_row(attack=a, value=0.1 * (i + 1)) for i, a in enumerate(attacks)])
    text = write_report(tmp_path, formats=["csv"], warn=None)["csv"]
    cells = {row["attack"] for row in csv.DictReader(io.StringIO(text))}
    assert cells == {"'" + a for a in attacks[:4]} | {"plain"}
    values = [float(row["value"]) for row in csv.DictReader(io.StringIO(text))]
    assert min(values) == pytest.approx(0.1)  # numbers stay numbers
