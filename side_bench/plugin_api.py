"""Everything a side-bench plugin may use, in one module: import from here and nowhere else.

    from side_bench.plugin_api import Candidates, hookimpl, rate

The contract itself (every hook, and what a registered component must and may provide) is
documented in ``side_bench.hookspecs``; this module gathers the names a plugin needs:

- ``hookimpl``: marks a plugin's ``register_*`` functions; ``added_setting(default)``: a
  ``Settings`` field that stays out of the cell's hash while it holds its default;
- the objects components exchange: ``DataSplit``, ``Labels``, ``LabelledImages``,
  ``TargetModel``, ``TargetDeclaration``, ``Candidates``, ``MetricValue``, ``RunContext``,
  ``ModelContext`` (what a model-level metric's ``compute_model`` gets);
  and the protocols a component implements: ``Dataset``, ``Model``, ``Condition``,
  ``Extractor``, ``Features``, ``Metric``, ``Ranker``, ``Executor``; and what each may declare
  about itself, with its defaults: ``DatasetTraits``, ``ModelTraits``, ``ConditionTraits``,
  ``ExtractorTraits``, ``FeaturesTraits``, ``MetricTraits``, ``RankerTraits``, ``ExecutorTraits``
  (a component declares them as attributes of its own; it never builds these);
- what a metric's ``compute(scores, band)`` gets: ``CandidateScores`` and ``Band``;
- ``BenchError``: raise it for a user's mistake (a bad setting, a target that does not fit);
  the message is shown as one line, and the cell fails naming the plugin;
- ``rate(k, n)``, ``distinct(hit_rows, hit_index, n, n_train)``, ``quantile(values, q)`` and
  ``bootstrap(value, n, statistic)``: a ``MetricValue`` with its 95% interval (Wilson for a
  rate; occupancy for distinct training images hit, never a bootstrap; order statistics for
  a quantile; a seeded percentile bootstrap for anything else), as the built-in metrics return;
  ``membership_auc(value, members, nonmembers)`` and ``membership_tpr(count, members)``: a
  membership attack's AUC with its score interval and its TPR at a fixed FPR with its
  Clopper-Pearson interval, both honest at 0 and 1 where a bootstrap gives [1, 1];
  ``ranker_auc(value, copies, others)``: a ranker's AUC for "is a copy" with the same score interval;
- ``derive_seed``, ``sample_generator``, ``initial_noise``: per-sample randomness, so sample
  ``i`` depends only on (seed, purpose, i) and never on the batch size;
- ``autocast_dtype(precision, where)``: the torch dtype of a ``precision`` setting ("fp32",
  "bf16", "fp16"), or a one-line ``BenchError`` naming ``where``: one list of precisions for
  every sampler and trainer; ``check_compile_mode(mode, where)``: a ``compile`` setting ("none",
  "graphs", "reduce-overhead": how ``ddim_sample`` runs the UNet) or a ``BenchError``;
- ``ddim_sample``: DDIM (eta = 0) from per-sample noise, with optional classifier guidance;
  with ``purpose="sample"`` (the default) it draws exactly the noise of the built-in
  ``sample`` extractor, so a third-party extractor can share noise with it;
- ``canonical_hash`` (a sha256 of JSON-able values: cache keys), ``sha256_file`` (weights
  identity), ``atomic_write`` (write a temporary file, then rename: caches survive a kill),
  ``atomic_directory`` (the same for a folder: a cached model) and ``read_json``;
- ``read_cache_entry(folder, load, kind)`` and ``write_cache_entry(folder, kind)``: a cached
  artefact as a verified entry (a manifest of its files' sha256; a damaged one is moved aside
  with one warning and ``read_cache_entry`` returns None, so the plugin rebuilds it);
  ``cache_lock(folder)`` around reading or building it, so processes sharing a run build it once;
- ``one_line`` (an exception as one short line, for messages) and ``resolve_device``
  ("auto" -> cuda when there is one);
- for an executor: ``failure_record(cell, error, traceback)``, what ``on_done`` gets for a
  cell that failed where ``run_cell`` could not catch it (a lost worker);
- the machinery the built-in plugins share, for plugins that build on it: ``train_denoiser``
  (DDPM training with EMA); the guidance classifier (``TimeConditionedResNet``,
  ``train_classifier``, ``load_or_train_classifier``, ``holdout_split``, ``accuracy_by_noise``,
  ``log_prob_gradient``, and its aligned options: ``aligned_training``, ``check_classifier_options``,
  ``tweedie_denoiser``); exact-posterior ("kernel") guidance and the guidance diagnostics
  (``KernelPosterior``, ``kernel_log_prob_gradient``, ``guidance_diagnostics``) and the page's
  summary of them (``guidance_summary``, an extractor's ``summarize_diagnostics``);
  ``ExactIndex`` (exact k-NN and range search); ``to_unit`` ([-1, 1]
  -> [0, 1]); the memorization divergence (``memorization_divergence``, ``UNetEps``,
  ``FlowLogDensity``).

Names that need torch (almost all of them) are imported when first used (a module
``__getattr__``, as in ``side_bench/__init__.py``), so importing this module is cheap; type
checkers see the real definitions through the ``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from side_bench.errors import BenchError, lazy_module_attributes, one_line, resolve_device
from side_bench.results.cache import cache_lock, read_cache_entry, write_cache_entry
from side_bench.results.diagnostics import guidance_summary
from side_bench.results.records import read_json
from side_bench.results.store import atomic_directory, atomic_write, failure_record, sha256_file

if TYPE_CHECKING:  # the real names, for type checkers and editors; imported lazily at run time
    from side_bench.hookspecs import (
        Candidates,
        Condition,
        ConditionTraits,
        Dataset,
        DatasetTraits,
        DataSplit,
        Executor,
        ExecutorTraits,
        Extractor,
        ExtractorTraits,
        Features,
        FeaturesTraits,
        LabelledImages,
        Labels,
        Metric,
        MetricTraits,
        MetricValue,
        Model,
        ModelContext,
        ModelTraits,
        ProgressCallback,
        Ranker,
        RankerTraits,
        Register,
        RunContext,
        TargetDeclaration,
        TargetModel,
        added_setting,
        hookimpl,
    )
    from side_bench.run.suite import canonical_hash
    from side_bench.sampling.classifier import (
        TimeConditionedResNet,
        accuracy_by_noise,
        aligned_training,
        check_classifier_options,
        holdout_split,
        load_or_train_classifier,
        log_prob_gradient,
        train_classifier,
        tweedie_denoiser,
    )
    from side_bench.sampling.diffusion import (
        autocast_dtype,
        check_compile_mode,
        ddim_sample,
        derive_seed,
        initial_noise,
        sample_generator,
        train_denoiser,
    )
    from side_bench.sampling.kernel_posterior import KernelPosterior, guidance_diagnostics, kernel_log_prob_gradient
    from side_bench.scoring.divergence import FlowLogDensity, UNetEps, memorization_divergence
    from side_bench.scoring.knn import ExactIndex
    from side_bench.scoring.scores import Band, CandidateScores, to_unit
    from side_bench.scoring.stats import (
        bootstrap,
        distinct,
        membership_auc,
        membership_tpr,
        quantile,
        ranker_auc,
        rate,
    )

# The public names, spelled out so that type checkers and ``from ... import *`` see them.
__all__ = [
    # the plugin mechanism
    "hookimpl", "Register", "ProgressCallback", "added_setting",
    # objects components exchange
    "DataSplit", "Labels", "LabelledImages", "TargetModel", "TargetDeclaration", "Candidates",
    "MetricValue", "RunContext", "ModelContext",
    # what components implement, and what each may declare about itself (its traits)
    "Dataset", "Model", "Condition", "Extractor", "Features", "Metric", "Ranker", "Executor",
    "DatasetTraits", "ModelTraits", "ConditionTraits", "ExtractorTraits", "FeaturesTraits", "MetricTraits",
    "RankerTraits", "ExecutorTraits",
    # what a metric's compute(scores, band) gets, and what it returns
    "CandidateScores", "Band", "rate", "distinct", "quantile", "bootstrap", "membership_auc", "membership_tpr",
    "ranker_auc",
    # per-sample randomness and sampling
    "derive_seed", "sample_generator", "initial_noise", "ddim_sample", "autocast_dtype", "check_compile_mode",
    # errors, hashes and files
    "BenchError", "one_line", "resolve_device", "canonical_hash", "sha256_file", "atomic_write", "atomic_directory",
    "read_json", "failure_record", "read_cache_entry", "write_cache_entry", "cache_lock",
    # the shared machinery: training, guidance classifiers, k-NN, the divergence
    "train_denoiser", "TimeConditionedResNet", "train_classifier", "load_or_train_classifier", "holdout_split",
    "accuracy_by_noise", "log_prob_gradient", "aligned_training", "check_classifier_options", "tweedie_denoiser",
    "KernelPosterior", "kernel_log_prob_gradient", "guidance_diagnostics", "guidance_summary",
    "ExactIndex", "to_unit", "memorization_divergence", "UNetEps",
    "FlowLogDensity",
]

# light (no torch): imported with this module
_EAGER = {"BenchError", "one_line", "resolve_device", "sha256_file", "atomic_write", "atomic_directory", "read_json",
         "failure_record", "read_cache_entry", "write_cache_entry", "cache_lock", "guidance_summary"}

# public name -> the module that defines it; each pulls torch, so each is imported on first use
_LAZY = {
    **{name: "side_bench.hookspecs" for name in __all__[: __all__.index("CandidateScores")]},
    "CandidateScores": "side_bench.scoring.scores",
    "Band": "side_bench.scoring.scores",
    "rate": "side_bench.scoring.stats",
    "bootstrap": "side_bench.scoring.stats",
    "distinct": "side_bench.scoring.stats",
    "quantile": "side_bench.scoring.stats",
    "membership_auc": "side_bench.scoring.stats",
    "membership_tpr": "side_bench.scoring.stats",
    "ranker_auc": "side_bench.scoring.stats",
    "derive_seed": "side_bench.sampling.diffusion",
    "sample_generator": "side_bench.sampling.diffusion",
    "initial_noise": "side_bench.sampling.diffusion",
    "ddim_sample": "side_bench.sampling.diffusion",
    "autocast_dtype": "side_bench.sampling.diffusion",
    "check_compile_mode": "side_bench.sampling.diffusion",
    "canonical_hash": "side_bench.run.suite",
    "train_denoiser": "side_bench.sampling.diffusion",
    **{name: "side_bench.sampling.classifier" for name in (
        "TimeConditionedResNet", "train_classifier", "load_or_train_classifier", "holdout_split", "accuracy_by_noise",
        "log_prob_gradient", "aligned_training", "check_classifier_options", "tweedie_denoiser")},
    **{name: "side_bench.sampling.kernel_posterior" for name in (
        "KernelPosterior", "kernel_log_prob_gradient", "guidance_diagnostics")},
    "ExactIndex": "side_bench.scoring.knn",
    "to_unit": "side_bench.scoring.scores",
    **{name: "side_bench.scoring.divergence" for name in ("memorization_divergence", "UNetEps", "FlowLogDensity")},
}


__getattr__, __dir__ = lazy_module_attributes('side_bench.plugin_api', _LAZY, globals())
