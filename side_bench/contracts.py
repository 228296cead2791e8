"""What the runner checks of every component's output before using it.

``hookspecs.py`` states the contract; this module enforces it, so that a plugin that breaks
it fails its cell with one line naming the plugin (and its distribution) and what was
expected, instead of a ``TypeError`` deep inside scoring or a wrong number in the rows.

``who`` in every function is how the message names the plugin, e.g.
``"extractor 'side' (distribution side-bench 0.1.0)"``; ``Registration.describe()`` makes it.

Rules, and why:

- Candidates are a ``Candidates`` or a bare ``torch.Tensor`` of shape (n, C, H, W) with a
  floating-point dtype (returned as float32). A numpy array is refused (the contract says
  torch), as are integer images.
- Exactly ``n`` candidates: fewer or more would land the rows in another leaderboard setup
  (N_G is part of what a number means).
- Values in [-1, 1], with a tolerance of ``VALUE_TOLERANCE`` (|v| <= 1.5): a sampler that does
  not clamp overshoots a little, and scoring clamps to [0, 1] anyway; images in [0, 255] (or
  anything beyond 1.5) are a convention error and are refused. Non-finite values are refused.
- ``targets``: None or an integer tensor of shape (n,) (returned as int64).
- ``diagnostics``: a table of JSON values; numpy and 0-d torch scalars become numbers, NaN and
  infinity become null (rows are strict JSON); anything else (a tensor, an object) is refused.
- A metric returns a ``MetricValue`` or a real number (wrapped as ``MetricValue(value)``). A
  string, None, a bool or an array is refused. ``MetricValue(None)`` must say why (``reason``).
  A NaN or infinite value becomes ``value = None`` with reason "not finite (nan)": a metric that
  cannot be computed is null with a reason, never a bare ``NaN`` token in rows.jsonl.
- A ranker returns (scores, threshold): n finite numbers and a finite number or None.
- A metric's ``memorized`` returns one bool per candidate (a numpy array or torch tensor of
  shape (n,)); 0/1 integers or floats are refused: a threshold left unapplied would pass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any

from side_bench.errors import BenchError

VALUE_TOLERANCE = 0.5  # candidates may overshoot [-1, 1] by this much (|v| <= 1.5)
RATE_TOLERANCE = 1e-9  # a rate may miss [0, 1] by rounding only


def _kind_of(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__name__ if module == "builtins" else f"{module.split('.')[0]}.{cls.__name__}"


# --------------------------------------------------------------------------------------------
# Strict JSON: no NaN or Infinity tokens anywhere in what is written
# --------------------------------------------------------------------------------------------


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively, in dicts, lists
    and tuples); numpy scalars become Python numbers. Other objects are left for ``default``."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, numbers.Real) and hasattr(value, "item"):  # numpy scalars
        return strict_json(value.item())
    return value


def dumps_strict(value: Any, **options) -> str:
    """``json.dumps`` that never writes NaN or Infinity (they become null first)."""
    return json.dumps(strict_json(value), allow_nan=False, **options)


def _json_value(value: Any, where: str) -> Any:
    """A strict JSON value or BenchError naming ``where`` (the key path)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d tensor or array
        return _json_value(value.item(), where)
    if isinstance(value, dict):
        checked = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BenchError(f"{where}: key {key!r} is not a string (expected a JSON table)")
            checked[key] = _json_value(item, f"{where}.{key}")
        return checked
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise BenchError(f"{where}: a {_kind_of(value)} is not JSON (expected numbers, strings, lists or tables)")


# --------------------------------------------------------------------------------------------
# Extractor output
# --------------------------------------------------------------------------------------------


def check_candidates(result: Any, n: int, image_shape: tuple, who: str):
    """The extractor's ``result`` as ``Candidates`` (float32 images, int64 targets), or
    ``BenchError`` with one line: ``"<who>: returned 29 candidates, expected 32"``."""
    import torch

    from side_bench.hookspecs import Candidates

    if isinstance(result, Candidates):
        images, targets, diagnostics = result.images, result.targets, result.diagnostics
    elif isinstance(result, torch.Tensor):
        images, targets, diagnostics = result, None, {}
    else:
        hint = " (convert it with torch.from_numpy)" if type(result).__module__.startswith("numpy") else ""
        raise BenchError(f"{who}: returned a {_kind_of(result)}{hint}; expected Candidates or a torch tensor "
                         f"(n, C, H, W) in [-1, 1]")
    if not isinstance(images, torch.Tensor):
        raise BenchError(f"{who}: Candidates.images is a {_kind_of(images)}; expected a torch tensor (n, C, H, W)")
    expected_shape = (n, *tuple(image_shape))
    if images.ndim != 4:
        raise BenchError(f"{who}: returned images of shape {tuple(images.shape)}; expected {expected_shape}")
    if images.shape[0] != n:
        raise BenchError(f"{who}: returned {images.shape[0]} candidates, expected {n}")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise BenchError(f"{who}: returned images of shape {tuple(images.shape[1:])}; expected {tuple(image_shape)} "
                         "(the target model's image shape)")
    if not images.is_floating_point():
        raise BenchError(f"{who}: returned images of dtype {images.dtype}; expected float32 in [-1, 1]")
    images = images.float()
    if n and not torch.isfinite(images).all():
        raise BenchError(f"{who}: returned non-finite images (NaN or inf)")
    if n:
        low, high = images.min().item(), images.max().item()
        if low < -1 - VALUE_TOLERANCE or high > 1 + VALUE_TOLERANCE:
            raise BenchError(f"{who}: returned values in [{low:g}, {high:g}]; expected [-1, 1] "
                             f"(|v| <= {1 + VALUE_TOLERANCE:g} tolerated)")
    if targets is not None:
        if not isinstance(targets, torch.Tensor):
            raise BenchError(f"{who}: Candidates.targets is a {_kind_of(targets)}; expected a torch int64 tensor ({n},) or None")
        if tuple(targets.shape) != (n,):
            raise BenchError(f"{who}: Candidates.targets has shape {tuple(targets.shape)}; expected ({n},)")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise BenchError(f"{who}: Candidates.targets has dtype {targets.dtype}; expected int64")
        targets = targets.long()
    if not isinstance(diagnostics, dict):
        raise BenchError(f"{who}: Candidates.diagnostics is a {_kind_of(diagnostics)}; expected a table (dict)")
    diagnostics = _json_value(diagnostics, f"{who}: diagnostics")
    return Candidates(images=images, targets=targets, diagnostics=diagnostics)


