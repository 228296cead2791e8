"""Everything a side-bench plugin may use, in one module: import from here and nowhere else.

    from side_bench.plugin_api import Candidates, hookimpl, rate

The contract itself (every hook, and what a registered component must and may provide) is
documented in ``side_bench.hookspecs``; this module gathers the names a plugin needs:

- ``hookimpl``: marks a plugin's ``register_*`` functions;
- the objects components exchange: ``DataSplit``, ``Labels``, ``LabelledImages``,
  ``TargetModel``, ``TargetDeclaration``, ``Candidates``, ``MetricValue``, ``RunContext``;
  and the protocols a component implements: ``Dataset``, ``Model``, ``Condition``,
  ``Extractor``, ``Features``, ``Metric``, ``Ranker``, ``Executor``;
- what a metric's ``compute(scores, band)`` gets: ``CandidateScores`` and ``Band``;
- ``BenchError``: raise it for a user's mistake (a bad setting, a target that does not fit);
  the message is shown as one line, and the cell fails naming the plugin;
- ``rate(k, n)`` and ``bootstrap(value, n, statistic)``: a ``MetricValue`` with a Wilson or a
  seeded percentile-bootstrap 95% interval, as the built-in metrics return;
- ``derive_seed``, ``sample_generator``, ``initial_noise``: per-sample randomness, so sample
  ``i`` depends only on (seed, purpose, i) and never on the batch size;
- ``ddim_sample``: DDIM (eta = 0) from per-sample noise, with optional classifier guidance;
  with ``purpose="sample"`` (the default) it draws exactly the noise of the built-in
  ``sample`` extractor, so a third-party extractor can share noise with it;
- ``canonical_hash`` (a sha256 of JSON-able values: cache keys), ``sha256_file`` (weights
  identity) and ``atomic_write`` (write a temporary file, then rename: caches survive a kill).

Names that need torch (almost all of them) are imported when first used (a module
``__getattr__``, as in ``side_bench/__init__.py``), so importing this module is cheap; type
checkers see the real definitions through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from side_bench.errors import BenchError, lazy_module_attributes
from side_bench.results.store import atomic_write, sha256_file

if TYPE_CHECKING:  # the real names, for type checkers and editors; imported lazily at run time
    from side_bench.hookspecs import (
        Candidates,
        Condition,
        Dataset,
        DataSplit,
        Executor,
        Extractor,
        Features,
        LabelledImages,
        Labels,
        Metric,
        MetricValue,
        Model,
        ProgressCallback,
        Ranker,
        Register,
        RunContext,
        TargetDeclaration,
        TargetModel,
        hookimpl,
    )
    from side_bench.run.suite import canonical_hash
    from side_bench.sampling.diffusion import ddim_sample, derive_seed, initial_noise, sample_generator
    from side_bench.scoring.scores import Band, CandidateScores
    from side_bench.scoring.stats import bootstrap, rate

# The public names, spelled out so that type checkers and ``from ... import *`` see them.
__all__ = [
    # the plugin mechanism
    "hookimpl", "Register", "ProgressCallback",
    # objects components exchange
    "DataSplit", "Labels", "LabelledImages", "TargetModel", "TargetDeclaration", "Candidates",
    "MetricValue", "RunContext",
    # what components implement
    "Dataset", "Model", "Condition", "Extractor", "Features", "Metric", "Ranker", "Executor",
    # what a metric's compute(scores, band) gets, and what it returns
    "CandidateScores", "Band", "rate", "bootstrap",
    # per-sample randomness and sampling
    "derive_seed", "sample_generator", "initial_noise", "ddim_sample",
    # errors, hashes and files
    "BenchError", "canonical_hash", "sha256_file", "atomic_write",
]

# public name -> the module that defines it; each pulls torch, so each is imported on first use
_LAZY = {
    **{name: "side_bench.hookspecs" for name in __all__[: __all__.index("CandidateScores")]},
    "CandidateScores": "side_bench.scoring.scores",
    "Band": "side_bench.scoring.scores",
    "rate": "side_bench.scoring.stats",
    "bootstrap": "side_bench.scoring.stats",
    "derive_seed": "side_bench.sampling.diffusion",
    "sample_generator": "side_bench.sampling.diffusion",
    "initial_noise": "side_bench.sampling.diffusion",
    "ddim_sample": "side_bench.sampling.diffusion",
    "canonical_hash": "side_bench.run.suite",
}


__getattr__, __dir__ = lazy_module_attributes('side_bench.plugin_api', _LAZY, globals())
