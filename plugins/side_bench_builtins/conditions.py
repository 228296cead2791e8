"""Conditions: the conditioning signal an attack uses (method.md section 2)."""

from __future__ import annotations

from side_bench.hookspecs import hookimpl


class NoCondition:
    """``none``: an unconditional target and no labels for the extractor."""

    def training_labels(self, data, seed):
        return None

    def training_key(self):
        return None

    def attack_labels(self, target, data, ctx):
        return None


@hookimpl
def register_conditions(register):
    register("none", NoCondition, aliases=("uncond",))
