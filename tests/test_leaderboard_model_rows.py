"""Model-level metrics (``needs_model``) on the leaderboard: one "target model" row per scale,
each model counted once, no ranks and no null baseline; attack metrics as before.

Every expected number was worked out by hand from the rows below.
"""

from __future__ import annotations

import math

import pandas as pd
from leaderboard_rows import make_row, write_run

from side_bench import write_report
from side_bench.report.leaderboard import MODEL_LABEL, aggregate, load_rows, model_lines
from side_bench.report.page import MODEL_NOTE, MODEL_TARGETS, build_page
from side_bench.results.records import cell_rows

ATTACKS = ("uncond", "side[guidance_scale=1.0]", "side[guidance_scale=3.0]")


def model_row(attack: str, seed: int, model_key: str, value: float, se: float, **changes) -> dict:
    """A model-level row as the runner writes it: the same numbers for every attack on one model."""
    return make_row(attack=attack, seed=seed, model_key=model_key, metric="model-auc", band=None, band_low=None,
                    band_high=None, unit="ratio", value=value, se=se, ci_low=value - 2 * se,
                    ci_high=value + 2 * se, null_value=None, config_hash=f"{attack}-{seed}",
                    extractor_settings={"guidance_scale": 1.0 if "1.0" in attack else 3.0}, **changes)


def hand_rows(*, model_level: bool | None = True) -> list[dict]:
    """scale 16. Seed 0, model A (auc 0.8, se 0.01): every attack. Seed 1, model B (auc 0.6, se
    0.02): uncond only, so the attacks have different seeds, as in the published digits-power.
    Pooled over the two models: 0.7, se sqrt(0.01^2 + 0.02^2) / 2 = 0.0111803, 95% interval
    0.7 +- 0.0219129 = [0.6781, 0.7219], sd of (0.8, 0.6) = 0.1414. Per row (wrongly) the mean
    would be (3 x 0.8 + 0.6) / 4 = 0.75. And ams (an attack metric) for the same cells."""
    extra = {} if model_level is None else {"model_level": model_level}
    rows = [model_row(attack, 0, "A", 0.8, 0.01, **extra) for attack in ATTACKS]
    rows.append(model_row("uncond", 1, "B", 0.6, 0.02, **extra))
    for attack, value in zip(ATTACKS, (0.10, 0.30, 0.50), strict=True):
        rows.append(make_row(attack=attack, value=value, null_value=0.01, config_hash=f"{attack}-0",
                             extractor_settings={"guidance_scale": 1.0 if "1.0" in attack else 3.0}))
    return rows


def test_two_attacks_on_one_model_give_one_row_with_its_value_once(tmp_path):
    rows = [model_row(attack, 0, "A", 0.8, 0.01, model_level=True) for attack in ATTACKS[:2]]
    lines = model_lines(load_rows(write_run(tmp_path / "run", rows), warn=None))
    assert len(lines) == 1
    line = lines.iloc[0]
    assert line["attack"] == MODEL_LABEL and line["n_models"] == 1 and line["n_seeds"] == 1
    # one model: its own value and interval, not a pool of the two identical rows
    assert math.isclose(line["value"], 0.8) and math.isclose(line["ci_low"], 0.78)
    assert math.isclose(line["ci_high"], 0.82) and math.isclose(line["se"], 0.01)
    assert pd.isna(line["rank"]) and not line["best"] and line["null_value"] is None


def test_two_seeds_pool_to_the_mean_of_the_two_models(tmp_path):
    lines = model_lines(load_rows(write_run(tmp_path / "run", hand_rows()), warn=None))
    line = lines.iloc[0]
    assert len(lines) == 1 and line["n_models"] == 2 and line["n_seeds"] == 2
    assert math.isclose(line["value"], 0.7)
    assert math.isclose(line["se"], math.sqrt(0.01**2 + 0.02**2) / 2)
    assert math.isclose(line["ci_low"], 0.7 - 1.959964 * 0.0111803, abs_tol=1e-6)
    assert math.isclose(line["std"], math.sqrt(0.02), rel_tol=1e-9)  # sd of (0.8, 0.6)


def test_the_page_shows_one_unranked_target_model_row_and_says_why(tmp_path):
    rows = load_rows(write_run(tmp_path / "run", hand_rows()), warn=None)
    table = aggregate(rows)
    # the exported table (CSV, JSON) keeps its per-attack lines
    assert len(table[table["metric"] == "model-auc"]) == len(ATTACKS)
    page = build_page(rows, table, headline="ams")
    model = next(t for t in page.setups[0].details if t.metric == "model-auc")
    assert [r.label for r in model.rows] == [MODEL_LABEL]  # no attacks, no null baseline
    assert [c.text for c in model.rows[0].cells] == ["0.7000 [0.6781, 0.7219] sd 0.1414"]
    assert model.note == MODEL_NOTE and "property of the target model" in MODEL_NOTE
    legend = {m.name: m.description for m in page.metrics}
    assert "property of the target model" in legend["model-auc"]
    assert "property of the target model" not in legend["ams"]
    # the attack metric is untouched: one row per attack (ranked), then the null baseline and
    # (a rate) the least rate it resolves
    ams = page.setups[0].headline
    assert ams.note == "" and sorted(r.label for r in ams.rows if not r.null) == sorted(ATTACKS)
    assert [r.label for r in ams.rows if r.null][0] == "null baseline (held-out real images)"
    assert any("#" in c.text for r in ams.rows[:-1] for c in r.cells)


