"""Registers the ``copy-rate`` metric through side-bench's hook ``register_metrics``."""

from dataclasses import dataclass

import numpy as np

from side_bench.hookspecs import hookimpl


class CopyRate:
    """Share of candidates whose best similarity is >= ``threshold`` (a copy)."""

    uses_bands = False

    @dataclass
    class Settings:
        threshold: float = 0.95

    def __init__(self, settings: "CopyRate.Settings"):
        self.settings = settings

    def compute(self, scores, band) -> float:
        return float(np.mean(scores.best_similarity >= self.settings.threshold))


@hookimpl
def register_metrics(register):
    register("copy-rate", CopyRate)
