"""Without a suite 'headline' key, the page's headline is chosen by a stated rule from the
evidence (page.HEADLINE_RULE), and a note says where another table disagrees with its sentences;
a suite with the key renders as before (no rule text, no note)."""

from __future__ import annotations

import math

from leaderboard_rows import make_row, write_run

from side_bench import write_report
from side_bench.report.leaderboard import aggregate, load_rows
from side_bench.report.page import HEADLINE_RULE, build_page

FISHER = "(Fisher's exact test, Holm-corrected, alpha 0.05)"


def all_of(k: int, n: int = 100) -> float:
    """One-sided Fisher p of k/n against 0/n: the observed table is the most extreme one, so p is
    its hypergeometric probability, C(n, k) C(n, 0) / C(2n, k) = prod_{i<k} (n - i) / (2n - i)."""
    return math.prod((n - i) / (2 * n - i) for i in range(k))


def run(tmp_path, rows, **config):
    manifest = {"schema_version": 1, "suite": "hand", "run_id": "run-hand", "started": "2026-01-01T00:00:00+00:00",
                "config": {"name": "hand", "metrics": ["ams", "gu-ratio"], **config}, "finished": None, "cells": []}
    return write_run(tmp_path / "run", rows, manifest=manifest)


def page_of(run_dir, headline=None):
    rows = load_rows(run_dir, warn=None)
    return build_page(rows, aggregate(rows), headline=headline)


def gu(**changes) -> dict:
    return make_row(metric="gu-ratio", band=None, band_low=None, band_high=None, **changes)


def first_null_second_starred() -> list[dict]:
    """The suite's first metric, ams (mid), at the null at scale 16: x 6/100 and y 4/100 against 5/100
    held out (neither above it). Its second, gu-ratio: x 30/100, y 2/100 against 0/100: x is above
    the null (one-sided Fisher p = all_of(30) ~ 1e-10, x2 by Holm), y is not (p = all_of(2) = 0.249),
    and x is ahead of y (Fisher p ~ 1e-7), alone at rank 1: starred."""
    return [make_row(attack="x", value=0.06, null_value=0.05, config_hash="x-ams"),
            make_row(attack="y", value=0.04, null_value=0.05, config_hash="y-ams"),
            gu(attack="x", value=0.30, null_value=0.0, config_hash="x-gu"),
            gu(attack="y", value=0.02, null_value=0.0, config_hash="y-gu")]


def test_the_first_metric_at_the_null_and_another_starred_the_headline_is_the_starred_one(tmp_path):
    page = page_of(run(tmp_path, first_null_second_starred()))
    setup = page.setups[0]
    assert setup.headline.title == "gu-ratio"
    assert [t.title for t in setup.details] == ["ams mid [0.9, 0.95)"]
    assert setup.sentences[0] == (f"On gu-ratio, x leads at scale 16 (30.00%), significantly ahead of every other "
                                  f"attack and above the null baseline {FISHER}.")
    # why: x's Holm-adjusted p against the null, 2 x all_of(30) (two attacks; y's p is larger)
    assert setup.chosen == ("Headline chosen by the rule in the legend: of every table, x stands most "
                            f"significantly above the null baseline here (Holm-adjusted p = {2 * all_of(30):.2g} "
                            "at scale 16).")
    assert f"{2 * all_of(30):.2g}" == "1.4e-10"
    assert setup.notes == []  # the headline's only scale has an attack above the null: nothing contradicts it
    assert page.headline_rule == HEADLINE_RULE


def test_the_rule_is_stated_in_the_legend_of_both_formats(tmp_path):
    written = write_report(run(tmp_path / "res", first_null_second_starred()), formats=["md", "html"],
                           out=tmp_path / "out", warn=None)
    markdown, html = written["md"].read_text(), written["html"].read_text()
    assert markdown.splitlines()[:3] == ["# side-bench leaderboard", "", "## gu-ratio"]
    assert "Headline chosen by the rule in the legend" in markdown.split("| attack |")[0]
    assert HEADLINE_RULE in markdown
    assert '<p class="note" id="headline-rule">' + HEADLINE_RULE.replace("'", "&#39;") + "</p>" in html