def test_a_condition_that_trains_its_own_target_gets_its_own_row(tmp_path):
    # 'random' trains on other labels: model R (0.5), not model A (0.8) of the other two attacks
    rows = [model_row(attack, 0, "A", 0.8, 0.01, model_level=True) for attack in ATTACKS[:2]]
    rows.append(model_row("random", 0, "R", 0.5, 0.01, model_level=True))
    loaded = load_rows(write_run(tmp_path / "run", rows), warn=None)
    lines = model_lines(loaded)
    assert dict(zip(lines["attack"], lines["value"], strict=True)) == {
        "target model of every other attack": 0.8, "target model of random": 0.5}
    page = build_page(loaded, aggregate(loaded))
    table = page.setups[0].headline
    assert [(r.label, [c.text for c in r.cells]) for r in table.rows] == [
        ("target model of every other attack", ["0.8000 [0.7800, 0.8200]"]),
        ("target model of random", ["0.5000 [0.4800, 0.5200]"])]
    assert table.note == f"{MODEL_NOTE} {MODEL_TARGETS}" and page.setups[0].sentences == [table.note]


def test_a_model_level_headline_says_what_it_is(tmp_path):
    rows = load_rows(write_run(tmp_path / "run", hand_rows()), warn=None)
    page = build_page(rows, aggregate(rows), headline="model-auc")
    assert page.setups[0].sentences == [MODEL_NOTE]  # one scale: no trend to tell


def test_rows_without_the_field_ask_the_installed_metric(tmp_path):
    # rows written before model_level: 'secmi' is installed with needs_model, 'ams' is not
    rows = [{**r, "metric": "secmi"} if r["metric"] == "model-auc" else r for r in hand_rows(model_level=None)]
    loaded = load_rows(write_run(tmp_path / "run", rows), warn=None)
    assert set(loaded.loc[loaded["model_level"], "metric"]) == {"secmi"}
    assert math.isclose(model_lines(loaded).iloc[0]["value"], 0.7)
    # a metric id of a table {id, name} in an older manifest resolves to its metric
    renamed = [{**r, "metric": "secmi (tpr@1%)"} if r["metric"] == "secmi" else r for r in rows]
    manifest = {"schema_version": 1, "suite": "hand", "run_id": "run-hand", "started": "2026-01-01T00:00:00+00:00",
                "finished": None, "cells": [],
                "config": {"name": "hand", "metrics": ["ams", {"id": "secmi (tpr@1%)", "name": "secmi"}]}}
    loaded = load_rows(write_run(tmp_path / "old", renamed, manifest=manifest), warn=None)
    assert set(loaded.loc[loaded["model_level"], "metric"]) == {"secmi (tpr@1%)"}


def test_markdown_and_plots_of_a_model_level_metric(tmp_path):
    write_run(tmp_path / "runs" / "run", hand_rows())
    out = tmp_path / "out"
    write_report(tmp_path / "runs", formats=["md"], out=out, headline="ams")
    text = (out / "leaderboard.md").read_text()
    section = text[text.index("<details><summary>model-auc"):]
    section = section[: section.index("</details>")]
    assert "| target model (every attack) | 0.7000 [0.6781, 0.7219] sd 0.1414 |" in section
    assert "#1" not in section and "null baseline (held-out" not in section and MODEL_NOTE in section
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    # a model-level metric does not vary with an attack's sweep: no sweep plot for it
    assert any(p.startswith("sweep-") and "ams" in p for p in plots)
    assert not any(p.startswith("sweep-") and "model-auc" in p for p in plots)
    # one scale (16): a dot chart; a target model is no attack, so no panel of differences to UnCond
    assert any(p.startswith("dots-model-auc") for p in plots) and not any("diff-model-auc" in p for p in plots)


def test_the_runner_marks_model_level_rows():
    class ModelMetric:
        description = "of the model"

        def compute_model(self, model):
            return 1.0

    class AttackMetric:
        description = "of the candidates"

    from side_bench.results.records import NULL_FIELDS

    found = [{"metric": "m", "band": None, "value": 1.0}, {"metric": "c", "band": None, "value": 0.5}]
    nulls = [{"metric": r["metric"], "band": None, **dict.fromkeys(NULL_FIELDS)} for r in found]
    from side_bench.registry import traits_of

    traits = {"m": traits_of("metrics", ModelMetric()), "c": traits_of("metrics", AttackMetric())}
    rows = cell_rows({"attack": "a"}, found, nulls, traits, {})
    assert [(r["metric"], r["model_level"]) for r in rows] == [("m", True), ("c", False)]
