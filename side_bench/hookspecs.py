"""The plugin contract of side-bench: every hook, and what a registered component must provide.

A plugin is a module (or object) with functions marked ``@hookimpl``. It is found through
the entry-point group ``side_bench``, exactly like the built-ins in ``plugins/``::

    # pyproject.toml of a third-party package
    [project.entry-points.side_bench]
    my-metric = "my_package.plugin"

    # my_package/plugin.py
    from side_bench.hookspecs import hookimpl

    @hookimpl
    def register_metrics(register):
        register("my-metric", MyMetric, aliases=("mm",))

Every ``register_*`` hook receives one callable, ``register(name, component, aliases=())``.
``component`` is a class (or any callable) that the core calls with the validated settings of
the suite table that names it:

- if the class has a nested dataclass ``Settings``, the suite's table for it is checked
  against the dataclass fields (unknown keys, missing keys and wrong types are reported with
  the suite file and key) and the component is built as ``component(settings)``;
- otherwise the table must be empty and the component is built as ``component()``.

What a component may declare about itself (a metric's ``direction``, an extractor's
``threat_model``, a data set's ``max_scale``, ...) is listed once per kind in its traits class
below (``DatasetTraits``, ``ModelTraits``, ``ConditionTraits``, ``ExtractorTraits``,
``FeaturesTraits``, ``MetricTraits``, ``RankerTraits``, ``ExecutorTraits``): each field names an
optional member, with its default and meaning. The component declares them as plain attributes
(or methods) of its own; it subclasses nothing. The registry reads them once, checks their
types (a wrong one is a one-line error naming the plugin and its distribution, exit code 2) and
hands the core the frozen traits object; the core never looks a trait up on a component. Leave
a member out and the default holds.

Optional members of every component, beside its traits:

- ``Settings.validate(self, where: str) -> None``: called after the fields' types are checked;
  raise ``BenchError`` starting with ``where`` (the suite file and table) for values that are
  of the right type but wrong (a negative step count, an unknown choice). Runs at validation,
  before anything is computed or written.
- ``settings``: the instance attribute holding the built ``Settings``. When it is a dataclass,
  its full contents (defaults included) are what enter the cell's config, hence its hash and
  every row; without it, the suite's table as written does. Keep it, or a changed default
  will not invalidate old results. A field declared with ``added_setting(default)`` is left
  out of the config while it holds its default: a setting added after results were made
  keeps their hash (and the cached models and classifiers behind it) valid. Never change
  such a field's default.

A plugin imports what it needs from ``side_bench.plugin_api`` (``hookimpl``, the objects
below, ``CandidateScores``, ``Band``, ``BenchError``, ``rate``, ``bootstrap``, ``ddim_sample``,
``sample_generator``, ``derive_seed``, ``canonical_hash``, ``sha256_file``, ``atomic_write``);
every other module of ``side_bench`` is internal and may change.

Components exchange the small dataclasses defined below; images are float32 tensors of shape
(N, C, H, W) with values in [-1, 1] unless a docstring says [0, 1]. Components must not print:
long work reports through ``RunContext.progress``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:  # for annotations only: importing the contract costs no torch (start-up), and
    # scoring imports the core's k-NN machinery
    import torch

    from side_bench.scoring.scores import Band, CandidateScores

PROJECT_NAME = "side_bench"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., None]
"""``register(name: str, component, aliases: tuple[str, ...] = ())``"""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(stage, completed, total)``: e.g. ("training", 120, 2000). Stages are free text."""


def no_progress(stage: str, done: int, total: int) -> None:
    """The progress callback of a caller that does not listen: the one default everywhere."""
    return None


ADDED_SETTING = "side_bench.added_setting"
"""The dataclass field metadata key that ``added_setting`` sets (read by the registry)."""


def added_setting(default: Any) -> Any:
    """A ``Settings`` field added after results were made with its component: at ``default``
    it stays out of the cell's config (hash and rows), so those results are still found and
    reused; any other value enters the config like every field. ``default`` must be immutable
    (a str, number or bool) and must never change: results made with the old default would
    pass for the new one."""
    return field(default=default, metadata={ADDED_SETTING: True})


# --------------------------------------------------------------------------------------------
# Objects that components exchange
# --------------------------------------------------------------------------------------------


