"""Submissions: a run folder with a submission.toml joins a leaderboard marked with its origin,
verified here by ``verify`` (never by anything the folder says about itself); a bad field is
one line and exit 2; rows edited after verification show as unverified; pages without a
submission are unchanged (a published page regenerates byte for byte).

One project run (the tiny suite's uncond, a real UNet trained 12 steps) is made once, its target
exported as a pack, and a submitter's run of the same suite with its own attack against that
pack (the target loaded, never trained); each test copies what it edits.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_refused
from click.testing import CliRunner
from conftest import TINY_SUITE

from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.report.files import write_report
from side_bench.report.submissions import ORIGIN_MARKS, PROJECT, UNVERIFIED, VERIFIED

REPO = Path(__file__).resolve().parents[1]
SUITE = TINY_SUITE.format(extra="").replace("scales = [16, 32]", "scales = [16]")
SUBMITTED_ATTACK = """
[[attacks]]
name = "my-attack"
condition = "none"
extractor = "sample"
extractor_settings = { ddim_steps = 3, batch_size = 4 }
"""
SUBMISSION = """\
attack = "my-attack"
authors = ["A. Author", "B. <Lab & Co>"]
link = "https://example.org/my-paper"
code = "v1.2.0"
licence = "CC-BY-4.0"
contact = "a.author@example.org"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from side_bench import run_suite
    from side_bench.run.targets import export_targets

    root = tmp_path_factory.mktemp("submissions")
    (root / "project.toml").write_text(textwrap.dedent(SUITE))
    (root / "submitter.toml").write_text(textwrap.dedent(SUITE) + SUBMITTED_ATTACK)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIDE_BENCH_PLUGINS", "side-bench")
        patch.setenv("SIDE_BENCH_WORKERS", "1")
        run_suite(str(root / "project.toml"), results_dir=root / "project", cache_dir=root / "cache")
        project = next((root / "project" / "tiny").iterdir())
        export_targets(project, root / "pack", cache_dir=root / "cache")
        run_suite(str(root / "submitter.toml"), results_dir=root / "submitted", cache_dir=root / "submitter-cache",
                  targets=root / "pack")
    submitted = next((root / "submitted" / "tiny").iterdir())
    (submitted / "submission.toml").write_text(SUBMISSION)
    return {"project": project, "submitted": submitted, "pack": root / "pack"}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Verifications are remembered in the cache folder: each test starts with its own."""
    monkeypatch.setenv("SIDE_BENCH_CACHE", str(tmp_path / "cache"))


def submission_copy(runs, tmp_path, text: str | None = None) -> Path:
    folder = Path(shutil.copytree(runs["submitted"], tmp_path / "submitted" / runs["submitted"].name))
    if text is not None:
        (folder / "submission.toml").write_text(text)
    return folder


def json_lines(results, **options) -> pd.DataFrame:
    return pd.DataFrame(json.loads(write_report(results, formats=["json"], warn=None, **options)["json"]))


def test_a_submission_with_a_valid_toml_shows_as_verified(runs, tmp_path):
    out = tmp_path / "page"
    write_report([runs["project"], runs["submitted"]], formats=["md", "html", "csv", "json"], out=out,
                 reported=[REPO / "results" / "reported"], targets=runs["pack"], warn=None)
    lines = pd.read_json(out / "leaderboard.json")
    ams = lines[(lines["metric"] == "ams") & (lines["band"] == "high")].set_index("attack")
    # the submitter's uncond is not pooled with this project's: renamed, 8 candidates each
    assert set(ams.index) == {"uncond", "my-attack", "uncond (submission my-attack)"}
    assert ams.loc["uncond", "origin"] == PROJECT and ams.loc["uncond", "submission"] == ""
    assert ams.loc["my-attack", "origin"] == ams.loc["uncond (submission my-attack)", "origin"] == VERIFIED
    assert set(ams["n"]) == {8}
    said = json.loads(ams.loc["my-attack", "submission"])
    assert said["authors"] == ["A. Author", "B. <Lab & Co>"] and said["licence"] == "CC-BY-4.0"
    assert said["verification"].startswith("verify passed here: ")
    csv = pd.read_csv(out / "leaderboard.csv")
    assert set(csv["origin"]) == {PROJECT, VERIFIED}
    markdown = (out / "leaderboard.md").read_text()
    assert f"| my-attack {ORIGIN_MARKS[VERIFIED]} |" in markdown  # in the tables and in Who is who
    assert "| uncond |" in markdown  # this project's attack: no mark
    assert "### Submissions" in markdown and "`https://example.org/my-paper`" in markdown
    submissions = markdown.split("### Submissions")[1].split("\n\n")[2]
    assert "| verified submission | A. Author, B. &lt;Lab &amp; Co&gt; |" in submissions
    assert "the models of the pack" in submissions and "checked (--targets)" in submissions
    page = (out / "index.html").read_text()
    assert "B. &lt;Lab &amp; Co&gt;" in page and "<Lab" not in page  # escaped, never markup
    assert 'href="https://example.org' not in page  # a submitted link is text, never followed
    # figures reported by papers keep their own section, out of the tables
    reported = markdown.index("## Reported, not reproduced")
    assert reported > markdown.index("### Submissions")
    assert not {"SIDE", "UnCond", "Cond"} & set(lines["attack"])


def test_without_targets_the_pack_the_rows_name_is_said_unchecked(runs):
    from side_bench import build_leaderboard

    markdown = write_report([runs["submitted"]], formats=["md"], warn=None)["md"]
    assert "my-attack [submitted, verified]" in markdown
    assert "| uncond [submitted, verified]" in markdown  # no clash: the name is kept, the mark says whose
    assert "by its rows (not checked: no --targets)" in markdown
    table = build_leaderboard([runs["project"], runs["submitted"]])
    assert set(table["origin"]) == {PROJECT, VERIFIED}


@pytest.mark.parametrize("change, fragment", [
    (('link = "https://example.org/my-paper"', 'link = "ftp://example.org/x"'),
     "field 'link': expected an http(s) URL of the paper or the code"),
    (('licence = "CC-BY-4.0"\n', ""), "field 'licence': missing (expected the results' licence as an SPDX"),
    (('licence = ', 'license = '), "field 'license': unknown (expected attack, authors, link, code, licence, "
                                   "contact); did you mean 'licence'?"),
    (('authors = ["A. Author", "B. <Lab & Co>"]', 'authors = "A. Author"'),
     "field 'authors': expected a list of the authors' names"),
    (('contact = "a.author@example.org"', 'contact = "call me"'), "field 'contact': expected an e-mail address"),
    (('code = "v1.2.0"', 'code = ""'), "field 'code': expected the attack code's version or commit"),
    (('attack = "my-attack"', 'attack = "their-attack"'),
     "field 'attack': 'their-attack' is not an attack of its rows (found: my-attack, uncond)"),
    (('attack = "my-attack"', 'attack = "my-attack'), "not valid TOML"),
])
def test_an_invalid_field_is_one_line_naming_it_and_nothing_is_written(runs, tmp_path, change, fragment):
    old, new = change
    assert old in SUBMISSION
    folder = submission_copy(runs, tmp_path, SUBMISSION.replace(old, new))
    out = tmp_path / "page"
    result = CliRunner().invoke(main, ["leaderboard", str(runs["project"]), str(folder), "--out", str(out)])
    assert_refused(result, f"{folder / 'submission.toml'}: ", fragment)
    assert not out.exists()


def test_rows_edited_after_verification_show_as_unverified(runs, tmp_path):
    folder = submission_copy(runs, tmp_path)
    assert set(json_lines([folder])["origin"]) == {VERIFIED}
    cache = tmp_path / "cache" / "verified"
    assert len(list(cache.glob("*.json"))) == 1  # remembered here, by the folder's contents
    # one value edited, in rows.jsonl and in its cell record alike: only recomputing it can tell
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    number, edited = next((i, r) for i, r in enumerate(rows, start=1)
                          if r["attack"] == "my-attack" and r["metric"] == "ams" and r["band"] == "high")
    edited.update(value=0.5, count=4)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record_file = folder / "cells" / f"{edited['config_hash']}.json"
    record = json.loads(record_file.read_text())
    next(r for r in record["rows"] if r["metric"] == "ams" and r["band"] == "high").update(value=0.5, count=4)
    record_file.write_text(json.dumps(record))
    warnings = []
    result = write_report([runs["project"], folder], formats=["json", "md"], warn=warnings.append)
    lines = pd.DataFrame(json.loads(result["json"]))
    submitted = lines[lines["attack"] != "uncond"]
    assert set(submitted["origin"]) == {UNVERIFIED} and set(lines.loc[lines["attack"] == "uncond", "origin"]) == {PROJECT}
    assert len(warnings) == 1 and "submitted, and verify failed here (1 of " in warnings[0]
    assert f"rows.jsonl:{number} values" in warnings[0] and "value 0.5 recomputes to 0.0" in warnings[0]
    assert f"my-attack {ORIGIN_MARKS[UNVERIFIED]} | 50.00%" in result["md"]
    assert len(list(cache.glob("*.json"))) == 2  # a new key: the old verdict does not cover the new bytes
    # nothing the folder says about itself counts: a stamp or a field claiming verification is not read
    (folder / "verified.json").write_text(json.dumps({"verified": True, "rows": "all"}))
    (folder / "submission.toml").write_text(SUBMISSION + "verified = true\n")
    with pytest.raises(BenchError, match="field 'verified': unknown"):
        write_report([folder], formats=["json"], warn=None)
    (folder / "submission.toml").write_text(SUBMISSION)
    assert set(json_lines([folder])["origin"]) == {UNVERIFIED}


def test_a_page_without_submissions_regenerates_byte_for_byte(tmp_path):
    """The published digits-canaries page, regenerated by its documented command
    (docs/findings/digits-canaries.md), is the committed one: md, html and summary unchanged."""
    published = REPO / "results" / "published" / "digits-canaries"
    out = tmp_path / "digits-canaries"
    write_report([REPO / "results" / "digits-canaries"], formats=["md", "html"], out=out, headline="canary-recall",
                 reported=[REPO / "results" / "reported"], warn=None)
    for name in ("leaderboard.md", "index.html", "summary.json"):
        assert (out / name).read_bytes() == (published / name).read_bytes(), f"{name} changed"
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(p.relative_to(published)
                                                                        for p in published.rglob("*"))


def test_clashing_names_are_renamed_by_source_and_this_projects_keep_theirs():
    """One setup: uncond from this project, from a submission verified in one folder and not in
    another (other cells), and from a second submission; my-attack from one source only."""
    from side_bench.report.submissions import _rename_clashes

    mine = {"attack": "my-attack", "authors": ["A"]}
    theirs = {"attack": "their-attack", "authors": ["B"]}
    sources = ["", json.dumps([mine, VERIFIED]), json.dumps([mine, UNVERIFIED]), json.dumps([theirs, VERIFIED]),
               json.dumps([mine, VERIFIED])]
    rows = pd.DataFrame({"setup": ["s"] * 5, "attack": ["uncond"] * 4 + ["my-attack"],
                         "attack_base": ["uncond"] * 4 + ["my-attack"], "_source": sources})
    renamed = _rename_clashes(rows)
    assert renamed["attack"].tolist() == ["uncond", "uncond (submission my-attack)",
                                          "uncond (submission my-attack, unverified)",
                                          "uncond (submission their-attack)", "my-attack"]
    assert renamed["attack_base"].tolist() == renamed["attack"].tolist() and "_source" not in renamed
    # in another setup the same names do not clash
    other = rows.assign(setup=["s", "t", "u", "v", "w"])
    assert _rename_clashes(other)["attack"].tolist() == rows["attack"].tolist()


def svg_texts(out: Path) -> dict[str, list[str]]:
    """Every plot's text elements (its legend, tick labels and titles; SVG keeps text as text)."""
    import re

    return {p.name: re.findall(r"<text[^>]*>([^<]*)</text>", p.read_text()) for p in (out / "plots").glob("*.svg")}


