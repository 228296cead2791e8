"""Values at the edge of a metric's range: membership intervals that stay honest at 0 and 1,
and ties the metric cannot break ("cannot rank here") instead of a shared "#1".

Every expected number was worked out by hand (the comments say how).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from leaderboard_rows import make_row, write_run

from side_bench import write_report
from side_bench.report.leaderboard import SATURATED_LABEL, aggregate, load_rows, model_lines
from side_bench.report.page import SATURATED_ROW, build_page
from side_bench.results.records import MEMBERSHIP_BOOTSTRAP, ROW_SCHEMA_VERSION, upgrade_row
from side_bench.scoring import stats


def membership_row(report: str, value: float, *, seed: int = 0, model_key: str = "A", attack: str = "uncond",
                   members: int = 64, nonmembers: int = 1024, **changes) -> dict:
    """A version-3 membership row as the published digits runs hold it: the percentile
    bootstrap's [1, 1] at a separable sample, n = members + non-members, no count."""
    metric = "sima" if report == "auc" else f"sima ({report})"
    changes.setdefault("config_hash", f"{attack}-{seed}-{changes.get('scale', 16)}")
    return make_row(schema_version=3, attack=attack, seed=seed, model_key=model_key, metric=metric, band=None,
                    band_low=None, band_high=None, unit="ratio" if report == "auc" else "rate", value=value,
                    count=None, n=members + nonmembers, ci_low=value, ci_high=value, se=0.0,
                    interval=MEMBERSHIP_BOOTSTRAP, null_value=None, n_train=members, n_null=nonmembers,
                    metric_settings={"report": report, "t": 100}, model_level=True, **changes)


def test_a_version_3_membership_row_gets_the_honest_interval_on_reading():
    # AUC 1 of 64 members and 1,024 non-members: (1 - t)^2 = 1.96^2 V(t), V(t) = t (1 - t) / 65536
    # [1 + 63 (1 - t) / (2 - t) + 1023 t / (1 + t)]; from t = 0.97: bracket 506.5, 1 - t = 3.8415 x
    # 0.97 x 506.5 / 65536 = 0.0288, t = 0.9712 (a second step moves it by < 1e-4)
    auc = upgrade_row(membership_row("auc", 1.0), "test")
    assert auc["schema_version"] == ROW_SCHEMA_VERSION == 6
    assert (auc["value"], auc["ci_high"], auc["n"], auc["count"], auc["se"]) == (1.0, 1.0, 1088, None, None)
    assert auc["interval"] == stats.AUC_INTERVAL and auc["ci_low"] == pytest.approx(0.9712, abs=2e-4)
    # TPR 1 at 1% FPR: 64 of 64 members, Clopper-Pearson lower bound 0.025^(1/64) = 0.94399
    tpr = upgrade_row(membership_row("tpr@1%", 1.0), "test")
    assert (tpr["value"], tpr["count"], tpr["n"], tpr["ci_high"], tpr["se"]) == (1.0, 64, 64, 1.0, None)
    assert tpr["interval"] == stats.TPR_INTERVAL and tpr["ci_low"] == pytest.approx(0.025 ** (1 / 64), rel=1e-9)
    # 55 of 160 (digits-power, loss at scale 160): the exact interval of 55/160
    partial = upgrade_row(membership_row("tpr@1%", 55 / 160, members=160), "test")
    assert (partial["count"], partial["n"]) == (55, 160)
    assert (partial["ci_low"], partial["ci_high"]) == pytest.approx(stats.clopper_pearson(55, 160))
    # what is not such a row is left as it was: another metric's bootstrap, a TPR that is not k
    # of the members, an n that is not members + non-members
    other = make_row(schema_version=3, metric="ranker-auc", unit="ratio", value=1.0, se=0.0, ci_low=1.0,
                     ci_high=1.0, interval="bootstrap-percentile")
    assert without_v6(upgrade_row(other, "test")) == {**other, "schema_version": 6, "cost": None}
    for odd in (membership_row("tpr@1%", 0.5001), {**membership_row("auc", 1.0), "n": 99}):
        assert without_v6(upgrade_row(odd, "test")) == {**odd, "schema_version": 6, "cost": None}


def without_v6(row: dict) -> dict:
    """A row less the fields schema version 6 added (what the attack is, and the built-in metric's
    description where the row had none: tests/test_page_from_files.py)."""
    added = {"condition_description", "extractor_description", "threat_model", "rankers", "diagnostics_summary",
             "metric_description"}
    return {k: v for k, v in row.items() if k not in added}


