"""side-bench: measure training-data memorization in diffusion models, and rank extraction attacks.

The public names are imported when first used (a module ``__getattr__``), so that
``import side_bench`` and ``side-bench --help`` do not import torch and pandas.
"""

from __future__ import annotations

from side_bench.errors import BenchError, lazy_module_attributes

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "audit": "side_bench.run.audit",
    "build_leaderboard": "side_bench.report.files",
    "write_report": "side_bench.report.files",
    "run_suite": "side_bench.run.runner",
    "score_arrays": "side_bench.run.runner",
    "load_candidates": "side_bench.results.candidates",
    "rescore_run": "side_bench.scoring.rescore",
    "verify_runs": "side_bench.scoring.verify",
    "compare_attacks": "side_bench.report.compare",
    "export_targets": "side_bench.run.targets",
}

__all__ = ["BenchError", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_module_attributes('side_bench', _LAZY, globals())

