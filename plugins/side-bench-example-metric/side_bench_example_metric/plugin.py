"""Registers the ``copy-rate`` metric through side-bench's hook ``register_metrics``.

Written against ``side_bench.plugin_api`` alone: the one module a plugin imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from side_bench.plugin_api import Band, BenchError, CandidateScores, MetricValue, hookimpl, rate


class CopyRate:
    """Share of candidates whose best similarity is >= ``threshold`` (a copy), with a Wilson interval."""

    # What the metric is; the runner writes these into every row and the leaderboard reads them.
    uses_bands = False  # one value per cell, not one per similarity band
    direction = "higher"  # more copies = more memorization
    unit = "rate"  # k of n in [0, 1], shown in percent
    description = "share of candidates at or above a copy threshold of best similarity"

    @dataclass
    class Settings:  # checked like any component's settings (metrics are built with the defaults today)
        threshold: float = 0.95

        def validate(self, where: str) -> None:
            if not -1.0 <= self.threshold <= 1.0:
                raise BenchError(f"{where}: threshold: expected a similarity in [-1, 1], got {self.threshold}")

    def __init__(self, settings: CopyRate.Settings):
        self.settings = settings  # its full contents enter the cell's hash and every row

    def compute(self, scores: CandidateScores, band: Band | None) -> MetricValue:
        copies = int((scores.best_similarity >= self.settings.threshold).sum())
        return rate(copies, scores.n_candidates)


@hookimpl
def register_metrics(register):
    register("copy-rate", CopyRate)
