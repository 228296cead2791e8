"""``side-bench verify``: a run folder's rows follow from its settings and its records, and a
hostile folder is refused line by line, never followed, opened outside itself or shown raw.

One tiny real run (16 training images, 8 candidates, a real UNet trained 12 steps, a
membership AUC and TPR as model-level rows) is made once; each test edits a copy of it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_refused
from click.testing import CliRunner
from conftest import TINY_SUITE

from side_bench.cli import main
from side_bench.scoring.verify import failures, strict_json, summary, verify_runs

SUITE = TINY_SUITE.format(extra="").replace("scales = [16, 32]", "scales = [16]").replace(
    'metrics = ["ams", "ums", "p95", "gu-ratio"]',
    'metrics = ["ams", "ums", "p95", "gu-ratio", "loss", { name = "loss", id = "loss (tpr@1%)", report = "tpr@1%" }]')


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    from side_bench import run_suite

    root = tmp_path_factory.mktemp("verify")
    suite = root / "tiny.toml"
    suite.write_text(textwrap.dedent(SUITE))
    os.environ["SIDE_BENCH_PLUGINS"] = "side-bench"
    run_suite(str(suite), results_dir=root / "results", cache_dir=root / "cache")
    return next((root / "results" / "tiny").iterdir())


@pytest.fixture
def run(clean_run, tmp_path):
    """A fresh copy of the clean run to edit."""
    return Path(shutil.copytree(clean_run, tmp_path / clean_run.name, symlinks=True))


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]


def write_rows(run_dir: Path, rows: list[dict]) -> None:
    (run_dir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def edit_record(run_dir: Path, config_hash: str, change) -> None:
    path = run_dir / "cells" / f"{config_hash}.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def failed(run_dir: Path) -> list[tuple]:
    """(file, line, check, detail) of every failed check."""
    return [(c.file, None if c.line is pd.NA else c.line, c.check, c.detail)
            for c in failures(verify_runs([run_dir])).itertuples()]


def test_a_clean_run_passes_every_check_and_the_cli_exits_0(clean_run):
    checks = verify_runs([clean_run])
    assert failures(checks).empty, failures(checks).to_string()
    rows = rows_of(clean_run)
    table = summary(checks).set_index("check")
    # every row through each row check; the two record files once; the model-level rows skipped
    assert table.loc["schema", "ok"] == len(rows) + 1  # + the manifest
    assert table.loc["record", "ok"] == table.loc["config-hash", "ok"] == len(rows)
    assert table.loc["record-file", "ok"] == 2
    model_level = [r for r in rows if r["metric"].startswith("loss")]
    assert len(model_level) == 2 and table.loc["values", "skipped"] == 2
    assert table.loc["copy-decisions", "ok"] == 1  # the cell's records store its copy decisions
    assert table.loc["values", "ok"] == len(rows) - 2
    result = CliRunner().invoke(main, ["verify", str(clean_run)])
    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.stdout and "every check passed in 1 run folder" in result.stderr


def test_a_value_edited_in_the_row_and_its_record_fails_the_recomputation(run):
    rows = rows_of(run)
    number, target = next((i, r) for i, r in enumerate(rows, start=1) if r["metric"] == "ams" and r["band"] == "low")
    target["value"] = min(target["value"] + 0.125, 1.0) if target["value"] < 0.5 else target["value"] - 0.125
    write_rows(run, rows)
    edit_record(run, target["config_hash"], lambda record: next(
        r for r in record["rows"] if r["metric"] == "ams" and r["band"] == "low").update(value=target["value"]))
    found = failed(run)
    assert [(f, line, check) for f, line, check, _ in found] == [("rows.jsonl", number, "values")]
    assert f"value {target['value']}" in found[0][3] and "recomputes to" in found[0][3]
    # edited in rows.jsonl only: its cell record disagrees as well
    rows[number - 1]["count"] = 999
    write_rows(run, rows)
    checks = {check for f, line, check, _ in failed(run) if line == number}
    assert checks == {"record", "values"}
    result = CliRunner().invoke(main, ["verify", str(run)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(lines) == 2 and all(f"rows.jsonl:{number}\t" in line and "ams low" in line for line in lines)
    assert "2 check(s) failed in 1 run folder(s)" in result.stderr


def test_a_truncated_candidate_record_fails_its_file_and_every_row_of_the_cell(run):
    rows = rows_of(run)
    record = run / rows[0]["candidates_file"]
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    found = failed(run)
    file_lines = [d for f, line, check, d in found if check == "record-file"]
    assert len(file_lines) == 1 and rows[0]["candidates_file"] in file_lines[0] and "candidates_file" in file_lines[0]
    not_recomputed = [line for f, line, check, d in found if check == "values"]
    # every row of the cell, the model-level ones too: nothing of a cell with a broken record is vouched for
    assert len(not_recomputed) == len(rows)


def test_an_edited_copy_decision_fails_its_check(run):
    """One candidate's stored gu-ratio decision flipped (the page's cost section would count
    it): the copy-decisions check names it; the metrics' values are untouched."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = run / rows_of(run)[0]["candidates_file"]
    table = pq.read_table(path)
    column = table.column("copy:gu-ratio").to_pylist()
    column[0] = not column[0]
    table = table.set_column(table.column_names.index("copy:gu-ratio"), "copy:gu-ratio", pa.array(column))
    pq.write_table(table, path)
    assert [(check, detail) for _, _, check, detail in failed(run)] == [
        ("copy-decisions", "gu-ratio: 1 of 8 candidates decided otherwise than the records store")]