@dataclass
class DataSplit:
    """One scale of a data set: the training subset and a disjoint held-out set.

    ``identity`` is a small JSON-able dict that names the subset exactly (data set, settings,
    scale, seed); it goes into cache keys, so two different subsets must never share it.
    """

    train: torch.Tensor  # (N, C, H, W) in [-1, 1]
    train_labels: torch.Tensor | None  # (N,) int64, the data set's own labels, or None
    heldout: torch.Tensor  # (M, C, H, W) in [-1, 1], never in any scale's training set
    num_classes: int  # number of true classes; 0 when the data set has no labels
    identity: dict[str, Any]
    # Optional: ``reserve(n) -> DataSplit``, n images outside every scale's training subset
    # and outside ``heldout`` (the same n for every scale of one seed), as ``train`` with its
    # ``identity`` (which names no scale); ``heldout`` empty. A fine-tuned target pre-trains
    # its base on them (``bench-unet``'s ``finetune``). None when the data set offers none.
    reserve: Callable[[int], DataSplit] | None = field(default=None, repr=False, compare=False)
    # Optional: for data that ships inside a package (``digits``: scikit-learn's ``load_digits``),
    # where ``train`` comes from: ``{"package", "version", "data", "indices"}``, ``indices`` the
    # position of each training image in that data, in order. A shared-targets pack records it
    # (``side-bench targets export``, run/targets.py); None for a user's files, which a pack
    # records by content hashes only. Planting canaries drops it (the copies are no such index).
    train_source: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class Labels:
    """Labels a target model is trained with (informative, random, unique...)."""

    labels: torch.Tensor  # (N,) int64, aligned with DataSplit.train
    num_classes: int
    kind: str  # the condition that made them: "informative", "random", "unique", ...


@dataclass
class LabelledImages:
    """Labelled images an extractor may learn from (a classifier for guidance).

    For ``informative`` these are the training images and their labels; for ``surrogate``
    the model's own generations and their cluster labels.
    """

    images: torch.Tensor  # (N, C, H, W) in [-1, 1]
    labels: torch.Tensor  # (N,) int64 in [0, num_classes)
    num_classes: int
    identity: dict[str, Any]  # names how they were made; part of classifier cache keys
    # Optional: the class or cluster of every *training* image in this same label space
    # (informative: its own label; surrogate: its nearest kept centroid), (N_train,) int64.
    # The runner uses it for the target-hit diagnostic: does a candidate guided to c land
    # on a training image of c?
    train_targets: torch.Tensor | None = None
    # Optional: JSON-able facts about how the labels were made (e.g. clusters kept, their
    # cohesion); written into every row of the cell under ``diagnostics``.
    diagnostics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetModel:
    """A diffusion model under attack: a diffusers UNet and its noise schedule.

    ``num_classes`` is 0 for an unconditional model; otherwise the UNet takes
    ``class_labels`` in [0, num_classes). ``trained_with`` names the labels it was trained
    with ("none", "informative", "random", ...) so a condition can refuse a mismatch.
    """

    unet: Any  # diffusers.UNet2DModel
    scheduler_config: dict[str, Any]  # a diffusers DDPM/DDIM scheduler config
    num_classes: int
    trained_with: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    identity: dict[str, Any]  # the cache key's contents
    # Optional: for a fine-tuned target, the pre-trained base UNet it was fine-tuned from (same
    # scheduler and shape); ``unet`` is the fine-tuned one. None for a target trained from scratch.
    base_unet: Any = None
    # Optional, for a fine-tuned target: the images the base was pre-trained on, (m, C, H, W)
    # float32 in [-1, 1] (a second reference: the ``base-gu`` ranker and ``base-copies`` metric
    # count candidates that copy them), and the number of images it was fine-tuned on (what
    # FineXtract's attacker is assumed to know: its clustering stops at that many clusters).
    # None when unknown (a loaded model whose data the loader cannot see).
    base_images: torch.Tensor | None = None
    finetune_size: int | None = None


@dataclass
class TargetDeclaration:
    """What a loaded target was trained with, known before loading its weights."""

    trained_with: str  # "none" for an unconditional model
    num_classes: int
    # (C, H, W) of the images the model makes, from its config; None when not known. Compared
    # with the data set's ``image_shape`` at validation.
    image_shape: tuple[int, int, int] | None = None


