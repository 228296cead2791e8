"""Extractors: turn a target model and a budget N_G into candidate images."""

from __future__ import annotations

from dataclasses import dataclass

from side_bench.diffusion import ddim_sample
from side_bench.errors import BenchError
from side_bench.hookspecs import hookimpl


@dataclass
class SamplingSettings:
    ddim_steps: int = 50
    batch_size: int = 256

    def validate(self, where: str) -> None:
        if self.ddim_steps < 1 or self.batch_size < 1:
            raise BenchError(f"{where}: ddim_steps and batch_size: expected positive integers")


class Sample:
    """Carlini et al.'s UnCond attack: plain DDIM sampling. On a class-conditional target,
    each sample's label is drawn uniformly over the classes from its own generator."""

    Settings = SamplingSettings

    def __init__(self, settings: SamplingSettings):
        self.settings = settings

    def extract(self, target, labelled, n, ctx):
        images, _ = ddim_sample(target, n, seed=ctx.seed, num_steps=self.settings.ddim_steps,
                                batch_size=self.settings.batch_size, device=ctx.device,
                                progress=ctx.progress)
        return images


@hookimpl
def register_extractors(register):
    register("sample", Sample, aliases=("uncond-sample",))
