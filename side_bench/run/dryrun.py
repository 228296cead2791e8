"""``side-bench run --dry-run``: the cells a run would execute and what they would cost.

Validates the suite exactly as a run does (``prepare_run``, run/prepared.py), then lists every cell with its
config hash, whether its result is already in the run folder, and a cost estimate in units
that do not depend on the machine: training steps x batch size for the target model (counted
once per model that cells share), classifier training passes, and UNet evaluations for
sampling (N_G x DDIM steps, plus a surrogate condition's own pool; an extractor that knows
better says so with ``planned_cost``, e.g. a rejection sampler's pool or guidance through the
UNet). Nothing is run, loaded
beyond the suite's validation, or written.

It also turns the units into a time per device kind from the throughput constants kept in
``benchmarks/throughput.json`` (UNet image-steps per second per device kind and image size,
matmul GFLOP/s for the k-NN, each with its date and source, measured or extrapolated), and
warns when a suite is far beyond the machine (more than ``WARN_SECONDS``). A data set with no
data root (CelebA before the download) declares its published sizes for the plan
(``SIDE_BENCH_PLAN_ONLY``), so celeba-scales' cost is known before anyone downloads it; a real
run still needs the root. Good to a factor of a few, which is enough to tell an afternoon from
a month.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from side_bench.errors import BenchError
from side_bench.registry import Registry, load_registry, traits_of
from side_bench.run.prepared import PreparedRun, prepare_run
from side_bench.run.suite import canonical_hash, cell_model

# Used only when benchmarks/throughput.json is not found (a copy of side-bench without it)
CPU_EVALS_PER_SECOND = 2480.0  # UNet image-steps per second at 8x8 (quickstart UNet, one CPU thread; issue 21)
CUDA_SPEEDUP = 50.0
PLAN_ONLY_ENV = "SIDE_BENCH_PLAN_ONLY"
THROUGHPUT_FILE = "throughput.json"
TRAIN_STEP_EVALS = 3.0  # a training image-step (forward and backward) in evaluations
GUIDED_COST = 1.6  # guided / unguided sampling time (README: sampling throughput)
REFERENCE_CONDITION, REFERENCE_EXTRACTOR = "none", "sample"  # UnCond, the equal-cost reference (report/budget.py)
WARN_SECONDS = 24 * 3600.0


@dataclass
class PlannedCell:
    scale: int
    attack: str
    seed: int
    config_hash: str
    done: bool
    train_images: int  # model training steps x batch size; 0 when loaded or shared with an earlier cell
    model_note: str  # "train", "shared", "loaded"
    classifier_images: int  # classifier epochs x labelled images (an estimate)
    unet_evals: int  # sampled images x DDIM steps
    knn_pairs: int = 0  # candidate (and, once per scale, held-out) x training-image distances
    # the attack's own planned cost in UNet-evaluation equivalents (side_bench/cost.py), work it
    # shares with other cells (a surrogate pool, a classifier) counted in full: what its row's
    # measured cost will say, and what an equal-cost comparison needs of the reference
    attack_cost: float = 0.0
    reference: bool = False  # Carlini et al.'s UnCond (condition none, extractor sample): the equal-cost reference
    reference_steps: int = 0  # its cost per candidate (DDIM steps), when it is the reference


def _positive(settings: dict, key: str, default: int = 0) -> int:
    value = settings.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def prepare_plan(suite: str, *, device: str = "cpu", results_dir: str | Path = "results", run_id: str | None = None,
                 registry: Registry | None = None, data_root_given: bool = False) -> PreparedRun:
    """The run a dry run plans, prepared as a run prepares it (``prepare_run``), with the sizes a
    data set without its files declares (``planning``), and no executor: nothing will run."""
    with planning():
        return prepare_run(suite, device=device, results_dir=results_dir, run_id=run_id,
                           registry=registry or load_registry(), data_root_given=data_root_given)


def plan(suite: str | PreparedRun, *, device: str = "cpu", results_dir: str | Path = "results",
         run_id: str | None = None, registry: Registry | None = None,
         data_root_given: bool = False) -> tuple[object, list[PlannedCell], Path]:
    """(suite, planned cells, run folder) without running or writing anything: of a prepared
    run, or of a suite prepared here (``prepare_plan``, with the other arguments)."""
    prepared = suite if isinstance(suite, PreparedRun) else prepare_plan(
        suite, device=device, results_dir=results_dir, run_id=run_id, registry=registry,
        data_root_given=data_root_given)
    suite_obj, cells, store, registry = prepared.suite, prepared.cells, prepared.store, prepared.registry
    heldout = suite_obj.dataset.settings.get("heldout", 0) if isinstance(suite_obj.dataset.settings, dict) else 0
    heldout = heldout if isinstance(heldout, int) and not isinstance(heldout, bool) else 0
    if isinstance(suite_obj.heldout_size, int):  # what the data set says it holds out (DatasetTraits)
        heldout = suite_obj.heldout_size
    nulls: set[int] = set()
    seen_models: set[str] = set()
    seen_pools: set[str] = set()
    seen_classifiers: set[str] = set()
    planned = []
    for cell in cells:
        condition = registry.build("conditions", cell.attack.condition.name, cell.attack.condition.settings)
        key = canonical_hash([cell.scale, cell.seed, condition.training_key()])
        model_settings = cell_model(cell.config)["settings"]  # [model] per_scale may change it by scale
        trains = "steps" in model_settings and "batch_size" in model_settings
        if not trains:
            train_images, note = 0, "loaded"
        elif key in seen_models:
            train_images, note = 0, "shared"
        else:
            train_images, note = model_settings["steps"] * model_settings["batch_size"], "train"
        seen_models.add(key)
        condition_settings, extractor_settings = cell.attack.condition.settings, cell.attack.extractor.settings
        n_generations = suite_obj.n_generations[cell.scale]
        extractor = registry.build("extractors", cell.attack.extractor.name, extractor_settings)
        cost = (_planned_cost(extractor, n_generations, cell.attack.extractor.name)
                or _guessed_cost(extractor_settings, n_generations))
        unet_evals = cost["unet_evals"]
        attack_cost = float(unet_evals + int(cost.get("classifier_images") or 0))
        if "clusters" in condition_settings:  # a surrogate samples its pool once per (scale, seed, pool)
            n_syn = _positive(condition_settings, "n_syn") or 50 * _positive(condition_settings, "clusters", 100)
            pool = canonical_hash([cell.scale, cell.seed, n_syn, condition_settings.get("ddim_steps", 50)])
            attack_cost += n_syn * _positive(condition_settings, "ddim_steps", 50)
            if pool not in seen_pools:
                seen_pools.add(pool)
                unet_evals += n_syn * _positive(condition_settings, "ddim_steps", 50)
        # a classifier trains once per (scale, seed, its settings): steps x batch images
        classifier = 0
        if cost.get("classifier_images"):
            trained = canonical_hash([cell.scale, cell.seed, cell.attack.condition.settings, cost.get("classifier_key")])
            if trained not in seen_classifiers:
                seen_classifiers.add(trained)
                classifier = int(cost["classifier_images"])
        # k-NN: every candidate against every training image; the null's held-out images once per scale
        knn_pairs = suite_obj.n_generations[cell.scale] * cell.scale
        if cell.scale not in nulls:
            nulls.add(cell.scale)
            knn_pairs += heldout * cell.scale
        reference = (cell.attack.condition.name, cell.attack.extractor.name) == (REFERENCE_CONDITION, REFERENCE_EXTRACTOR)
        planned.append(PlannedCell(cell.scale, cell.attack.name, cell.seed, cell.config_hash,
                                   store.is_done(cell.config_hash), train_images, note, classifier, unet_evals,
                                   knn_pairs, attack_cost, reference,
                                   _positive(extractor_settings, "ddim_steps", 50) if reference else 0))
    return suite_obj, planned, store.run_dir


def equal_cost_needs(planned: list[PlannedCell], n_generations: dict[int, int]) -> list[dict]:
    """What each attack's equal-cost comparison (report/budget.py) needs of the reference, from
    the plan: per attack cell, its planned cost and the reference's N_G whose prefix reaches it
    (the planned cost over the reference's cost per candidate), beside the reference cell this
    suite has at that scale and seed (None when it has none: a companion suite must hold it).
    A plan: the measured cost decides (a rejection pool's size is known only after the run)."""
    references = {(p.scale, p.seed): p for p in planned if p.reference}
    steps = next((p.reference_steps for p in planned if p.reference), 50)
    needs = []
    for p in planned:
        if p.reference:
            continue
        here = references.get((p.scale, p.seed))
        per = here.reference_steps if here else steps
        needed = max(1, math.ceil(p.attack_cost / per)) if per else 0
        have = n_generations.get(p.scale) if here else None
        needs.append({"attack": p.attack, "scale": p.scale, "seed": p.seed, "cost": p.attack_cost,
                      "reference": here.attack if here else None, "reference_steps": per,
                      "needed_n_g": needed, "suite_n_g": have, "enough": have is not None and have >= needed})
    return needs


def equal_cost_lines(needs: list[dict], whole_rankers: list[str] = ()) -> list[str]:
    """The dry run's lines for ``equal_cost_needs``: one per attack and the N_G it needs of UnCond.
    ``whole_rankers``: the suite's rankers whose score needs all of a cell's candidates (not
    ``prefix_invariant``): UnCond + such a ranker at equal cost ranks a whole UnCond cell, one
    that spends 90% to 100% of the budget (``cost.SPEND_SHARE``)."""
    from side_bench.cost import SPEND_SHARE

    lines = []
    for need in needs:
        where = (f"this suite's {need['reference']} has N_G {need['suite_n_g']:,} "
                 f"({'enough' if need['enough'] else 'too few: add a UnCond cell with N_G >= ' + format(need['needed_n_g'], ',')})"
                 if need["reference"] else "this suite has no UnCond cell there (a companion suite must hold one)")
        whole = ""
        if whole_rankers:
            steps = need["reference_steps"] or 1
            low, high = math.ceil(SPEND_SHARE * need["cost"] / steps), int(need["cost"] // steps)
            whole = (f"; UnCond + {', '.join(whole_rankers)} (scored among all of a cell's candidates) needs a UnCond "
                     f"cell with its ranker{'s' if len(whole_rankers) > 1 else ''} and N_G in [{low:,}, {high:,}]")
        lines.append(f"equal cost: {need['attack']} @ scale {need['scale']}, seed {need['seed']}: about "
                     f"{need['cost']:,.0f} UNet-evaluation equivalents; UnCond at {need['reference_steps']} steps needs "
                     f"N_G >= {need['needed_n_g']:,} for its prefix to reach it; {where}{whole}")
    return lines


def whole_cell_rankers(suite_obj, registry: Registry | None = None) -> list[str]:
    """The suite's attacker rankers whose score of a candidate depends on the others (not
    ``prefix_invariant``; ``attacker`` False ones are never compared)."""
    registry = registry or load_registry()
    declared = [(spec.name, registry.get("rankers", spec.name).traits) for spec in getattr(suite_obj, "rankers", [])]
    return [name for name, traits in declared if traits.attacker and not traits.prefix_invariant]


def _guessed_cost(extractor_settings: dict, n: int) -> dict:
    """For an extractor without ``planned_cost``: N_G x DDIM steps, a guided step ~1.6x
    (measured), and a classifier of classifier_steps x classifier_batch_size where it guides."""
    evals = n * _positive(extractor_settings, "ddim_steps", 50)
    if extractor_settings.get("guidance_scale", 0) == 0:
        return {"unet_evals": evals}
    return {"unet_evals": int(evals * GUIDED_COST),
            "classifier_images": (_positive(extractor_settings, "classifier_steps", 1000)
                                  * _positive(extractor_settings, "classifier_batch_size", 128)),
            "classifier_key": {k: v for k, v in extractor_settings.items() if k.startswith("classifier_")}}


def _planned_cost(extractor, n: int, name: str) -> dict | None:
    """The extractor's own ``planned_cost(n)`` (hookspecs.Extractor), checked; None without one."""
    planned_cost = traits_of("extractors", extractor).planned_cost
    if planned_cost is None:
        return None
    cost = planned_cost(n)
    evals = cost.get("unet_evals") if isinstance(cost, dict) else None
    if not isinstance(evals, (int, float)) or isinstance(evals, bool) or evals < 0:
        raise BenchError(f"extractor {name!r}: planned_cost({n}) must return a dict with a non-negative "
                         f"'unet_evals', got {cost!r}")
    return {**cost, "unet_evals": int(evals)}


@contextlib.contextmanager
def planning():
    """While a plan validates the suite: a data set without a data root declares its sizes."""
    before = os.environ.get(PLAN_ONLY_ENV)
    os.environ[PLAN_ONLY_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLAN_ONLY_ENV, None)
        else:
            os.environ[PLAN_ONLY_ENV] = before


def throughput_file(registry: Registry | None = None) -> Path | None:
    """benchmarks/throughput.json: beside the package in a checkout, or beside the registered
    built-in suites (the wheel ships benchmarks/ with them)."""
    candidates = [Path(__file__).resolve().parents[2] / "benchmarks" / THROUGHPUT_FILE]
    try:
        quickstart = (registry or load_registry()).get("suites", "quickstart").component
        candidates.append(Path(quickstart).parent / THROUGHPUT_FILE)
    except Exception:  # no built-in suites registered (SIDE_BENCH_PLUGINS without them)
        pass
    return next((path for path in candidates if path.is_file()), None)


def load_throughput() -> dict:
    path = throughput_file()
    if path is None:  # no constants shipped: the old calibration, said to be rough
        return {"devices": {
            "cpu": {"label": "a CPU", "matmul_gflops": {"value": 89.0, "measured": False},
                    "image_steps_per_second": {"8": {"value": CPU_EVALS_PER_SECOND, "measured": True}}},
            "cuda": {"label": "a GPU", "matmul_gflops": {"value": 50000.0, "measured": False},
                     "image_steps_per_second": {"8": {"value": CPU_EVALS_PER_SECOND * CUDA_SPEEDUP, "measured": False}}}}}
    return json.loads(path.read_text())


def unet_rate(constants: dict, kind: str, size: int) -> tuple[float, str]:
    """(image-steps per second, how it was found) for a device kind and image size: the entry
    of that size, else the nearest size's scaled by the pixels (an extrapolation)."""
    entries = constants["devices"][kind]["image_steps_per_second"]
    if str(size) in entries:
        entry = entries[str(size)]
        return float(entry["value"]), "measured" if entry.get("measured") else "not measured: extrapolated or assumed"
    nearest = min(entries, key=lambda s: abs(int(s) - size))
    return float(entries[nearest]["value"]) * int(nearest) ** 2 / size**2, f"scaled by pixels from {nearest} px"


def image_size(suite_obj) -> int:
    size = suite_obj.dataset.settings.get("image_size", 32) if isinstance(suite_obj.dataset.settings, dict) else 32
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 32


def feature_dim(suite_obj, registry: Registry | None = None) -> int:
    """Features per image for the k-NN: pixels x channels for pixel features (the data set's
    ``channels``, else 3), 512 for an embedding."""
    size = image_size(suite_obj)
    if suite_obj.features.name != "pixel":
        return 512
    registration = (registry or load_registry()).get("datasets", suite_obj.dataset.name)
    settings = suite_obj.dataset.settings if isinstance(suite_obj.dataset.settings, dict) else {}
    channels = settings.get("channels")  # a setting (image-folder), else the class attribute
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        channels = registration.traits.channels
    return channels * size * size


def estimate(suite_obj, planned: list[PlannedCell], kind: str, registry: Registry | None = None,
             constants: dict | None = None) -> dict:
    """Seconds on one device of ``kind`` ("cpu", "cuda") for the cells still to run, with the
    rates used and where they came from."""
    constants = constants or load_throughput()
    size = image_size(suite_obj)
    rate, how = unet_rate(constants, kind, size)
    todo = [p for p in planned if not p.done]
    evals = sum(TRAIN_STEP_EVALS * p.train_images + p.classifier_images + p.unet_evals for p in todo)
    gflops = float(constants["devices"][kind]["matmul_gflops"]["value"])
    knn_flops = 2.0 * sum(p.knn_pairs for p in todo) * feature_dim(suite_obj, registry)
    seconds = evals / rate + knn_flops / (gflops * 1e9)
    return {"seconds": seconds, "unet_rate": rate, "how": how, "knn_flops": knn_flops,
            "label": constants["devices"][kind].get("label", kind)}


def own_cells_lines(suite_obj) -> list[str]:
    """For the attacks that set their own scales or seeds, which seed runs at which scales, one
    line per distinct plan: "seed 0 at scales 64, 80, 96; seed 2 at scales 80, 96: uncond, cond"."""
    plans: dict[str, list[str]] = {}
    for name, pairs in getattr(suite_obj, "attack_cells", {}).items():
        by_seed: dict[int, list[int]] = {}
        for scale, seed in pairs:
            by_seed.setdefault(seed, []).append(scale)
        plan_text = "; ".join(f"seed {seed} at scale{'s' if len(scales) > 1 else ''} {', '.join(map(str, sorted(scales)))}"
                              for seed, scales in by_seed.items())
        plans.setdefault(plan_text, []).append(name)
    return [f"{plan_text}: {', '.join(names)}" for plan_text, names in plans.items()]


def _duration(seconds: float, gpu: bool = False) -> str:
    if gpu and seconds >= 3600:  # GPU time is bought by the hour
        return f"{seconds / 3600:,.0f} GPU-hours"
    for unit, length in (("years", 365 * 86400.0), ("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= length:
            return f"{seconds / length:,.1f} {unit}"
    return f"{seconds:.0f} seconds"


def print_plan(prepared: PreparedRun, console) -> dict:
    """The CLI's table of planned cells and totals of a prepared run (``prepare_plan``); returns
    {"seconds", "warning", "warnings"} (the estimate)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    suite_obj, planned, run_dir = plan(prepared)
    device, registry = prepared.device, prepared.registry
    table = Table(title=f"{suite_obj.name}: {len(planned)} cells (dry run: nothing is run or written)",
                  caption="train: steps x batch size (once per shared model); classifier: steps x batch size (once per classifier "
                          "per scale); UNet evals: sampled images x DDIM steps, as each extractor counts them (planned_cost)", box=box.SIMPLE_HEAD)
    for column in ("scale", "attack", "seed", "config hash", "status", "train", "classifier", "UNet evals"):
        numeric = column not in ("attack", "config hash", "status")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    todo = [p for p in planned if not p.done]
    for p in planned:
        model = {"train": f"{p.train_images:,}", "shared": "shared", "loaded": "loaded"}[p.model_note]
        table.add_row(str(p.scale), escape(p.attack), str(p.seed), p.config_hash[:12], "done" if p.done else "to run",
                      model if not p.done else "", f"{p.classifier_images:,}" if not p.done else "",
                      f"{p.unet_evals:,}" if not p.done else "")
    from rich.console import Console

    # every column in full, even when piped or narrow: as wide as the longest attack name needs
    width = max(console.width, 110, 90 + max((len(p.attack) for p in planned), default=0))
    Console(width=width).print(table)
    for line in own_cells_lines(suite_obj):  # one line each, unwrapped, so that it greps whole
        console.print(escape(line), soft_wrap=True)
    for line in equal_cost_lines(equal_cost_needs(planned, suite_obj.n_generations), whole_cell_rankers(suite_obj, registry)):
        console.print(escape(line), soft_wrap=True)
    console.print(f"run folder: {run_dir}")
    if suite_obj.data_note:
        console.print(f"data: {escape(suite_obj.data_note)}", soft_wrap=True)
    console.print(
        f"to run: {len(todo)} of {len(planned)} cells; training {sum(p.train_images for p in todo):,} image-steps "
        f"({sum(p.model_note == 'train' for p in todo)} model trainings), "
        f"classifiers {sum(p.classifier_images for p in todo):,} image passes, "
        f"sampling {sum(p.unet_evals for p in todo):,} UNet evaluations (N_G per scale: {', '.join(f'{k}: {v:,}' for k, v in suite_obj.n_generations.items())})"
    )
    dim, size = feature_dim(suite_obj, registry), image_size(suite_obj)
    largest = max((p.scale for p in todo), default=0)
    console.print(
        f"k-NN: {sum(p.knn_pairs for p in todo):,} candidate x training-image distances of {dim:,} features "
        f"({2.0 * sum(p.knn_pairs for p in todo) * dim / 1e12:,.1f} TFLOP); the largest training set, "
        f"{largest:,} x {dim:,} in float32, is {largest * dim * 4 / 2**30:,.1f} GiB, held once (torch backend) "
        "and searched in query chunks of 256 MiB", soft_wrap=True)
    estimates = {kind: estimate(suite_obj, planned, kind, registry) for kind in ("cuda", "cpu")}
    parts = [f"about {_duration(e['seconds'], gpu=kind == 'cuda')} on {e['label']} ({e['unet_rate']:,.2f} UNet image-steps/s at "
             f"{size} px, {e['how']})" for kind, e in estimates.items()]
    source = throughput_file(registry)
    console.print(f"estimated time: {'; '.join(parts)}; rates from "
                  f"{source.name if source else 'built-in constants'} (rough: a factor of a few)", soft_wrap=True)
    seconds = estimates["cuda" if device.startswith("cuda") else "cpu"]["seconds"]
    settings = suite_obj.dataset.settings if isinstance(suite_obj.dataset.settings, dict) else {}
    if "root" in settings and not settings.get("root") and not settings.get("train") \
            and not os.environ.get("SIDE_BENCH_DATA_ROOT"):  # (named training files need no root)
        console.print(f"no data root: the published sizes of dataset {suite_obj.dataset.name!r} were used; a run "
                      "needs --data-root DIR (and its config hashes include the root)", soft_wrap=True)
    warning = None
    if seconds > WARN_SECONDS:
        warning = (f"{suite_obj.name}: about {_duration(seconds)} of work on {device}, far beyond a day on one "
                   "machine; check n_generations, scales and training steps")
    return {"seconds": seconds, "warning": warning, "warnings": list(suite_obj.warnings)}