@dataclass
class Candidates:
    """What an extractor returns: the candidate images and what each was steered to.

    An extractor may also return a bare tensor of images (then nothing was steered).
    Candidate ``i`` is generation ``i`` of the cell (its noise comes from (seed, i)).
    """

    images: torch.Tensor  # (n, C, H, W) float32 in [-1, 1]
    # (n,) int64: the class or cluster candidate i was guided to or sampled with; None when
    # unguided. Kept in the per-candidate records.
    targets: torch.Tensor | None = None
    # JSON-able attack diagnostics (classifier accuracy per noise band, calibration, ...);
    # written into every row of the cell under ``diagnostics``.
    diagnostics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """What every component gets while a cell runs."""

    device: torch.device
    seed: int  # the cell's seed
    cache_dir: Path  # where trained models and classifiers are cached, by config hash
    features: Features  # the suite's feature extractor (SIDE clusters in its space)
    progress: ProgressCallback = no_progress


@dataclass
class ModelContext:
    """What a model-level metric's ``compute_model`` gets: the target model and its data, no
    candidates (``MetricTraits.compute_model``). Built once per target model by the runner."""

    target: TargetModel
    train: torch.Tensor  # the training images in [-1, 1]
    ctx: RunContext
    train_labels: torch.Tensor | None = None  # the labels the target was trained with (random ones for 'random')
    heldout: torch.Tensor | None = None  # the held-out images in [-1, 1], never trained on: membership's non-members


# --------------------------------------------------------------------------------------------
# What registered components provide
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Dataset(Protocol):
    """Registered by ``register_datasets``."""

    def load(self, scale: int, seed: int) -> DataSplit:
        """The first ``scale`` images of a seed-fixed permutation, and a disjoint held-out set.

        Must be deterministic in (settings, scale, seed) and raise ``BenchError`` naming the
        setting when ``scale`` exceeds what the data set holds.
        """

    # Optional members (``max_scale``, ``image_shape``, ``check``, ``canary_pool``, ...): ``DatasetTraits``.


@runtime_checkable
class Model(Protocol):
    """Registered by ``register_models``. Trains (and caches) or loads a target model."""

    def prepare(
        self, data: DataSplit, labels: Labels | None, cache_key: str, ctx: RunContext
    ) -> TargetModel:
        """Return the target model for this data subset and these training labels.

        ``cache_key`` is a hash of everything that determines the trained weights; a trainer
        must save under ``ctx.cache_dir`` by that key and reload instead of retraining.
        """

    # Optional members (``declared_target``, ``load_cached``): ``ModelTraits``.


@runtime_checkable
class Condition(Protocol):
    """Registered by ``register_conditions``: the conditioning signal an attack uses."""

    def training_labels(self, data: DataSplit, seed: int) -> Labels | None:
        """Labels the target model is trained with; None for an unconditional target."""

    def training_key(self) -> dict[str, Any] | None:
        """What of this condition changes the target's weights (None: unconditional).

        Conditions with equal keys share one trained target model.
        """

    def check_target(self, target: TargetModel | TargetDeclaration) -> None:
        """Raise ``BenchError`` when the target was trained for another condition.

        Called before a run with a model's ``declared_target()`` (when it has one) and in every
        cell with the prepared target; reads only ``trained_with`` and ``num_classes``.
        Required: the runner calls it in every cell (only the validation-time call is skipped
        for a condition without it). A condition that fits every target returns None.
        """

    def attack_labels(
        self, target: TargetModel, data: DataSplit, ctx: RunContext
    ) -> LabelledImages | None:
        """Labelled images for the extractor (None when the condition offers none)."""


@runtime_checkable
class Extractor(Protocol):
    """Registered by ``register_extractors``: turns a model and a budget into candidates."""

    def extract(
        self, target: TargetModel, labelled: LabelledImages | None, n: int, ctx: RunContext
    ) -> Candidates | torch.Tensor:
        """Return ``n`` candidates: ``Candidates`` or a tensor (n, C, H, W) in [-1, 1].

        Sample ``i`` must depend only on (ctx.seed, i), never on the batch size.
        """

    # Optional members (``threat_model``, ``planned_cost``): ``ExtractorTraits``.
    #
    # What an extractor spends is measured by the runner where it is spent (side_bench/cost.py),
    # never taken from the extractor: the target's UNets (``unet`` and ``base_unet``) are counted
    # at their first layer (``conv_in``: every diffusers UNet has one; a model without it is
    # counted at its module call), and the core sampler (``ddim_sample``) and classifier
    # training count the guide, the draws and the training steps. A guidance function given to
    # ``ddim_sample`` may say what it is with an attribute ``guide`` ("classifier", "kernel"),
    # how its evaluations are counted. An extractor with a sampling loop of its own is counted
    # all the same (its UNet evaluations), its cost spread evenly over its candidates.



