"""A metric's copy criterion (``memorized``), checked by hand, and ``compare`` asking for it by name."""

import numpy as np
import pytest
import torch

from side_bench.contracts import check_memorized
from side_bench.errors import BenchError
from side_bench.registry import load_registry
from side_bench.report.compare import copy_rule
from side_bench.scoring.scores import Band, CandidateScores


def scores_of(best, d1, d2, knn_mean, n_train=60, knn=50):
    n = len(best)
    empty = np.empty(0, dtype=np.int64)
    return CandidateScores(
        best_similarity=np.array(best, np.float32), nearest_index=np.arange(n), second_similarity=np.zeros(n),
        pixel_d1=np.array(d1, np.float32), pixel_d2=np.array(d2, np.float32),
        pixel_knn_mean=np.array(knn_mean, np.float32), knn_neighbours=knn, hit_rows=empty, hit_index=empty,
        hit_similarity=np.empty(0, np.float32), hits_floor=0.9, hits_truncated=0, n_train=n_train,
        sample_index=np.arange(n))


# candidate:        0      1      2      3
BEST = [0.97, 0.96, 0.94, 0.5]  # AMS high [0.95, 1]: 0 and 1
D1 = [0.0, 0.125, 0.1, 0.3]  # Gu: 0 is a copy; 0.125 / 0.375 = 1/3 is not; 0.1 / 0.4 = 1/4 is; 0.3 / 0.4 not
D2 = [0.0, 0.375, 0.4, 0.4]
KNN = [0.5, 0.5, 0.2, 2.0]  # Carlini, alpha 0.5: l = d1 / (0.5 knn) = 0, 0.5, 1.0, 0.3 -> < 0.5: 0 and 3


def build(name, settings=None):
    return load_registry().build("metrics", name, settings or {})


def test_each_builtin_criterion_by_hand_and_its_rate_counts_it():
    scores = scores_of(BEST, D1, D2, KNN)
    high = Band("high", 0.95, 1.0)
    expected = {"ams": [True, True, False, False], "gu-ratio": [True, False, True, False],
                "carlini-l2": [True, False, False, True]}
    for name, copies in expected.items():
        metric = build(name)
        band = high if metric.uses_bands else None
        mask = check_memorized(metric.memorized(scores, band), 4, name)
        assert mask.tolist() == copies, name
        value = metric.compute(scores, band)
        assert (value.count, value.n) == (sum(copies), 4), name  # the metric's rate is its criterion's count
    # delta is a setting: at 0.25 only l = 0 passes
    assert build("carlini-l2", {"delta": 0.25}).memorized(scores, None).tolist() == [True, False, False, False]


def test_a_criterion_that_cannot_decide_says_why():
    few = scores_of(BEST, D1, D2, KNN, n_train=20, knn=20)
    with pytest.raises(BenchError, match="carlini-l2.*needs the 50 nearest training images; 20 were kept"):
        build("carlini-l2").memorized(few, None)
    assert build("carlini-l2").compute(few, None).value is None


def test_the_contract_takes_one_bool_per_candidate():
    assert check_memorized(torch.tensor([True, False]), 2, "m").tolist() == [True, False]
    with pytest.raises(BenchError, match="metric 'm': memorized returned an array of shape \\(2,\\) and dtype float"):
        check_memorized(np.array([1.0, 0.0]), 2, "metric 'm'")  # 0/1 scores: a threshold left unapplied
    with pytest.raises(BenchError, match="shape \\(3,\\).*expected bool of shape \\(2,\\)"):
        check_memorized(np.zeros(3, bool), 2, "m")
    with pytest.raises(BenchError, match="returned a list"):
        check_memorized([True, False], 2, "m")


ROWS = [{"metric": "ams", "band": "high", "band_low": 0.95, "band_high": 1.0, "metric_settings": {}},
        {"metric": "carlini-l2", "band": None, "band_low": None, "band_high": None,
         "metric_settings": {"alpha": 0.5, "delta": 0.3, "neighbours": 50}}]


def test_compare_asks_the_metric_named_by_by_with_the_runs_settings():
    rule = copy_rule("carlini", "high", ROWS)  # an alias; the settings the run computed it with
    assert rule.build().settings.delta == 0.3 and rule.band is None
    assert rule.label == "carlini-l2 (alpha=0.5, delta=0.3, neighbours=50)"
    rule = copy_rule("band", "high", ROWS)  # compare's old name for AMS's criterion
    assert rule.band == Band("high", 0.95, 1.0) and rule.label == "ams in band high [0.95, 1.0]"
    assert copy_rule("gu", "high", ROWS).label == "gu-ratio"  # not in the run: its defaults, no band needed


def test_compare_refuses_a_metric_without_a_criterion_in_one_line():
    with pytest.raises(BenchError) as error:
        copy_rule("p95", "high", ROWS)
    message = str(error.value)
    assert "\n" not in message and "metric 'p95' has no copy criterion" in message
    assert "metrics with one: ams, canary-recall, carlini-l2, gu-ratio, non-canary-rate" in message
    with pytest.raises(BenchError, match="--by: unknown metric 'gu-rat'.*did you mean 'gu-ratio'"):
        copy_rule("gu-rat", "high", ROWS)
    with pytest.raises(BenchError, match="--band: 'mid' is not a band of this run \\(found: high\\)"):
        copy_rule("ams", "mid", ROWS)


SECOND_DEFAULT = '''
import numpy as np
from side_bench.plugin_api import hookimpl, rate

class Exact:
    uses_bands = False
    unit = "rate"
    default_copy_criterion = True

    def compute(self, scores, band):
        return rate(int(self.memorized(scores, band).sum()), scores.n_candidates)

    def memorized(self, scores, band):
        return np.asarray(scores.best_similarity) >= 1.0

@hookimpl
def register_metrics(register):
    register("exact-copy", Exact)
'''


def test_compare_without_by_asks_the_metric_that_declares_itself_the_default(entry_point_plugin):
    from side_bench.report.compare import default_copy_criterion

    assert default_copy_criterion(load_registry()) == "ams"  # AMS declares default_copy_criterion
    assert copy_rule(None, "high", ROWS).label == "ams in band high [0.95, 1.0]"
    entry_point_plugin("exact-copy-plugin", SECOND_DEFAULT)
    with pytest.raises(BenchError, match=r"^--by: no default copy criterion \(2 installed metrics declare it "
                                         r"\(ams, exact-copy\);.*name one with --by \(ams, "):
        copy_rule(None, "high", ROWS)
    assert copy_rule("exact-copy", "high", ROWS).label == "exact-copy"


def test_a_default_copy_criterion_without_memorized_is_refused_naming_the_plugin():
    from side_bench.registry import Registry

    class Boasts:
        default_copy_criterion = True  # but no memorized

        def compute(self, scores, band):
            return 0.0

    with pytest.raises(BenchError, match="^metric 'boasts' of plugin 'p': default_copy_criterion: True, but it has "
                                         "no memorized"):
        Registry().add("metrics", "p", "boasts", Boasts)
