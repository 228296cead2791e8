"""contracts.py: what the runner checks of every extractor's and metric's output."""

import json
import math

import numpy as np
import pytest
import torch

from side_bench.contracts import check_candidates, check_diagnostics, check_metric_value, dumps_strict, strict_json
from side_bench.errors import BenchError
from side_bench.hookspecs import Candidates, MetricValue

WHO = "extractor 'x' (distribution foo 0.2.0)"
SHAPE = (1, 8, 8)


def images(n=4, low=-1.0, high=1.0):
    return torch.linspace(low, high, n * 64).reshape(n, *SHAPE)


def refused(call, *fragments):
    with pytest.raises(BenchError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_bare_tensor_is_wrapped_as_candidates():
    result = check_candidates(images(), 4, SHAPE, WHO)
    assert isinstance(result, Candidates) and result.targets is None and result.diagnostics == {}
    assert result.images.dtype == torch.float32


def test_candidates_pass_with_targets_and_diagnostics_made_plain():
    given = Candidates(images(), targets=torch.tensor([0, 1, 2, 3], dtype=torch.int32),
                       diagnostics={"accuracy": np.float32(0.5), "per_band": [1, float("nan")], "n": torch.tensor(3)})
    result = check_candidates(given, 4, SHAPE, WHO)
    assert result.targets.dtype == torch.int64
    assert result.diagnostics == {"accuracy": 0.5, "per_band": [1, None], "n": 3}
    json.dumps(result.diagnostics, allow_nan=False)


def test_too_few_candidates_are_refused_naming_the_plugin():
    message = refused(lambda: check_candidates(images(3), 4, SHAPE, WHO), "returned 3 candidates, expected 4")
    assert message.startswith(WHO)


def test_a_numpy_array_is_refused_naming_the_plugin():
    refused(lambda: check_candidates(images().numpy(), 4, SHAPE, WHO), WHO, "numpy.ndarray", "torch")


def test_images_in_0_255_are_refused():
    refused(lambda: check_candidates(images(low=0, high=255), 4, SHAPE, WHO), "expected [-1, 1]")


def test_a_small_overshoot_is_tolerated():
    check_candidates(images(low=-1.2, high=1.3), 4, SHAPE, WHO)


def test_wrong_image_shape_and_integer_dtype_are_refused():
    refused(lambda: check_candidates(torch.zeros(4, 3, 8, 8), 4, SHAPE, WHO), "(3, 8, 8)", "expected (1, 8, 8)")
    refused(lambda: check_candidates(torch.zeros(4, 64), 4, SHAPE, WHO), "shape (4, 64)")
    refused(lambda: check_candidates(torch.zeros(4, *SHAPE, dtype=torch.uint8), 4, SHAPE, WHO), "torch.uint8")


def test_non_finite_candidates_are_refused():
    bad = images()
    bad[1, 0, 0, 0] = float("inf")
    refused(lambda: check_candidates(bad, 4, SHAPE, WHO), "non-finite")


def test_bad_targets_are_refused():
    refused(lambda: check_candidates(Candidates(images(), targets=torch.zeros(3, dtype=torch.long)), 4, SHAPE, WHO),
            "targets has shape (3,)", "expected (4,)")
    refused(lambda: check_candidates(Candidates(images(), targets=torch.zeros(4)), 4, SHAPE, WHO), "int64")
    refused(lambda: check_candidates(Candidates(images(), targets=[0, 1, 2, 3]), 4, SHAPE, WHO), "targets is a list")


def test_diagnostics_that_are_not_json_are_refused_with_their_key():
    refused(lambda: check_candidates(Candidates(images(), diagnostics={"probs": torch.zeros(3)}), 4, SHAPE, WHO),
            "diagnostics.probs", "torch.Tensor")
    refused(lambda: check_diagnostics({"a": {"b": object()}}, "condition 'c'"), "diagnostics.a.b")
    refused(lambda: check_diagnostics([1], "condition 'c'"), "expected a table")


def test_a_float_metric_result_is_wrapped():
    assert check_metric_value(0.25, "metric 'm'") == MetricValue(0.25)
    assert check_metric_value(np.float32(0.5), "metric 'm'").value == 0.5
    assert check_metric_value(3, "metric 'm'").value == 3.0


def test_a_string_from_a_metric_is_refused_naming_the_metric():
    refused(lambda: check_metric_value("high", "metric 'm' (distribution foo 0.2.0)"),
            "metric 'm' (distribution foo 0.2.0): returned 'high'", "expected a number or MetricValue")
    refused(lambda: check_metric_value(True, "metric 'm'"), "returned a bool")
    refused(lambda: check_metric_value(np.zeros(3), "metric 'm'"), "numpy.ndarray")


def test_none_without_a_reason_is_refused():
    refused(lambda: check_metric_value(None, "metric 'm'"), "returned None")
    refused(lambda: check_metric_value(MetricValue(None), "metric 'm'"), "no value and no reason")
    kept = check_metric_value(MetricValue(None, reason="needs 2 training images"), "metric 'm'")
    assert kept.value is None and kept.reason == "needs 2 training images"


def test_nan_and_inf_become_null_with_a_reason():
    for bad in (float("nan"), float("inf"), MetricValue(float("-inf"), count=1, n=4)):
        checked = check_metric_value(bad, "metric 'm'")
        assert checked.value is None and checked.reason.startswith("not finite")


def test_metric_value_fields_are_checked():
    refused(lambda: check_metric_value(MetricValue(0.5, count=5, n=4), "metric 'm'", unit="rate"),
            "count 5 is larger than n 4")
    assert check_metric_value(MetricValue(1.25, count=5, n=4), "metric 'ums'", unit="fraction").count == 5
    refused(lambda: check_metric_value(MetricValue(0.5, count=-1), "metric 'm'"), "count")
    refused(lambda: check_metric_value(MetricValue("0.5"), "metric 'm'"), "MetricValue.value")
    assert check_metric_value(MetricValue(0.5, ci_low=float("nan"), ci_high=0.7), "m").ci_low is None


def test_a_rate_outside_0_1_is_refused():
    refused(lambda: check_metric_value(7.5, "metric 'ams'", unit="rate"), "rate 7.5", "[0, 1]")
    assert check_metric_value(7.5, "metric 'ratio'", unit="ratio").value == 7.5


def test_strict_json_writes_null_not_nan():
    value = {"a": float("nan"), "b": [float("inf"), 1.0, np.float64("nan")], "c": (np.int64(3),)}
    assert strict_json(value) == {"a": None, "b": [None, 1.0, None], "c": [3]}
    text = dumps_strict(value)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["c"] == [3]
    assert math.isnan(float("nan"))  # the input is untouched


def _no_constants(token):
    raise AssertionError(f"non-strict JSON token {token}")


def test_rows_jsonl_and_cell_files_are_strict_json(tmp_path):
    from side_bench.results.store import RunStore

    store = RunStore(tmp_path / "run")
    row = {"scale": 16, "attack": "a", "seed": 0, "metric": "gu-ratio", "band": None,
           "value": float("nan"), "null_value": float("inf")}
    store.write_cell({"config_hash": "abc", "status": "done", "rows": [row], "seconds": float("nan")})
    for path in (store.run_dir / "rows.jsonl", store.cells_dir / "abc.json"):
        text = path.read_text()
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text.splitlines()[0] if path.suffix == ".jsonl" else text, parse_constant=_no_constants)
    assert store.rows()[0]["value"] is None