@runtime_checkable
class Features(Protocol):
    """Registered by ``register_features``: image -> vector, with its similarity.

    ``similarity`` is "l2" (gamma = 1 - ||a - b|| / sqrt(D), i.e. 1 - RMS difference for
    pixel vectors in [0, 1]) or "cosine" (gamma = cosine of the angle).
    ``default_bands`` maps band names to (low, high) edges used when the suite gives none.
    ``identity`` records extractor, variant, input transform and weights hash.

    Optional members (``similarity_range``): ``FeaturesTraits``.
    """

    similarity: str
    default_bands: dict[str, tuple[float, float]]
    identity: dict[str, Any]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images (N, C, H, W) with values in [0, 1]; return (N, D) float32."""


@dataclass
class MetricValue:
    """What ``Metric.compute`` returns: a value with what is behind it.

    A rate is ``count`` of ``n`` with a binomial interval; a statistic that is not a count
    carries its own interval (UMS the occupancy interval, a percentile order statistics, a
    membership or ranker AUC a score interval, the rest a seeded bootstrap: ``scoring/stats.py``) and
    its standard error ``se`` where the leaderboard's tests use one. ``value`` None means "cannot be computed here", with
    ``reason`` saying why (e.g. "needs at least 2 training images"); it is written as null.
    """

    value: float | None
    count: int | None = None  # k of a rate k / n
    n: int | None = None  # the denominator: N_G for candidate rates
    ci_low: float | None = None  # 95% interval
    ci_high: float | None = None
    interval: str | None = None  # how the interval was made: "wilson", "bootstrap-percentile", ...
    se: float | None = None  # standard error; None for counts (the test uses k and n)
    reason: str | None = None


@runtime_checkable
class Metric(Protocol):
    """Registered by ``register_metrics``. A metric says what it is; the core reads it.

    What a metric declares about itself (``uses_bands``, ``direction``, ``unit``, ``description``,
    ``needs_model``, ``needs_canaries``, ``memorized``, ``compute_model``, ``default_copy_criterion``)
    is ``MetricTraits``.
    A model-level metric declares ``compute_model(model: ModelContext)`` instead of (or beside)
    ``compute``: the core never calls it with candidates. Declare ``direction``, ``unit`` and ``description``: a rate without
    ``unit = "rate"`` shows as 0.1234.

    ``compute`` gets ``side_bench.scoring.scores.CandidateScores`` (per-candidate nearest-neighbour
    results, the same object whether fresh or loaded from stored records, so ``rescore``
    reproduces a fresh run exactly) and the ``Band`` (None when ``uses_bands`` is False) and
    returns a ``MetricValue`` (or a bare float, for which no interval is known).
    """

    def compute(self, scores: CandidateScores, band: Band | None) -> MetricValue | float: ...
    # (a model-level metric needs only ``compute_model``: see ``MetricTraits``)


@runtime_checkable
class Executor(Protocol):
    """Registered by ``register_executors``: runs the cells of a suite.

    ``run(cells, run_cell, on_done)`` calls ``run_cell(cell)`` for every cell (in any order,
    anywhere) and ``on_done(result)`` in this process as each finishes. ``run_cell`` never
    raises for a failing cell; it returns a failed result instead.

    Optional: ``parallelism: int | None``, how many cells the runner hands over at once (it
    claims each with a lock file first, so several processes can share a run folder): 1 runs
    them one by one; None (the default) hands over every free cell and lets the executor
    schedule them.

    Optional: ``workers: int``, set by the runner from ``run --workers N`` (processes of this
    machine to run cells in); an executor without it refuses N other than 1.
    """

    def run(self, cells: list, run_cell: Callable, on_done: Callable) -> None: ...


@runtime_checkable
class Ranker(Protocol):
    """Registered by ``register_rankers``: an attacker-side score per candidate.

    The attacker's own view (Carlini et al. 2023's generate-and-filter): a score computed from
    the candidates and the target model only, never the training set; higher means "more
    likely memorized". ``score`` returns the scores (n,) float64 and the ranker's own flag
    threshold (a candidate is flagged when score >= threshold; None when the ranker has none).
    Candidate ``i``'s score must not depend on the batch size (seed any noise by (ctx.seed, i)).
    The runner stores every ranker's scores in the per-candidate records; the ranking metrics
    compare them with the ground truth. What a ranker spends (UNet evaluations) is measured
    by the runner and kept apart from the attack's cost (the row's ``cost.rankers``).

    Optional members (``attacker``, ``prefix_invariant``): ``RankerTraits``.
    """

    def score(self, candidates01: torch.Tensor, target: TargetModel, ctx: RunContext) -> tuple[Any, float | None]:
        """``candidates01`` (n, C, H, W) in [0, 1] -> (scores (n,) float64 ndarray, threshold)."""


# --------------------------------------------------------------------------------------------
# Traits: what a component may declare about itself, one frozen dataclass per kind
# --------------------------------------------------------------------------------------------
# A component declares a trait as a plain attribute (or method) of the same name, on its class
# or set in ``__init__`` (where it depends on the settings); it subclasses nothing. The registry
# reads them: from the registered class when a plugin registers it (``Registration.traits``:
# what the leaderboard and the dry run may ask without building it) and from the built
# component when it builds one (``side_bench.registry.traits_of``); both checked against the
# field types here, a wrong type a one-line error naming the plugin and its distribution.
# Every field is documented in docs/plugins.md ("Traits"); tests/test_plugin_api.py checks it.


@dataclass(frozen=True)
class DatasetTraits:
    """What a ``Dataset`` may declare."""

    # one line on the data set, for listings
    description: str | None = None
    # the most training images a scale may ask for (the pool less the held-out split): a suite
    # with a larger scale is refused at validation (exit code 2) instead of failing in ``load``;
    # None: not known (a plan without the files, ``run --dry-run``)
    max_scale: int | None = None
    # channels of its images (a class attribute): what ``run --dry-run`` sizes pixel features by
    channels: int = 3
    # the (C, H, W) of ``load``'s images: when the model declares its shape too
    # (``TargetDeclaration.image_shape``), a suite where they differ (a greyscale model and RGB
    # images) is refused at validation
    image_shape: tuple[int, ...] | None = None
    # how many held-out images ``load`` gives (the null baseline's size): a suite whose null is
    # too small to show its headline rate above it (fewer held-out images than N_G, and
    # ``report.leaderboard.null_resolution`` above ``MIN_SHOWABLE_RATE`` of ``run/suite.py``)
    # gets a warning naming the smallest rate it can show
    heldout_size: int | None = None
    # the one scale the data set takes (a user's named training set: all of it); a suite with
    # another scale is refused at validation
    fixed_scale: int | None = None
    # one line on where the training and held-out images come from, printed when a run or a
    # dry run starts
    data_note: str | None = None
    # ``check() -> None``, called once at validation, after every other check and before any
    # cell runs (``run --dry-run`` too): read what a run will read (decode every image) and
    # raise ``BenchError`` naming the bad files, so that a truncated image is exit code 2 with
    # nothing written rather than a failure in every cell
    check: Callable[[], None] | None = None
    # ``split_files(scale, seed) -> {"train": [path, ...], "heldout": [path, ...]}``, the files
    # ``load(scale, seed)`` reads, in its order (``nearest_index`` i is ``train[i]``); the runner
    # writes it to ``data/<scale>-<seed>.json`` in the run folder
    split_files: Callable[[int, int], dict[str, list[str]]] | None = None
    # ``canary_pool(scale, seed, n) -> (images, labels | None)``, at least n images in [-1, 1]
    # outside ``load(scale, seed)``'s training subset and held-out split, in a seeded order,
    # labelled like the training set: where a suite's ``canaries`` come from
    # (side_bench/run/canaries.py). Without it the core uses ``load``'s promise (scales nest):
    # ``load(scale + n)``'s last n training images, checked to begin with ``load(scale)``
    canary_pool: Callable[[int, int, int], tuple[Any, Any]] | None = None


@dataclass(frozen=True)
class ModelTraits:
    """What a ``Model`` may declare."""

    # one line on the model, for listings
    description: str | None = None
    # ``declared_target() -> TargetDeclaration | None``: a model loaded from disk knows what it
    # was trained with before any work; declaring it lets a suite that pairs it with the wrong
    # condition fail at validation (exit code 2) instead of in every cell
    declared_target: Callable[[], TargetDeclaration | None] | None = None
    # ``load_cached(folder, data, labels, cache_key, ctx) -> TargetModel``: the target from the
    # cache entry ``prepare`` wrote as ``<ctx.cache_dir>/models/<cache_key>`` (its files already
    # checked against their sha256), or from a copy of it in a shared-targets pack
    # (``side-bench targets export``; ``run --targets``); ``cache_key`` is the key it was
    # trained under. It never trains: raise ``BenchError`` when the files cannot be that
    # target. Only a model with it can be exported to a pack and run from one
    load_cached: Callable[..., TargetModel] | None = None


@dataclass(frozen=True)
class ConditionTraits:
    """What a ``Condition`` may declare."""

    # one line for the leaderboard's legend of attacks
    description: str | None = None
    # ``check_target`` (see ``Condition``): without it, the check against a model's
    # ``declared_target()`` at validation is skipped (the runner still calls it in every cell)
    check_target: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class ExtractorTraits:
    """What an ``Extractor`` may declare (what it spends is measured, never declared)."""

    # one line for the leaderboard's legend of attacks
    description: str | None = None
    # what the attacker needs, shown in the leaderboard's legend: "black-box" (samples from the
    # target only), "white-box" (the target's denoiser: its noise predictions, gradients or
    # likelihoods) or "white-box + base model" (also the pre-trained model a fine-tuned target
    # came from, ``TargetModel.base_unet``)
    threat_model: str | None = None
    # ``planned_cost(n) -> dict``, what ``run --dry-run`` counts for ``n`` candidates, since only
    # the extractor knows what it runs: "unet_evals" (the target UNet's image-steps, a guided
    # step counted at its cost in unguided steps, a rejection pool included), and, where it
    # trains a classifier, "classifier_images" (training steps x batch, scaled by what a step
    # costs against a plain one) with "classifier_key" (cells of one scale, seed and condition
    # whose keys are equal train it once). Without it the dry run counts n x ``ddim_steps``
    # (x1.6 where ``guidance_scale`` is set and not 0) and a classifier of ``classifier_steps``
    # x ``classifier_batch_size``
    planned_cost: Callable[[int], dict[str, Any]] | None = None
    # ``summarize_diagnostics(diagnostics: dict) -> list[str]``, short phrases on what the cell's
    # diagnostics (``Candidates.diagnostics`` beside the condition's) say, written into every
    # row (``diagnostics_summary``) and shown under the attack on the leaderboard page, which
    # reads only result files and knows no extractor's keys (the built-in guided extractors:
    # ``guidance_summary``, the classifier's accuracy and the guidance by noise band)
    summarize_diagnostics: Callable[[dict[str, Any]], list[str]] | None = None


@dataclass(frozen=True)
class FeaturesTraits:
    """What a ``Features`` may declare."""

    # one line on the features, for listings
    description: str | None = None
    # the values the similarity can take; band edges outside it are refused at validation
    # (None: (-1, 1), cosine's range, and l2 similarity is at most 1)
    similarity_range: tuple[float, ...] | None = None


@dataclass(frozen=True)
class MetricTraits:
    """What a ``Metric`` may declare: the leaderboard formats, checks and ranks by it."""

    # True when computed once per similarity band (``compute`` then gets each ``Band``)
    uses_bands: bool = False
    # "higher" when a larger value means more memorization, else "lower"
    direction: str = "higher"
    # "rate" (k of n, a fraction in [0, 1], shown in percent), "fraction" (a count per
    # candidate that may exceed 1, e.g. UMS; shown in percent), "similarity", "distance",
    # "ratio", "count" or "nats"; the leaderboard formats and checks values by it. None: no
    # range check, plain number formatting
    unit: str | None = None
    # one line for legends, and every row's ``metric_description``
    description: str | None = None
    # a model-level metric, computed once per target model rather than per attack (e.g.
    # ``memorization-divergence``), by ``compute_model``; True where ``compute_model`` is
    # declared. It has no null baseline, ``rescore`` copies its rows (a run folder holds no
    # model), and its ``settings`` (repr) are part of its once-per-model key. Its rows say
    # ``model_level``; the leaderboard shows it once per scale (the target model, each model
    # once), never ranked among the attacks
    needs_model: bool = False
    # ``compute_model(model: ModelContext) -> MetricValue | float``, a model-level metric's
    # value: the ``ModelContext`` holds the ``TargetModel``, its training images (and labels)
    # and the held-out images, never candidates; called once per target model. A metric
    # written before it (``needs_model = True`` and ``compute(scores, band)`` reading
    # ``scores.model``) still works: the registry calls its ``compute`` with an object whose
    # ``model`` is the ``ModelContext`` and ``n_candidates`` 0
    compute_model: Callable[[ModelContext], Any] | None = None
    # the metric reads ``scores.canaries`` (each distinct training image's planted count, 0 for
    # the rest), so a suite without ``canaries`` that names it is refused at validation
    needs_canaries: bool = False
    # ``memorized(scores, band) -> np.ndarray``, the metric's copy criterion, one decision per
    # candidate: a bool array (n,), True where candidate ``i`` counts as a copy of its nearest
    # training image (``scores.nearest_index[i]``); ``band`` as for ``compute``.
    # ``side-bench compare --by NAME`` finds the training images two attacks copied with it
    # (and refuses a metric without it); a rate metric built on it should count it,
    # ``rate(int(memorized.sum()), n)``, so the two agree. Raise ``BenchError`` when it cannot
    # decide on these scores (say why, as ``compute``'s ``reason`` would). Leave it out when the
    # metric decides nothing per candidate (a percentile, UMS's distinct images, a model-level
    # metric)
    memorized: Callable[[Any, Any], Any] | None = None
    # this metric's ``memorized`` is what ``side-bench compare`` counts as a copy when no
    # ``--by`` is given (the built-ins: ``ams``, a best similarity in the band); one installed
    # metric may declare it, and it needs ``memorized``
    default_copy_criterion: bool = False


@dataclass(frozen=True)
class RankerTraits:
    """What a ``Ranker`` may declare."""

    # one line for legends
    description: str | None = None
    # False for a score that reads what an attacker does not have (``base-gu`` reads the base
    # model's training images): the equal-cost view never pits it against an attack as
    # "UnCond + ranker"
    attacker: bool = True
    # candidate ``i``'s score does not depend on the other candidates (e.g. a denoising loss),
    # so the scores of a cell's first k candidates are its stored scores' first k: the
    # equal-cost view (report/budget.py) may then rank a prefix of a reference cell. A score
    # counted among all candidates (near-duplicates) is not
    prefix_invariant: bool = False


@dataclass(frozen=True)
class ExecutorTraits:
    """What an ``Executor`` may declare. Its ``parallelism`` and ``workers`` are not traits: the
    runner sets ``workers`` and reads ``parallelism`` (which may follow it) when it runs cells."""

    # one line on the executor, for listings
    description: str | None = None


TRAITS = {
    "datasets": DatasetTraits,
    "models": ModelTraits,
    "conditions": ConditionTraits,
    "extractors": ExtractorTraits,
    "features": FeaturesTraits,
    "metrics": MetricTraits,
    "executors": ExecutorTraits,
    "rankers": RankerTraits,
}
"""Each kind of component (but suites, which are files) -> the traits class the registry reads."""


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


@hookspec
def register_datasets(register: Register) -> None:
    """Register Dataset components (see ``Dataset``)."""


@hookspec
def register_models(register: Register) -> None:
    """Register Model components (see ``Model``)."""


@hookspec
def register_conditions(register: Register) -> None:
    """Register Condition components (see ``Condition``)."""


@hookspec
def register_extractors(register: Register) -> None:
    """Register Extractor components (see ``Extractor``)."""


@hookspec
def register_features(register: Register) -> None:
    """Register Features components (see ``Features``)."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register Metric components (see ``Metric``)."""


@hookspec
def register_executors(register: Register) -> None:
    """Register Executor components (see ``Executor``)."""


@hookspec
def register_rankers(register: Register) -> None:
    """Register Ranker components (see ``Ranker``)."""


@hookspec
def register_suites(register: Register) -> None:
    """Register suite definitions: ``register(name, path_to_toml_file)``."""


KINDS = {
    "datasets": "dataset",
    "models": "model",
    "conditions": "condition",
    "extractors": "extractor",
    "features": "features",
    "metrics": "metric",
    "executors": "executor",
    "suites": "suite",
    "rankers": "ranker",
}
"""Every kind of component: the ``register_<kind>`` hook's kind -> how messages name one."""