def test_an_edited_setting_breaks_the_config_hash(run):
    rows = rows_of(run)
    config_hash = rows[0]["config_hash"]
    # in the cell record's config: it no longer hashes to its name
    edit_record(run, config_hash, lambda r: r["config"]["attack"]["extractor"]["settings"].update(ddim_steps=50))
    found = [(line, d) for f, line, check, d in failed(run) if check == "config-hash"]
    assert len(found) == len(rows) and f"not {config_hash[:12]}" in found[0][1] and "edited" in found[0][1]
    # in the row only: it differs from the config its hash names (and from its record)
    shutil.copy2(run / "rows.jsonl", run / "rows.bak")
    edit_record(run, config_hash, lambda r: r["config"]["attack"]["extractor"]["settings"].update(ddim_steps=4))
    rows[2]["extractor_settings"] = {**rows[2]["extractor_settings"], "ddim_steps": 50}
    write_rows(run, rows)
    found = [(line, check, d) for f, line, check, d in failed(run)]
    assert {(line, check) for line, check, _ in found} == {(3, "record"), (3, "config-hash")}
    assert any("extractor_settings differ from the config" in d for _, _, d in found)


def test_markup_and_control_characters_are_shown_escaped_never_raw(run):
    rows = rows_of(run)
    hostile = "<script>alert(1)</script>\x1b[31mred\u202e"
    rows[0]["attack"] = hostile
    write_rows(run, rows)
    result = CliRunner().invoke(main, ["verify", str(run)])
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\u202e" not in result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAILED") and "rows.jsonl:1\t" in line)
    assert "<script>alert(1)</script>\\x1b[31mred\\u202e" in line  # text, escaped, capped: never interpreted


