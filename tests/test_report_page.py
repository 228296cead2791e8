"""The leaderboard page: headline first, sentences from the numbers, legend from the plugins,
details in a stable order, Markdown and HTML from one page model, templates in the wheel."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner
from leaderboard_rows import make_row, two_attacks_two_seeds, write_run

from side_bench import write_report
from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.report.leaderboard import aggregate, load_rows
from side_bench.report.page import build_page

REPO = Path(__file__).resolve().parents[1]


def bands_rows() -> list[dict]:
    """ams in three bands and gu-ratio, two attacks, one scale; the suite lists gu-ratio last."""
    rows = []
    for band, low, high in (("low", 0.85, 0.9), ("mid", 0.9, 0.95), ("high", 0.95, 1.0)):
        for attack, value in (("uncond", 0.2), ("side", 0.05)):
            rows.append(make_row(attack=attack, band=band, band_low=low, band_high=high, value=value,
                                 config_hash=f"{attack}-{band}"))
    for attack, value in (("uncond", 0.3), ("side", 0.02)):
        rows.append(make_row(attack=attack, metric="gu-ratio", band=None, band_low=None, band_high=None,
                             value=value, config_hash=f"{attack}-gu"))
    return rows


def run_with(tmp_path: Path, rows: list[dict], **config) -> Path:
    manifest = {"schema_version": 1, "suite": "hand", "run_id": "run-hand", "started": "2026-01-01T00:00:00+00:00",
                "config": {"name": "hand", "metrics": ["ams", "gu-ratio"], **config}, "finished": None, "cells": []}
    return write_run(tmp_path / "run", rows, manifest=manifest)


def page_of(results, headline=None):
    rows = load_rows(results, warn=None)
    return build_page(rows, aggregate(rows), headline=headline)


def titles(page) -> tuple[str, list[str]]:
    setup = page.setups[0]
    return setup.headline.title, [t.title for t in setup.details]


def test_the_headline_is_the_option_else_the_suite_key_else_the_rule(tmp_path):
    # no key: the table where an attack stands most significantly above the null (page.HEADLINE_RULE):
    # uncond's gu-ratio, 30/100 against 0/100, beats its ams, 20/100 against 0/100 in every band
    assert titles(page_of(run_with(tmp_path / "a", bands_rows()))) == (
        "gu-ratio", ["ams high [0.95, 1]", "ams mid [0.9, 0.95)", "ams low [0.85, 0.9)"])
    # the suite's key (read from the run's manifest)
    keyed = run_with(tmp_path / "b", bands_rows(), headline="gu-ratio")
    assert titles(page_of(keyed)) == (
        "gu-ratio", ["ams high [0.95, 1]", "ams mid [0.9, 0.95)", "ams low [0.85, 0.9)"])
    # the option wins, with a band; the rest of that metric first, high before mid before low
    assert titles(page_of(keyed, headline="ams:mid")) == (
        "ams mid [0.9, 0.95)", ["ams high [0.95, 1]", "ams low [0.85, 0.9)", "gu-ratio"])
    with pytest.raises(BenchError, match=r"--headline: no rows for metric 'ums' \(found: ams, gu-ratio\)"):
        page_of(keyed, headline="ums")
    with pytest.raises(BenchError, match=r"--headline: metric 'ams' has no band 'top' \(found: high, low, mid\)"):
        page_of(keyed, headline="ams:top")


def test_the_cli_takes_headline_and_the_markdown_opens_with_it(tmp_path):
    run = run_with(tmp_path, bands_rows())
    result = CliRunner().invoke(main, ["leaderboard", str(run), "--headline", "gu-ratio"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["# side-bench leaderboard", "", "## gu-ratio"]
    first_table = next(i for i, line in enumerate(lines) if line.startswith("| attack |"))
    assert lines[first_table + 2].startswith("| uncond | **30.00% [21.89, 39.58] (30/100) #1 ★** |")
    assert lines.index("## Every metric and band") > first_table
    result = CliRunner().invoke(main, ["leaderboard", str(run), "--headline", "gu-rati"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --headline: no rows for metric 'gu-rati'")


def test_sentences_come_from_the_numbers(tmp_path):
    page = page_of(write_run(tmp_path / "run", two_attacks_two_seeds()))
    assert page.setups[0].sentences == [
        "On ams, side leads at scale 16 (40.00%), significantly ahead of every other attack and above the null "
        "baseline (Fisher's exact test, Holm-corrected, alpha 0.05).",
        "At scale 64, side and uncond share the lead: above the null baseline, but not significantly different "
        "from each other.",
        "The best value falls from 40.00% at scale 16 to 5.00% at scale 64.",
    ]
    at_null = [make_row(attack=a, scale=s, value=v, null_value=0.05, config_hash=f"{a}{s}")
               for a, v in (("x", 0.06), ("y", 0.04)) for s in (64, 128)]
    page = page_of(write_run(tmp_path / "null", at_null))
    assert page.setups[0].sentences[0] == ("At scales 64 and 128, no attack is significantly above the null "
                                           "baseline (null baseline: 5.00% at both scales).")


def test_a_sentence_labels_the_null_values_it_prints(tmp_path):
    # Issue 22: "(0.00%, 0.00%)" after "no attack is above the null" read as the attacks' results.
    def at_null(nulls):
        return [make_row(attack=a, scale=s, value=v, null_value=n, config_hash=f"{a}{s}")
                for s, n in nulls.items() for a, v in (("x", n + 0.01), ("y", n))]

    def first(name, nulls):
        return page_of(write_run(tmp_path / name, at_null(nulls))).setups[0].sentences[0]

    assert first("one", {128: 0.0}) == "At scale 128, no attack is significantly above the null baseline " \
                                      "(null baseline: 0.00%)."
    assert first("three", {96: 0.0, 128: 0.0, 160: 0.0}) == (
        "At scales 96, 128 and 160, no attack is significantly above the null baseline "
        "(null baseline: 0.00% at every one of them).")
    assert first("differ", {64: 0.05, 128: 0.07}) == (
        "At scales 64 and 128, no attack is significantly above the null baseline "
        "(null baseline: 5.00% at 64, 7.00% at 128).")
    none = [make_row(attack=a, scale=64, value=v, null_value=None, null_count=None, config_hash=a)
            for a, v in (("x", 0.01), ("y", 0.0))]
    assert page_of(write_run(tmp_path / "none", none)).setups[0].sentences[0] == (
        "At scale 64, no attack is significantly above the null baseline.")


def test_the_legend_reads_each_plugins_own_description(tmp_path):
    rows = two_attacks_two_seeds()
    rows.append(make_row(attack="mystery", condition="not-installed", extractor="nor-this", config_hash="m"))
    page = page_of(write_run(tmp_path / "run", rows))
    attacks = {a.name: a for a in page.attacks}
    # ddim_steps is 4 in every attack: not what tells them apart, so it is among the other settings
    assert attacks["uncond"].condition == "none" and attacks["uncond"].extractor == "sample"
    assert attacks["uncond"].extractor_rest == "ddim_steps=4" and attacks["uncond"].condition_rest == ""
    assert "Carlini et al. 2023" in attacks["uncond"].description  # from NoCondition.description / Sample's
    assert "SIDE" in attacks["side"].description and "2410.02467" in attacks["side"].description
    assert attacks["mystery"].description == "" and attacks["mystery"].condition == "not-installed"
    metric = page.metrics[0]
    assert (metric.name, metric.direction, metric.unit) == ("ams", "higher = more memorization", "rate (in percent)")
    assert metric.description.startswith("average memorization score")  # the metric plugin's description


def test_markdown_and_html_render_the_same_page(tmp_path):
    rows = two_attacks_two_seeds()
    rows.append(make_row(attack="x|*[y](z)", value=0.2, config_hash="hostile"))
    rows.append(make_row(metric="p95", band=None, band_low=None, band_high=None, value=0.97, null_value=0.88,
                         unit="similarity", count=None, n=None, config_hash="p95"))
    written = write_report(write_run(tmp_path / "res" / "run", rows), formats=["md", "html"], out=tmp_path / "out",
                           warn=None)
    markdown, page = written["md"].read_text(), written["html"].read_text()
    for sentence in page_of(tmp_path / "res").setups[0].sentences:
        assert sentence in markdown and sentence.replace("'", "&#39;") in page
    assert "| x\\|\\*[y]\\(z) |" in markdown and "<th scope=\"row\"><span" in page
    # p95, one click away, and every attack's other settings (after the ones that differ)
    assert page.count("<details") == markdown.count("<details>") == 2
    assert page.index("Every other setting") < page.index("<h2>Every metric and band</h2>") < page.index("<details id=\"d-")


def test_a_suite_headline_names_one_of_its_metrics_and_bands():
    from side_bench.registry import load_registry
    from side_bench.run.suite import parse_suite

    raw = tomllib.loads((REPO / "benchmarks" / "digits-scales.toml").read_text())
    raw.pop("headline", None)
    registry = load_registry()
    assert parse_suite(raw, "s.toml", registry).headline == raw["metrics"][0]  # the default: the first metric
    assert parse_suite({**raw, "headline": "gu-ratio"}, "s.toml", registry).headline == "gu-ratio"
    assert parse_suite({**raw, "headline": "ams:high"}, "s.toml", registry).headline == "ams:high"
    with pytest.raises(BenchError, match=r"s.toml: headline: 'gu-ration' is not one of the suite's metrics"):
        parse_suite({**raw, "headline": "gu-ration"}, "s.toml", registry)
    with pytest.raises(BenchError, match=r"s.toml: headline: band 'top' is not one of the suite's bands"):
        parse_suite({**raw, "headline": "ams:top"}, "s.toml", registry)


def test_the_templates_ship_in_the_wheel(tmp_path):
    subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)], cwd=REPO,
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"side_bench/report/templates/leaderboard.html.j2", "side_bench/report/templates/leaderboard.md.j2"} <= set(names)
    assert any(re.fullmatch(r"side_bench-.*\.dist-info/METADATA", n) for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: jinja2>=3.1" in metadata


def test_each_attack_gets_a_line_of_diagnostics_under_the_details(tmp_path):
    rows = two_attacks_two_seeds()
    for row in rows:
        if row["attack"] == "side" and row["scale"] == 16:
            row["diagnostics"] = {"target_hit": {"count": 58, "n": 100, "value": 0.58},
                                  "classifier": {"heldout": {"accuracy": {"[0, 250)": 0.93, "[250, 1000)": 0.4}}}}
    page = page_of(write_run(tmp_path / "run", rows))
    # two seeds pooled: 116 of 200 samples landed nearest a training image of their target class
    assert page.setups[0].diagnostics == [
        "side @ scale 16: target hit 58.0% [51.1, 64.6] (116/200); classifier held-out accuracy by noise "
        "[0, 250): 0.93, [250, 1000): 0.40"]


def test_an_attack_keeps_its_colour_in_every_plot(tmp_path):
    rows = two_attacks_two_seeds()
    rows += [make_row(attack="side", metric="gu-ratio", band=None, band_low=None, band_high=None, value=0.3,
                      config_hash="gu-side"),
             make_row(attack="newcomer", metric="gu-ratio", band=None, band_low=None, band_high=None, value=0.1,
                      config_hash="gu-new")]
    out = tmp_path / "out"
    write_report(write_run(tmp_path / "run", rows), formats=["html"], out=out, warn=None)
    # ams at scales 16 and 64: a line plot; gu-ratio at 16 alone: a dot chart (each with its difference to uncond)
    svgs = {p.name.split("-")[1]: p.read_text() for p in (out / "plots").glob("*.svg") if "-diff-" not in p.name}
    assert set(svgs) == {"ams", "gu"}
    assert {p.name.split("-")[0] for p in (out / "plots").glob("*.svg")} == {"scale", "dots"}
    # uncond and side come first in the rows: blue and orange in both plots, whatever else a plot holds
    for text in svgs.values():
        assert "stroke: #e69f00" in text and ">side<" in text
    assert "stroke: #0072b2" in svgs["ams"] and "stroke: #009e73" in svgs["gu"]  # the third attack: green