def test_plots_mark_a_submitted_attack_as_its_table_does(tmp_path):
    """Hand-made rows at two scales (line plots and their panels of differences to uncond): a
    submission's attacks, one renamed on a clash, carry its mark in every plot that names them;
    this project's attacks, the reference (uncond) included, carry none. Its rows have no
    records, so verify fails on it: unverified."""
    from leaderboard_rows import make_row, two_attacks_two_seeds, write_run

    project = write_run(tmp_path / "project" / "run-hand", two_attacks_two_seeds())
    theirs = [make_row(scale=scale, attack=attack, seed=0, value=value, config_hash=f"sub-{attack}-{scale}",
                       condition="none" if attack == "uncond" else "surrogate")
              for scale in (16, 64) for attack, value in (("theirs", 0.6), ("uncond", 0.1))]
    submitted = write_run(tmp_path / "submitted" / "run-sub", theirs)
    (submitted / "submission.toml").write_text(SUBMISSION.replace('"my-attack"', '"theirs"'))
    out = tmp_path / "page"
    write_report([project, submitted], formats=["md"], out=out, warn=None)
    mark = ORIGIN_MARKS[UNVERIFIED]
    markdown = (out / "leaderboard.md").read_text()
    assert f"| theirs {mark} |" in markdown and f"| uncond (submission theirs) {mark} |" in markdown
    texts = svg_texts(out)
    plots = {name for name in texts if name.startswith("scale-") and "-diff-" not in name}
    panels = {name for name in texts if name.startswith("scale-diff-")}
    assert plots and panels
    for name in plots | panels:
        labels = texts[name]
        assert f"theirs {mark}" in labels and f"uncond (submission theirs) {mark}" in labels, name
        assert "side" in labels  # this project's: no mark
        assert not any(label.startswith("theirs") and label != f"theirs {mark}" for label in labels), name
    for name in plots:
        assert "uncond" in texts[name]
    for name in panels:  # the reference line, this project's uncond, unmarked
        assert "uncond (0)" in texts[name] and "uncond" not in texts[name]
    # nothing but a submission is ever marked
    assert not any("[submitted" in label for labels in texts.values() for label in labels
                   if not label.startswith(("theirs", "uncond (submission theirs)")))


def test_a_single_scale_dot_chart_marks_a_verified_submission(runs, tmp_path):
    out = tmp_path / "page"
    write_report([runs["project"], runs["submitted"]], formats=["md"], out=out, targets=runs["pack"], warn=None)
    mark = ORIGIN_MARKS[VERIFIED]
    dots = {name: labels for name, labels in svg_texts(out).items() if name.startswith("dots-")}
    assert dots
    for name, labels in dots.items():  # the attacks are the tick labels of a dot chart
        assert f"my-attack {mark}" in labels and f"uncond (submission my-attack) {mark}" in labels, name
        assert "my-attack" not in labels
        if not name.startswith("dots-diff-"):
            assert "uncond" in labels  # this project's, unmarked
