"""side-bench: measure training-data memorization in diffusion models, and rank extraction attacks."""

from side_bench.errors import BenchError
from side_bench.runner import run_suite, score_arrays

__all__ = ["BenchError", "run_suite", "score_arrays"]
__version__ = "0.1.0"
