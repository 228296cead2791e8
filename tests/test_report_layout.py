"""Pages that show what matters (issue 31): the settings that tell attacks apart first in "Who is
who", a cell on two lines in HTML, every rate plot with its panel of differences to UnCond, and a
dot chart per attack for a suite with one scale. Expected values are worked out in the comments."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from leaderboard_rows import make_row, two_attacks_two_seeds, write_run

from side_bench import write_report
from side_bench.report.leaderboard import aggregate, load_rows
from side_bench.report.page import build_page
from side_bench.report.plots import difference_lines, reference_attack

SIDE = {"batch_size": 256, "class_draw": "uniform", "classifier_batch_size": 128, "classifier_blocks": 1,
        "classifier_holdout": 0.15, "classifier_steps": 1000, "ddim_steps": 50, "guidance_scale": 0.3}


def settings_rows() -> list[dict]:
    """digits-power's attacks in miniature: Cond (classifier-guidance, 30 classifier steps, lambda 1),
    SIDE swept over lambda 0.3 and 1 (1,000 steps, many settings that alphabetically come before
    guidance_scale, all equal), a SIDE variant whose `classifier` setting only it records (a newer
    setting: recorded only when not its default), and UnCond."""
    def row(attack, condition, extractor, settings, condition_settings=None):
        return make_row(attack=attack, condition=condition, extractor=extractor, extractor_settings=settings,
                        condition_settings=condition_settings or {}, config_hash=attack)

    surrogate = {"clusters": 20, "n_syn": 1000}
    return [row("cond", "informative", "classifier-guidance",
                {"batch_size": 256, "classifier_steps": 30, "ddim_steps": 50, "guidance_scale": 1.0}),
            row("side[guidance_scale=0.3]", "surrogate", "side", SIDE, surrogate),
            row("side[guidance_scale=1.0]", "surrogate", "side", {**SIDE, "guidance_scale": 1.0}, surrogate),
            row("side-kernel", "surrogate", "side", {**SIDE, "classifier": "kernel"}, {**surrogate, "n_syn": 4000}),
            row("uncond", "none", "sample", {"batch_size": 256, "ddim_steps": 50})]


def page_of(run_dir):
    rows = load_rows(run_dir, warn=None)
    return build_page(rows, aggregate(rows))


def test_who_is_who_lists_the_settings_that_differ_first_and_the_rest_apart(tmp_path):
    attacks = {a.name: a for a in page_of(write_run(tmp_path / "run", settings_rows())).attacks}
    # differ: guidance_scale (0.3, 1.0, 1.0 in Cond), classifier_steps (30 against 1,000), classifier
    # (recorded by one SIDE and not the others) and n_syn (1,000 against 4,000); the swept lambda first
    side = attacks["side[guidance_scale=0.3]"]
    assert side.extractor == "side (guidance_scale=0.3, classifier_steps=1000)"
    assert side.condition == "surrogate (n_syn=1000)"
    assert attacks["side-kernel"].extractor == "side (classifier=kernel, classifier_steps=1000, guidance_scale=0.3)"
    assert attacks["side-kernel"].condition == "surrogate (n_syn=4000)"
    assert attacks["cond"].extractor == "classifier-guidance (classifier_steps=30, guidance_scale=1.0)"
    assert attacks["cond"].condition == "informative"
    # the same everywhere (batch_size, ddim_steps, K) or only one plugin's (class_draw): on demand
    assert side.extractor_rest == ("batch_size=256, class_draw=uniform, classifier_batch_size=128, "
                                   "classifier_blocks=1, classifier_holdout=0.15, ddim_steps=50")
    assert side.condition_rest == "clusters=20"
    assert (attacks["uncond"].extractor, attacks["uncond"].extractor_rest) == ("sample", "batch_size=256, ddim_steps=50")


def test_who_is_who_in_html_and_markdown(tmp_path):
    written = write_report(write_run(tmp_path / "res" / "run", settings_rows()), formats=["md", "html"],
                           out=tmp_path / "out", warn=None)
    page, markdown = written["html"].read_text(), written["md"].read_text()
    legend = page[page.index('id="legend-attacks"'):]
    assert "<td>side (guidance_scale=0.3, classifier_steps=1000)</td>" in legend[:legend.index("</table>")]
    rest = page[page.index('<details id="settings-rest">'):]
    assert "<details id=\"settings-rest\"><summary><b>Every other setting</b>" in page  # closed: on demand
    assert "<td>batch_size=256, class_draw=uniform, classifier_batch_size=128" in rest[:rest.index("</details>")]
    assert "| side[guidance_scale=0.3] | surrogate (n_syn=1000) | side (guidance_scale=0.3, classifier_steps=1000) |" \
        in markdown
    assert "<details><summary>Every other setting (the same in every attack that has it)</summary>" in markdown


def test_a_cell_takes_two_lines_in_html_and_one_in_markdown(tmp_path):
    written = write_report(write_run(tmp_path / "res" / "run", two_attacks_two_seeds()), formats=["md", "html"],
                           out=tmp_path / "out", warn=None)
    page, markdown = written["html"].read_text(), written["md"].read_text()
    # side at 16: 80/200 pooled, Wilson [33.46, 46.92], sd 14.14% over the seeds, alone at #1 above the null
    assert '>40.00% sd 14.14% #1 ★<span class="ci">[33.46, 46.92] (80/200)</span></td>' in page
    assert "**40.00% [33.46, 46.92] (80/200) sd 14.14% #1 ★**" in markdown  # unchanged
    # the null row too: 4/200 at 16
    assert '>2.00%<span class="ci">[0.78, 5.03] (4/200)</span></td>' in page
    assert "max-width: 1200px" not in page and "table.results td" in page


def test_every_rate_plot_has_its_panel_of_differences_to_uncond(tmp_path):
    rows = two_attacks_two_seeds()
    rows.append(make_row(metric="p95", band=None, band_low=None, band_high=None, value=0.97, null_value=0.88,
                         unit="similarity", count=None, n=None, config_hash="p95"))
    loaded = load_rows(write_run(tmp_path / "res" / "run", rows), warn=None)
    assert reference_attack(loaded) == "uncond"  # condition none, extractor sample
    table = aggregate(loaded)
    ams = table[table["metric"] == "ams"]
    found = difference_lines(ams, "uncond", ["scale"]).set_index("scale")
    # side - uncond, Newcombe: 80/200 - 30/200 = 0.25 [0.164, 0.331] at 16 (Wilson 0.3346-0.4692 and
    # 0.1071-0.2061: 0.25 -+ sqrt(0.0654^2 + 0.0561^2), sqrt(0.0692^2 + 0.0429^2)); 6/200 - 10/200 = -0.02
    # [-0.063, 0.021] at 64, which crosses 0: the shared rank
    assert list(found["attack"]) == ["side", "side"]
    assert found.loc[16, ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx([0.25, 0.1639, 0.3314], abs=1e-4)
    assert found.loc[64, ["diff", "diff_low", "diff_high"]].tolist() == pytest.approx([-0.02, -0.0628, 0.0207],
                                                                                       abs=1e-4)
    assert difference_lines(table[table["metric"] == "p95"], "uncond", ["scale"]).empty  # not a rate: no panel
    assert difference_lines(ams, None, ["scale"]).empty  # no UnCond: nothing to take the difference to

    out = tmp_path / "out"
    write_report(tmp_path / "res", formats=["html"], out=out, warn=None)
    page = (out / "index.html").read_text()
    figures = re.findall(r'<img src="(plots/[^"]+)" alt="([^"]+)"', page)
    titles = [alt for _, alt in figures]
    assert titles == ["ams mid [0.9, 0.95)", "ams mid [0.9, 0.95) difference to uncond", "p95"]
    for png, _ in figures:
        assert (out / png).stat().st_size > 1000
    panel = (out / figures[1][0]).with_suffix(".svg").read_text()
    assert ">side<" in panel and ">uncond (0)<" in panel and "ams minus uncond (points)" in panel


def test_a_panel_of_differences_spanning_far_more_than_their_intervals_gets_a_symmetric_log_axis():
    from matplotlib.figure import Figure

    from side_bench.report.plots import _difference_axis

    # digits-power's gu-ratio: -33 points at 64, a few tenths at 112-160 with intervals of about +-0.7
    lines = pd.DataFrame({"diff": [-0.33, -0.003, -0.001], "diff_low": [-0.35, -0.010, -0.006],
                          "diff_high": [-0.31, 0.004, 0.004]})
    axes = Figure().add_subplot()
    assert _difference_axis(axes, lines, 100.0) == "y axis: symmetric log, linear within \u00b12"
    assert axes.get_yscale() == "symlog"  # median half-width 0.5 points: linear within +-2 (1-2-5 above 2 x 0.5)
    flat = pd.DataFrame({"diff": [0.05, 0.02], "diff_low": [0.01, -0.02], "diff_high": [0.09, 0.06]})
    axes = Figure().add_subplot()
    assert _difference_axis(axes, flat, 100.0) == "" and axes.get_yscale() == "linear"


def test_a_suite_with_one_scale_gets_a_dot_chart_per_attack(tmp_path):
    rows = [make_row(attack=a, condition=c, extractor=e, scale=96, value=v, null_value=0.01, config_hash=a)
            for a, c, e, v in (("uncond", "none", "sample", 0.10), ("side", "surrogate", "side", 0.30),
                               ("cond", "informative", "classifier-guidance", 0.05))]
    out = tmp_path / "out"
    write_report(write_run(tmp_path / "res" / "run", rows), formats=["html"], out=out, warn=None)
    page = (out / "index.html").read_text()
    pngs = re.findall(r'<img src="plots/([^"]+)"', page)
    assert [p.split("-")[0:2] for p in pngs] == [["dots", "ams"], ["dots", "diff"]]
    chart = (out / "plots" / pngs[0]).with_suffix(".svg").read_text()
    # one dot per attack, named on the y axis from the top in the table's order (side, uncond, cond);
    # no scale axis: a line plot would have had one x tick
    labels = re.findall(r'<text[^>]* y="([\d.]+)"[^>]*>(side|uncond|cond)<', chart)  # text as text (SVG)
    assert [name for _, name in sorted(labels, key=lambda label: float(label[0]))] == ["side", "uncond", "cond"]
    assert "scale (training images" not in chart and "ams (%)" in chart and "null (held-out)" in chart
    differences = (out / "plots" / pngs[1]).with_suffix(".svg").read_text()
    assert ">side<" in differences and ">cond<" in differences and "ams minus uncond (points)" in differences
