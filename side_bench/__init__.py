"""side-bench: measure training-data memorization in diffusion models, and rank extraction attacks."""

from side_bench.errors import BenchError
from side_bench.leaderboard import build_leaderboard
from side_bench.report import write_report
from side_bench.runner import run_suite, score_arrays

__all__ = ["BenchError", "build_leaderboard", "run_suite", "score_arrays", "write_report"]
__version__ = "0.1.0"
