"""side-bench: measure training-data memorization in diffusion models, and rank extraction attacks.

The public names are imported when first used (a module ``__getattr__``), so that
``import side_bench`` and ``side-bench --help`` do not import torch and pandas.
"""

from __future__ import annotations

import importlib

from side_bench.errors import BenchError

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "build_leaderboard": "side_bench.leaderboard",
    "write_report": "side_bench.report",
    "run_suite": "side_bench.runner",
    "score_arrays": "side_bench.runner",
    "load_candidates": "side_bench.candidates",
    "rescore_run": "side_bench.rescore",
    "compare_attacks": "side_bench.compare",
}

__all__ = ["BenchError", *sorted(_LAZY)]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'side_bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