def disagreeing() -> list[dict]:
    """gu-ratio: at scale 16, x 40/100 and y 0/100 against 0/100 (x starred, p = 2 x all_of(40));
    at scale 64, x 6/100, y 4/100 against 5/100: no attack above the null.
    ams mid: at scale 16, x 10/100, y 0/100 against 0/100 (x above, p = 2 x all_of(10) ~ 1.5e-3);
    at scale 64, x 30/100, y 2/100 against 0/100: x starred (as above).
    gu-ratio's p at 16 is the smallest, so it heads the page, and its sentence "at scale 64, no
    attack is significantly above the null" is contradicted by ams mid at 64."""
    rows = []
    for metric, values in (("gu-ratio", {16: (0.40, 0.0, 0.0), 64: (0.06, 0.04, 0.05)}),
                           ("ams", {16: (0.10, 0.0, 0.0), 64: (0.30, 0.02, 0.0)})):
        make = gu if metric == "gu-ratio" else make_row
        for scale, (x, y, null) in values.items():
            rows += [make(attack=a, scale=scale, value=v, null_value=null, config_hash=f"{a}-{metric}-{scale}")
                     for a, v in (("x", x), ("y", y))]
    return rows


NOTE = ("Other tables disagree where the headline shows no attack above the null baseline: ams mid [0.9, 0.95) "
        "at scale 64 (x 30.00% ★) is significantly above it (see 'Every metric and band').")


def test_a_starred_result_elsewhere_that_contradicts_the_headline_sentence_is_noted_beside_it(tmp_path):
    page = page_of(run(tmp_path / "res", disagreeing()))
    setup = page.setups[0]
    assert setup.headline.title == "gu-ratio"
    assert setup.sentences[:2] == [
        f"On gu-ratio, x leads at scale 16 (40.00%), significantly ahead of every other attack and above the null "
        f"baseline {FISHER}.",
        "At scale 64, no attack is significantly above the null baseline (null baseline: 5.00%)."]
    assert setup.notes == [NOTE]
    written = write_report(tmp_path / "res", formats=["md", "html"], out=tmp_path / "out", warn=None)
    markdown, html = written["md"].read_text(), written["html"].read_text()
    # next to the sentences, before the headline table
    assert f"- {setup.sentences[-1]}\n- Note: {NOTE}\n" in markdown
    assert markdown.index(NOTE) < markdown.index("| attack |")
    assert f'<li class="disagree"><b>Note:</b> {NOTE.replace(chr(39), "&#39;")}</li></ul>' in html
    # the summary the site index is built from keeps it
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["setups"][0]["notes"] == [NOTE] and summary["setups"][0]["chosen"] == setup.chosen


def test_no_attack_above_the_null_anywhere_the_first_metric_at_its_highest_band(tmp_path):
    rows = [make_row(attack=a, band=band, band_low=low, band_high=high, value=v, null_value=0.05,
                     config_hash=f"{a}-{band}")
            for band, low, high in (("mid", 0.9, 0.95), ("high", 0.95, 1.0)) for a, v in (("x", 0.06), ("y", 0.04))]
    rows += [gu(attack=a, value=v, null_value=0.05, config_hash=f"{a}-gu") for a, v in (("x", 0.07), ("y", 0.03))]
    setup = page_of(run(tmp_path, rows)).setups[0]
    assert setup.headline.title == "ams high [0.95, 1]"
    assert setup.chosen.endswith("no attack is significantly above the null baseline in any table, so this is "
                                 "the suite's first metric.")
    assert setup.notes == []


def test_ties_go_to_the_metric_listed_first_then_the_higher_band(tmp_path):
    # the same counts in every table: the same p, so the suite's order decides (ams before gu-ratio),
    # and within ams the higher band
    rows = [make_row(attack=a, band=band, band_low=low, band_high=high, value=v, null_value=0.0,
                     config_hash=f"{a}-{band}")
            for band, low, high in (("mid", 0.9, 0.95), ("high", 0.95, 1.0)) for a, v in (("x", 0.3), ("y", 0.02))]
    rows += [gu(attack=a, value=v, null_value=0.0, config_hash=f"{a}-gu") for a, v in (("x", 0.3), ("y", 0.02))]
    assert page_of(run(tmp_path / "a", rows)).setups[0].headline.title == "ams high [0.95, 1]"
    assert page_of(run(tmp_path / "b", rows, metrics=["gu-ratio", "ams"])).setups[0].headline.title == "gu-ratio"


def test_a_suite_with_a_headline_key_renders_as_before(tmp_path):
    # the key names the metric at the null: it heads the page, with no rule text and no note
    page = page_of(run(tmp_path, disagreeing(), headline="gu-ratio:"))
    assert page.setups[0].headline.title == "gu-ratio"
    assert (page.setups[0].chosen, page.setups[0].notes, page.headline_rule) == ("", [], "")
    keyed_ams = page_of(run(tmp_path / "b", first_null_second_starred(), headline="ams"))
    assert keyed_ams.setups[0].headline.title == "ams mid [0.9, 0.95)"
    assert (keyed_ams.setups[0].chosen, keyed_ams.setups[0].notes, keyed_ams.headline_rule) == ("", [], "")
