"""Traits (issue 30): what a component declares about itself, read once by the registry, checked
there against hookspecs' traits classes, and passed on; the core never looks them up itself."""

import pytest
from click.testing import CliRunner

from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.hookspecs import DatasetTraits, ExtractorTraits, MetricTraits, RankerTraits
from side_bench.registry import Registry, load_registry, read_traits, traits_of

WRONG_CLASS_TRAIT = '''
from side_bench.hookspecs import hookimpl

class Yes:
    uses_bands = False
    needs_model = "yes"  # a bool is expected
    def compute(self, scores, band):
        return 0.0

@hookimpl
def register_metrics(register):
    register("says-yes", Yes)
'''

WRONG_INSTANCE_TRAIT = '''
from dataclasses import dataclass
from side_bench.hookspecs import hookimpl

class Many:
    @dataclass
    class Settings:
        size: int = 10

    def __init__(self, settings):
        self.settings = settings
        self.max_scale = "many"  # an int (or None) is expected

    def load(self, scale, seed):
        raise AssertionError("never loaded")

@hookimpl
def register_datasets(register):
    register("many", Many)
'''


def test_a_wrong_class_trait_is_one_line_naming_the_plugin_and_its_distribution(entry_point_plugin):
    entry_point_plugin("says-yes-plugin", WRONG_CLASS_TRAIT)
    with pytest.raises(BenchError) as error:
        load_registry()
    assert str(error.value) == ("metric 'says-yes' of plugin 'says-yes-plugin' (distribution says-yes-plugin 0.1): "
                                "needs_model: expected bool, got 'yes' (hookspecs.MetricTraits)")
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: metric 'says-yes' of plugin 'says-yes-plugin'")
    assert "\n" not in result.stderr.strip()


def test_a_wrong_trait_set_from_the_settings_is_refused_when_the_component_is_built(entry_point_plugin):
    entry_point_plugin("many-plugin", WRONG_INSTANCE_TRAIT)
    registry = load_registry()
    assert registry.get("datasets", "many").traits == DatasetTraits()  # the class declares nothing
    with pytest.raises(BenchError, match=r"^dataset 'many' of plugin 'many-plugin' \(distribution many-plugin 0.1\): "
                                         r"max_scale: expected int \| None, got 'many'"):
        registry.build("datasets", "many", {})


def test_the_registered_class_and_the_built_component_each_have_their_traits():
    registry = load_registry()
    finextract = registry.get("extractors", "finextract")
    assert finextract.traits.threat_model == "white-box + base model"
    assert finextract.traits.planned_cost is not None
    assert registry.get("extractors", "sample").traits.threat_model == "black-box"
    assert registry.get("rankers", "base-gu").traits == RankerTraits(
        description=registry.get("rankers", "base-gu").traits.description, attacker=False, prefix_invariant=True)
    # canary-recall decides per band only with criterion "band": set in __init__, so only the
    # built component knows it; the class leaves the default
    assert registry.get("metrics", "canary-recall").traits.uses_bands is False
    by_band = registry.build("metrics", "canary-recall", {"criterion": "band"})
    by_ratio = registry.build("metrics", "canary-recall", {"criterion": "gu"})
    assert traits_of("metrics", by_band).uses_bands is True
    assert traits_of("metrics", by_ratio).uses_bands is False
    assert traits_of("metrics", by_band).needs_canaries is True


def test_traits_are_read_once_when_the_component_is_built():
    registry = load_registry()
    metric = registry.build("metrics", "ams", {})
    metric.direction = "lower"  # after the registry read it: not seen
    assert traits_of("metrics", metric).direction == "higher"


def test_defaults_hold_for_what_a_component_leaves_out_and_a_property_waits_for_the_instance():
    class Bare:
        def compute(self, scores, band):
            return 0.0

    class Computed:
        @property
        def threat_model(self):
            return "black-box"

    assert traits_of("metrics", Bare()) == MetricTraits()
    assert read_traits("extractors", Computed, "extractor 'computed'", of_class=True) == ExtractorTraits()
    assert traits_of("extractors", Computed()).threat_model == "black-box"


def test_a_trait_method_must_be_callable_and_numpy_integers_are_integers():
    import numpy as np

    class Pool:
        canary_pool = "not a method"

    class Sized:
        max_scale = np.int64(40)

    with pytest.raises(BenchError, match="canary_pool: expected a method, got 'not a method'"):
        traits_of("datasets", Pool())
    assert traits_of("datasets", Sized()).max_scale == 40


def test_the_registry_checks_a_registered_class_at_once():
    class Loud:
        threat_model = 3

    registry = Registry()
    with pytest.raises(BenchError, match=r"^extractor 'loud' of plugin 'p': threat_model: expected str \| None, got 3"):
        registry.add("extractors", "p", "loud", Loud)


LEGACY_MODEL_METRIC = '''
from side_bench.plugin_api import MetricValue, hookimpl

class TrainSize:
    """Written before compute_model: a model-level metric whose compute reads scores.model."""
    uses_bands = False
    needs_model = True
    unit = "count"
    description = "training images the target saw"

    def compute(self, scores, band):
        assert scores.model is not None and scores.n_candidates == 0 and band is None
        return MetricValue(float(len(scores.model.train)), n=len(scores.model.heldout))

@hookimpl
def register_metrics(register):
    register("train-size", TrainSize)
'''


def test_a_model_level_metric_written_before_compute_model_is_adapted_by_the_registry(entry_point_plugin):
    import torch

    from side_bench.plugin_api import ModelContext
    from side_bench.scoring.rows import NO_MODEL, metric_rows, model_metric_rows

    entry_point_plugin("train-size-plugin", LEGACY_MODEL_METRIC)
    registry = load_registry()
    assert registry.get("metrics", "train-size").traits.needs_model
    metric = registry.build("metrics", "train-size", {})
    model = ModelContext(target=None, train=torch.zeros(5, 1, 2, 2), ctx=None, heldout=torch.zeros(3, 1, 2, 2))
    row, = model_metric_rows(model, {"train-size": metric})
    assert (row["value"], row["n"], row["unit"], row["band"]) == (5.0, 3, "count", None)
    # on candidates (the null baseline, score, rescore) the core never calls it: its compute would fail
    row, = metric_rows(object(), {"train-size": metric}, [])
    assert row["value"] is None and row["reason"] == NO_MODEL


def test_compute_model_makes_a_model_level_metric_and_contradicting_it_is_refused():
    class Count:
        def compute_model(self, model):
            return float(len(model.train))

    class Contradicts(Count):
        needs_model = False

    assert read_traits("metrics", Count, "metric 'count'", of_class=True).needs_model is True
    assert traits_of("metrics", Count()).needs_model is True
    with pytest.raises(BenchError, match="metric 'no': needs_model: False, but compute_model makes a model-level"):
        read_traits("metrics", Contradicts, "metric 'no'", of_class=True)