def check_diagnostics(diagnostics: Any, who: str) -> dict:
    """Diagnostics of any component (e.g. ``LabelledImages.diagnostics``) as strict JSON."""
    if not isinstance(diagnostics, dict):
        raise BenchError(f"{who}: diagnostics is a {_kind_of(diagnostics)}; expected a table (dict)")
    return _json_value(diagnostics, f"{who}: diagnostics")


# --------------------------------------------------------------------------------------------
# Metric output
# --------------------------------------------------------------------------------------------


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _optional_float(value: Any, field: str, who: str) -> float | None:
    if value is None:
        return None
    if not _real(value):
        raise BenchError(f"{who}: MetricValue.{field} is {value!r}; expected a number or None")
    number = float(value)
    return number if math.isfinite(number) else None


def _optional_count(value: Any, field: str, who: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise BenchError(f"{who}: MetricValue.{field} is {value!r}; expected an integer >= 0 or None")
    return int(value)


def _optional_text(value: Any, field: str, who: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise BenchError(f"{who}: MetricValue.{field} is {value!r}; expected a string or None")


def check_metric_value(result: Any, who: str, unit: str | None = None):
    """A metric's ``compute`` result as a ``MetricValue`` with plain, finite numbers or None.

    ``unit`` (the metric's declared unit) adds a range check: a "rate" must lie in [0, 1].
    """
    from side_bench.hookspecs import MetricValue

    if isinstance(result, MetricValue):
        value = result
    elif _real(result):
        value = MetricValue(value=float(result))
    else:
        shown = repr(result) if isinstance(result, (str, type(None))) else f"a {_kind_of(result)}"
        raise BenchError(f"{who}: returned {shown[:80]}; expected a number or MetricValue "
                         "(MetricValue(None, reason=...) when it cannot be computed)")
    reason = _optional_text(value.reason, "reason", who)
    number = value.value
    if number is not None and not _real(number):
        raise BenchError(f"{who}: MetricValue.value is {number!r}; expected a number or None")
    if number is not None:
        number = float(number)
        if not math.isfinite(number):
            reason = f"not finite ({number})" + (f": {reason}" if reason else "")
            number = None
    if number is None and not reason:
        raise BenchError(f"{who}: returned no value and no reason; expected MetricValue(None, reason='why')")
    if number is not None and unit == "rate" and not -RATE_TOLERANCE <= number <= 1 + RATE_TOLERANCE:
        raise BenchError(f"{who}: returned the rate {number!r}; expected a fraction in [0, 1]")
    count = _optional_count(value.count, "count", who)
    total = _optional_count(value.n, "n", who)
    # A rate is k of n; other counts (UMS: distinct training images, / N_G) may exceed n.
    if unit == "rate" and count is not None and total is not None and count > total:
        raise BenchError(f"{who}: MetricValue.count {count} is larger than n {total}")
    checked = dataclasses.replace(
        value, value=number, count=count, n=total, reason=reason,
        ci_low=_optional_float(value.ci_low, "ci_low", who), ci_high=_optional_float(value.ci_high, "ci_high", who),
        se=_optional_float(value.se, "se", who), interval=_optional_text(value.interval, "interval", who),
    )
    return checked


def check_ranking(result, n: int, who: str):
    """A ranker's (scores, threshold) as (float64 ndarray of n finite scores, a float or None)."""
    import numpy as np
    import torch

    if not isinstance(result, tuple) or len(result) != 2:
        raise BenchError(f"{who}: returned {type(result).__name__}; expected (scores, threshold)")
    values, threshold = result
    values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise BenchError(f"{who}: returned scores of shape {values.shape}; expected {n} finite numbers")
    if threshold is not None and not (isinstance(threshold, (int, float)) and np.isfinite(threshold)):
        raise BenchError(f"{who}: returned the threshold {threshold!r}; expected a finite number or None")
    return values.astype(np.float64), None if threshold is None else float(threshold)


def check_memorized(result, n: int, who: str):
    """A metric's ``memorized(scores, band)`` as a numpy bool array of shape (n,)."""
    import numpy as np

    if hasattr(result, "detach"):  # a torch tensor
        result = result.detach().cpu().numpy()
    if not isinstance(result, np.ndarray):
        raise BenchError(f"{who}: memorized returned a {_kind_of(result)}; expected a bool array of shape ({n},)")
    if result.shape != (n,) or result.dtype != np.bool_:
        raise BenchError(f"{who}: memorized returned an array of shape {result.shape} and dtype {result.dtype}; "
                         f"expected bool of shape ({n},)")
    return result
