"""Extractors: turn a target model and a budget N_G into candidate images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from side_bench.classifier import (
    TimeConditionedResNet,
    load_or_train_classifier,
    log_prob_gradient,
    train_classifier,
)
from side_bench.diffusion import ddim_sample, sample_generator
from side_bench.errors import BenchError
from side_bench.hookspecs import hookimpl
from side_bench.suite import canonical_hash

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SamplingSettings:
    ddim_steps: int = 50
    batch_size: int = 256
    precision: str = "fp32"  # UNet forward in fp32, bf16 or fp16 (autocast); guidance stays fp32

    def validate(self, where: str) -> None:
        if self.ddim_steps < 1 or self.batch_size < 1:
            raise BenchError(f"{where}: ddim_steps and batch_size: expected positive integers")
        if self.precision not in PRECISIONS:
            raise BenchError(f"{where}: precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")


class Sample:
    """Carlini et al.'s UnCond attack: plain DDIM sampling. On a class-conditional target,
    each sample's label is drawn uniformly over the classes from its own generator."""

    Settings = SamplingSettings

    def __init__(self, settings: SamplingSettings):
        self.settings = settings

    def extract(self, target, labelled, n, ctx):
        images, _ = ddim_sample(target, n, seed=ctx.seed, num_steps=self.settings.ddim_steps,
                                batch_size=self.settings.batch_size, device=ctx.device,
                                dtype=PRECISIONS[self.settings.precision], progress=ctx.progress)
        return images


@dataclass
class GuidanceSettings(SamplingSettings):
    guidance_scale: float = 1.0  # lambda
    classifier_width: int = 32
    classifier_stages: int = 3
    classifier_epochs: int = 30
    classifier_batch_size: int = 128
    classifier_learning_rate: float = 1e-3

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.guidance_scale < 0:
            raise BenchError(f"{where}: guidance_scale: expected lambda >= 0, got {self.guidance_scale}")
        if min(self.classifier_width, self.classifier_stages, self.classifier_epochs, self.classifier_batch_size) < 1:
            raise BenchError(f"{where}: classifier_*: expected positive integers")


class ClassifierGuided:
    """DDIM with eps <- eps - lambda * sqrt(1 - alphabar_t) * grad_x log p(c | x_t, t), c drawn
    uniformly per sample. The classifier is trained on the condition's labelled images and
    cached by its config hash (so a lambda sweep trains it once)."""

    Settings = GuidanceSettings
    noise_aware = True
    name = ""

    def __init__(self, settings: GuidanceSettings):
        self.settings = settings

    def classifier(self, target, labelled, ctx) -> TimeConditionedResNet:
        s = self.settings
        architecture = dict(in_channels=target.image_shape[0], num_classes=labelled.num_classes,
                            width=s.classifier_width, stages=s.classifier_stages, noise_aware=self.noise_aware)
        training = dict(epochs=s.classifier_epochs, batch_size=s.classifier_batch_size,
                        learning_rate=s.classifier_learning_rate)
        key = canonical_hash({"architecture": architecture, "training": training, "labelled": labelled.identity,
                              "target": target.identity, "seed": ctx.seed, "device": ctx.device.type})

        def build():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                return TimeConditionedResNet(**architecture)

        def train(classifier):
            return train_classifier(classifier, labelled.images, labelled.labels, target.scheduler_config,
                                    seed=ctx.seed, device=ctx.device, progress=ctx.progress, **training)

        return load_or_train_classifier(ctx.cache_dir / "classifiers" / key, build, train).to(ctx.device).eval()

    def extract(self, target, labelled, n, ctx):
        if labelled is None:
            raise BenchError(f"extractor {self.name!r} needs a condition that gives labelled images "
                             f"(informative, random, unique or surrogate), not 'none'")
        s = self.settings
        # c for sample i comes from its own generator, apart from its noise: with lambda = 0
        # the images equal plain sampling's exactly.
        labels = torch.tensor([int(torch.randint(labelled.num_classes, (1,), generator=sample_generator(ctx.seed, "guidance-class", i)))
                               for i in range(n)], dtype=torch.long)
        guidance = None
        if s.guidance_scale != 0:
            guidance = log_prob_gradient(self.classifier(target, labelled, ctx))
        # A class-conditional target is given the same class as the classifier.
        if target.num_classes and target.num_classes != labelled.num_classes:
            raise BenchError(f"extractor {self.name!r}: the target has {target.num_classes} classes, "
                             f"the labelled images {labelled.num_classes}")
        images, _ = ddim_sample(target, n, seed=ctx.seed, num_steps=s.ddim_steps, batch_size=s.batch_size,
                                device=ctx.device, class_labels=labels,
                                guidance=guidance, guidance_scale=s.guidance_scale,
                                dtype=PRECISIONS[s.precision], progress=ctx.progress)
        return images


class Side(ClassifierGuided):
    """``side``: guidance by a time-dependent classifier p(c | x_t, t) trained on noised images."""

    noise_aware = True
    name = "side"


class ClassifierGuidance(ClassifierGuided):
    """``classifier-guidance`` (Carlini Cond): an ordinary classifier trained on clean images."""

    noise_aware = False
    name = "classifier-guidance"


@hookimpl
def register_extractors(register):
    register("sample", Sample, aliases=("uncond-sample",))
    register("side", Side)
    register("classifier-guidance", ClassifierGuidance, aliases=("cond",))