def test_nan_and_truncated_lines_are_refused_each_on_its_line(run):
    text = (run / "rows.jsonl").read_text().splitlines()
    text[0] = text[0].replace('"value": ', '"value": NaN, "was": ', 1) if '"value": ' in text[0] else \
        text[0].replace('"value":', '"value":NaN,"was":', 1)
    text[-1] = text[-1][: len(text[-1]) // 2]  # cut mid-line, as a crash or a bad copy leaves it
    (run / "rows.jsonl").write_text("\n".join(text) + "\n")
    schema = {line: d for f, line, check, d in failed(run) if check == "schema"}
    assert set(schema) == {1, len(text)}
    assert "NaN is not JSON" in schema[1] and "not a valid row" in schema[len(text)]
    # a truncated cell record: its rows' config hash cannot be recomputed
    first = rows_of_valid(run)[0]
    cell = run / "cells" / f"{first['config_hash']}.json"
    cell.write_text(cell.read_text()[:100])
    found = failed(run)
    assert any(f == f"cells/{cell.name}" and check == "schema" for f, _, check, _ in found)
    assert any(check == "config-hash" and "unreadable" in d for _, _, check, d in found)


def rows_of_valid(run_dir: Path) -> list[dict]:
    rows = []
    for line in (run_dir / "rows.jsonl").read_text().splitlines():
        try:
            rows.append(strict_json(line))
        except ValueError:
            continue
    return rows


def test_a_path_escape_in_a_recorded_file_name_is_refused_and_never_opened(run, tmp_path, monkeypatch):
    outside = tmp_path / "secret.parquet"
    shutil.copy2(run / rows_of(run)[0]["candidates_file"], outside)
    opened = []
    from side_bench.results import candidates

    real = candidates.read_table
    monkeypatch.setattr(candidates, "read_table", lambda path: opened.append(Path(path)) or real(path))
    rows = rows_of(run)
    escape = "candidates/../../secret.parquet"
    config_hash = rows[0]["config_hash"]
    write_rows(run, [{**r, "candidates_file": escape} for r in rows])
    edit_record(run, config_hash, lambda record: [r.update(candidates_file=escape) for r in record["rows"]])
    found = [d for f, line, check, d in failed(run) if check == "record-file"]
    assert len(found) == 1 and "refused, never opened" in found[0] and escape in found[0]
    assert outside.resolve() not in {p.resolve() for p in opened}


def test_a_link_in_the_folder_is_refused_never_followed(run, tmp_path):
    rows = rows_of(run)
    record = run / rows[0]["candidates_file"]
    elsewhere = tmp_path / "elsewhere.parquet"
    shutil.move(record, elsewhere)
    record.symlink_to(elsewhere)
    found = failed(run)
    assert (rows[0]["candidates_file"], None, "folder", "a link; refused (never followed)") in found
    assert any(check == "record-file" and "not a plain file" in d for _, _, check, d in found)


def test_model_level_intervals_must_follow_from_their_values(run):
    rows = rows_of(run)
    number, auc = next((i, r) for i, r in enumerate(rows, start=1) if r["metric"] == "loss")
    assert auc["interval"] == "score-hanley-mcneil" and auc["se"] is None and auc["n"] == 16 + 32
    assert auc["ci_low"] < auc["value"] <= auc["ci_high"] or auc["ci_low"] <= auc["value"] < auc["ci_high"]
    rows[number - 1] = {**auc, "ci_low": auc["value"], "ci_high": auc["value"]}  # the old [v, v]
    write_rows(run, rows)
    edit_record(run, auc["config_hash"], lambda record: next(
        r for r in record["rows"] if r["metric"] == "loss").update(ci_low=auc["value"], ci_high=auc["value"]))
    found = [(line, d) for f, line, check, d in failed(run) if check == "values"]
    assert len(found) == 1 and found[0][0] == number and "does not follow from its value" in found[0][1]
    assert math.isfinite(auc["value"])


def test_no_rows_is_a_one_line_error(tmp_path):
    assert_refused(CliRunner().invoke(main, ["verify", str(tmp_path)]), "no rows.jsonl found")
    assert_refused(CliRunner().invoke(main, ["verify", str(tmp_path / "nowhere")]), "no such folder")



# ------------------------------------------------------------------------------------------
# --targets PACK: each row's target model is the pack's
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pack_run(clean_run):
    """The clean run's target exported as a pack, and the same suite run against that pack
    (loaded, never trained: its rows' target_model names the pack)."""
    from side_bench import run_suite
    from side_bench.run.targets import export_targets

    root = clean_run.parents[2]
    pack = root / "pack"
    export_targets(clean_run, pack, cache_dir=root / "cache")
    run_suite(str(root / "tiny.toml"), results_dir=root / "pack-results", cache_dir=root / "pack-cache", targets=pack)
    return pack, next((root / "pack-results" / "tiny").iterdir())


def failed_against(run_dir: Path, pack: Path) -> list[tuple]:
    """(file, line, check, detail) of every failed check, the target check included."""
    return [(c.file, None if c.line is pd.NA else c.line, c.check, c.detail)
            for c in failures(verify_runs([run_dir], targets=pack)).itertuples()]


def edit_target(run_dir: Path, change) -> None:
    """``change`` every row's target_model, in rows.jsonl and in the cell records alike (so that
    only the target check can tell)."""
    rows = rows_of(run_dir)
    for row in rows:
        change(row)
    write_rows(run_dir, rows)
    for config_hash in {r["config_hash"] for r in rows}:
        edit_record(run_dir, config_hash, lambda record: [change(r) for r in record["rows"]])


def test_a_run_against_a_pack_verifies_with_targets(pack_run, clean_run):
    from side_bench.run.targets import read_pack

    pack, run_dir = pack_run
    rows = rows_of(run_dir)
    assert {r["target_model"]["pack"] for r in rows} == {read_pack(pack).sha256}  # loaded from the pack
    checks = verify_runs([run_dir], targets=pack)
    assert failures(checks).empty, failures(checks).to_string()
    assert summary(checks).set_index("check").loc["target", "ok"] == len(rows)
    result = CliRunner().invoke(main, ["verify", str(run_dir), "--targets", str(pack)])
    assert result.exit_code == 0, result.output
    assert "every check passed in 1 run folder" in result.stderr
    # the run the pack was exported from attacked the same files (trained here: its pack is null)
    assert {r["target_model"]["pack"] for r in rows_of(clean_run)} == {None}
    assert failed_against(clean_run, pack) == []
    # without --targets there is no target check at all
    assert "target" not in set(verify_runs([run_dir])["check"])


def test_an_edited_target_model_fails_the_target_check_on_every_row(pack_run, tmp_path):
    pack, original = pack_run
    run_dir = Path(shutil.copytree(original, tmp_path / original.name))
    weights = "diffusion_pytorch_model.safetensors"
    recorded = rows_of(run_dir)[0]["target_model"]["files"][weights]
    edit_target(run_dir, lambda row: row["target_model"]["files"].update({weights: "0" * 64}))
    found = failed_against(run_dir, pack)
    assert {check for _, _, check, _ in found} == {"target"}  # nothing else notices
    assert [line for _, line, _, _ in found] == list(range(1, len(rows_of(run_dir)) + 1))
    key = rows_of(run_dir)[0]["target_model"]["key"]
    assert found[0][3] == (f"target model {key[:12]} is not the pack's: file {weights}: sha256 000000000000, "
                           f"the pack's {recorded[:12]}")
    result = CliRunner().invoke(main, ["verify", str(run_dir), "--targets", str(pack)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(lines) == len(found) and all("\ttarget\t" in line and "/rows.jsonl:" in line for line in lines)


def test_rows_without_a_target_identity_fail_with_their_line(pack_run, tmp_path):
    pack, original = pack_run
    run_dir = Path(shutil.copytree(original, tmp_path / original.name))
    edit_target(run_dir, lambda row: row.pop("target_model"))  # as rows written before it was recorded
    found = failed_against(run_dir, pack)
    assert {check for _, _, check, _ in found} == {"target"} and len(found) == len(rows_of(run_dir))
    assert found[0][3] == (f"no target identity recorded: run with side-bench >= 0.1.0 at commit 49f897a and "
                           f"--targets {pack}")


def test_a_pack_without_the_rows_model_fails_each_row_and_a_broken_pack_is_one_line(pack_run, tmp_path):
    """A consistent pack that holds another model (as one exported from another run would):
    every row fails its target check naming its model; a pack that lists a model it lacks is
    refused before any folder is checked (exit 2)."""
    from side_bench.results.store import sha256_file
    from side_bench.run.targets import PACK_FILE, TARGET_FILE

    pack, run_dir = pack_run
    other = Path(shutil.copytree(pack, tmp_path / "other-pack"))
    manifest = json.loads((other / PACK_FILE).read_text())
    (key, listed), = manifest["models"].items()
    stranger = "f" * 64
    (other / "models" / key).rename(other / "models" / stranger)
    target_file = other / "models" / stranger / TARGET_FILE
    target_file.write_text(json.dumps({**json.loads(target_file.read_text()), "model_key": stranger}))
    manifest["models"] = {stranger: {**listed, "target_sha256": sha256_file(target_file)}}
    (other / PACK_FILE).write_text(json.dumps(manifest))
    found = failed_against(run_dir, other)
    assert {check for _, _, check, _ in found} == {"target"} and len(found) == len(rows_of(run_dir))
    assert found[0][3] == f"target model {key[:12]} is not in the pack {other} (it holds scale 16 seed 0)"
    # the model's folder gone while pack.json still lists it: the pack itself is refused
    broken = Path(shutil.copytree(pack, tmp_path / "broken-pack"))
    shutil.rmtree(broken / "models" / key)
    result = CliRunner().invoke(main, ["verify", str(run_dir), "--targets", str(broken)])
    assert_refused(result, f"models/{key}/{TARGET_FILE}: missing from the pack")
