"""Suite keys that reach the rows: metric settings (and ids), rankers, sweeps as fields."""

import pytest

from side_bench import BenchError, run_suite
from side_bench.registry import load_registry
from side_bench.results.candidates import load_candidates
from side_bench.run.suite import load_suite

METRICS = '''metrics = ["ams", "gu-ratio", {{ name = "carlini-l2", neighbours = 16 }},
           {{ name = "carlini-l2", id = "carlini-default" }},
           {{ name = "precision-at-k", id = "precision-at-4", ranker = "clique", k = 4 }}, "ranker-auc"]
rankers = [{{ name = "clique", distance = 0.1 }}]'''


def test_metric_settings_ids_rankers_and_sweeps_reach_the_rows(write_suite, tmp_path):
    suite = write_suite(
        extra='''
        [[attacks]]
        name = "swept"
        condition = "none"
        extractor = "sample"
        extractor_settings = { batch_size = 5 }
        sweep = { "extractor.ddim_steps" = [2, 3] }
        ''',
        replace={'metrics = ["ams", "ums", "p95", "gu-ratio"]': METRICS.format(), "scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    by_metric = {m: part for m, part in rows[rows.attack == "uncond"].groupby("metric")}
    # carlini with the 16 nearest (all 16 training images kept) has a value; the default (50) says why not
    assert by_metric["carlini-l2"]["value"].notna().all()
    assert by_metric["carlini-l2"]["metric_settings"].iloc[0]["neighbours"] == 16
    default = by_metric["carlini-default"].iloc[0]
    assert default["value"] is None or default["value"] != default["value"]
    assert "needs the 50 nearest" in default["reason"]
    precision = by_metric["precision-at-4"].iloc[0]
    assert precision["n"] == 4 and 0 <= precision["count"] <= 4
    records = load_candidates(tmp_path / "r", attack="uncond")
    assert "rank_clique" in records and (records["rank_clique"] >= 1).all()  # a clique counts itself
    swept = rows[rows.attack_base == "swept"].drop_duplicates("attack")
    assert sorted(swept["attack"]) == ["swept[ddim_steps=2]", "swept[ddim_steps=3]"]
    assert sorted(s["extractor.ddim_steps"] for s in swept["swept"]) == [2, 3]


@pytest.mark.parametrize("replace, message", [
    ({'metrics = ["ams", "ums", "p95", "gu-ratio"]': 'metrics = ["ams"]\nrankers = ["clik"]'},
     "unknown ranker 'clik'"),
    ({'metrics = ["ams", "ums", "p95", "gu-ratio"]': 'metrics = ["ams", { name = "carlini-l2", delta = "x" }]'},
     "metrics.carlini-l2"),
    ({'metrics = ["ams", "ums", "p95", "gu-ratio"]': 'metrics = ["ams", { name = "ams", id = "ams" }]'},
     "listed twice"),
])
def test_bad_metric_tables_and_rankers_are_refused(write_suite, replace, message):
    with pytest.raises(BenchError, match=message):
        load_suite(str(write_suite(replace=replace)), load_registry())


def test_model_level_metric_once_per_model_with_its_training_labels(write_suite, tmp_path):
    suite = write_suite(
        extra='''
        [[attacks]]
        name = "random-model"
        condition = "random"
        extractor = "sample"
        condition_settings = { classes = 3 }
        extractor_settings = { ddim_steps = 2, batch_size = 5 }
        ''',
        replace={'metrics = ["ams", "ums", "p95", "gu-ratio"]':
                 'metrics = ["ams", { name = "memorization-divergence", draws = 8, ode_steps = 4 }]',
                 "scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    divergence = rows[rows.metric == "memorization-divergence"].set_index("attack")
    for attack in ("uncond", "random-model"):  # the conditional model is measured with its own (random) labels
        line = divergence.loc[attack]
        assert line["value"] > 0 and line["se"] > 0 and line["n"] == 8 and line["direction"] == "lower"
        assert line["null_value"] is None or line["null_value"] != line["null_value"]  # no model for held-out images
    assert divergence.loc["uncond", "value"] != divergence.loc["random-model", "value"]