def test_two_separable_models_pool_to_the_score_interval_of_their_mean(tmp_path):
    rows = [membership_row("auc", 1.0, seed=seed, model_key=key) for seed, key in ((0, "A"), (1, "B"))]
    rows += [membership_row("tpr@1%", 1.0, seed=0, model_key="A"),
             membership_row("tpr@1%", 62 / 64, seed=1, model_key="B")]
    loaded = load_rows(write_run(tmp_path / "run", rows), warn=None)
    lines = model_lines(loaded).set_index("metric")
    # the CSV and JSON keep one line per attack (aggregate): pooled the same way
    per_attack = aggregate(loaded).set_index("metric")
    for metric in ("sima", "sima (tpr@1%)"):
        assert per_attack.loc[metric, "ci_low"] == pytest.approx(lines.loc[metric, "ci_low"], rel=1e-12)
    # the mean of two AUCs of 1, variance V(t) / 2: 1 - t is half of one model's 0.0288 (0.0147)
    auc = lines.loc["sima"]
    assert (auc["value"], auc["ci_high"], auc["n_models"]) == (1.0, 1.0, 2)
    assert auc["ci_low"] == pytest.approx(0.9853, abs=2e-4) and auc["ci_low"] > 0.9712  # more models, narrower
    # the TPRs pool their counts: 126 of 128, Clopper-Pearson (not Wilson)
    tpr = lines.loc["sima (tpr@1%)"]
    assert (tpr["count"], tpr["n"]) == (126, 128) and tpr["value"] == pytest.approx(126 / 128)
    assert (tpr["ci_low"], tpr["ci_high"]) == pytest.approx(stats.clopper_pearson(126, 128))


def zero_rows(scale: int, values: dict[str, float], n: int = 256) -> list[dict]:
    return [make_row(scale=scale, attack=attack, value=value, n_generations=n, null_value=0.0, n_null=n,
                     config_hash=f"{attack}-{scale}") for attack, value in values.items()]


def test_every_attack_at_zero_is_a_tie_the_page_says_cannot_rank_not_first(tmp_path):
    # scale 16: 40 of 256 against 0 of 256: side ranks first (Fisher p ~ 1e-12), starred.
    # scale 256: every attack 0 of 256: saturated, no rank, no star (it was "#1 n.s." each)
    rows = zero_rows(16, {"side": 40 / 256, "uncond": 0.0}) + zero_rows(256, {"side": 0.0, "uncond": 0.0})
    run = write_run(tmp_path / "run", rows)
    table = aggregate(load_rows(run, warn=None))
    at = {(line.attack, line.scale): line for line in table.itertuples(index=False)}
    assert at[("side", 16)].rank == 1 and at[("side", 16)].best and not at[("side", 16)].saturated
    for attack in ("side", "uncond"):
        line = at[(attack, 256)]
        assert line.saturated and pd.isna(line.rank) and not line.best and line.count == 0
    page = build_page(load_rows(run, warn=None), table)
    headline = page.setups[0].headline
    cells = {row.label: [cell.text for cell in row.cells] for row in headline.rows}
    assert cells[SATURATED_ROW] == ["", SATURATED_LABEL]
    assert all("#" not in cells[a][1] and "n.s." in cells[a][1] for a in ("side", "uncond"))
    assert "#1" in cells["side"][0]
    said = " ".join(page.setups[0].sentences)
    assert "At scale 256, every attack scores 0.00%: ams is saturated there and cannot rank here" in said
    assert "The best value falls from 15.62% at scale 16 to 0.00% at scale 256." in said  # 40/256 = 15.625%
    # the rendered pages carry the mark (escaped text, like every other cell)
    out = tmp_path / "board"
    write_report(run, formats=("md", "html"), out=out)
    assert SATURATED_LABEL in (out / "leaderboard.md").read_text()
    assert f">{SATURATED_LABEL}<" in (out / "index.html").read_text()


def test_two_attacks_tied_inside_the_range_keep_their_shared_rank(tmp_path):
    # 10 of 256 each: a tie, but not at an edge: both rank 1 (nothing to break), neither starred
    table = aggregate(load_rows(write_run(tmp_path / "run", zero_rows(16, {"a": 10 / 256, "b": 10 / 256})),
                                warn=None))
    assert list(table["rank"]) == [1, 1] and not table["saturated"].any() and not table["best"].any()


def test_a_model_level_auc_of_one_everywhere_is_marked_on_its_table(tmp_path):
    rows = [membership_row("auc", 1.0, attack=attack) for attack in ("uncond", "side")]
    rows += [membership_row("auc", 0.99, attack=attack, scale=128) for attack in ("uncond", "side")]
    loaded = load_rows(write_run(tmp_path / "run", rows), warn=None)
    lines = model_lines(loaded)
    assert list(lines["saturated"]) == [True, False]  # scale 16 at 1, scale 128 at 0.99
    page = build_page(loaded, aggregate(loaded), headline="sima")
    marks = next(row for row in page.setups[0].headline.rows if row.label == SATURATED_ROW)
    assert [cell.text for cell in marks.cells] == [SATURATED_LABEL, ""]
    first = page.setups[0].headline.rows[0].cells[0].text
    assert first.startswith("1.0000 [0.9712, 1.0000]") and math.isfinite(lines["ci_low"].iloc[0])
