"""``side-bench audit``: one diffusers model, the images it was trained on and images it never saw,
audited with a default suite (library code: returns data, prints nothing; the CLI prints).

The audit is an ordinary suite, written out as ``OUT/audit.toml`` so that it can be edited and
run again with ``side-bench run --suite OUT/audit.toml --results OUT``:

- the data set is ``image-folder`` with ``train`` and ``heldout`` named (every training image
  is scored against; the null baseline is exactly the held-out images), its ``channels`` and
  ``image_size`` taken from the model's config, never from a default;
- the model is ``diffusers`` at ``--model``, loaded as it is (nothing is trained);
- the attacks are named as the built-in suites name them (``uncond``, ``side``, ``cond``), at
  the settings ``benchmarks/digits-scales.toml`` uses (SIDE's were chosen on 8x8 digits: a
  starting point, not tuned for another model), with ``--ddim-steps`` for every sampler;
- the metrics are Gu et al.'s copy test (the headline), AMS and UMS in the feature space's
  bands, the 95th percentile and, for an unconditional model, the membership attacks.

``plan_audit`` validates all of it (the suite's own checks included: model and data shape,
every image decoding, train and held-out sharing an image) and writes nothing; ``write_suite``
writes the TOML; the runner runs the run ``plan_audit`` prepared (``run_prepared``, as the CLI's
``run`` does, without validating again); ``finish_audit``
builds the page ``OUT/index.html`` (``report/audit.py``). ``audit`` does the four in a row.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from side_bench.errors import BenchError, resolve_device
from side_bench.registry import Registry, load_registry
from side_bench.results.store import atomic_write, check_writable
from side_bench.run.prepared import PreparedRun, for_executor, prepare_run
from side_bench.run.suite import MAX_GENERATIONS, Cell, Suite, parse_suite

WHERE = "side-bench audit"  # how errors found while validating name the audit (no suite file yet)
SUITE_NAME = "audit"  # the run folder is OUT/audit/<run-id>/, as `run --suite OUT/audit.toml --results OUT` makes it
SUITE_FILE = "audit.toml"
GALLERY_SIZE = 16  # the most similar generations shown beside their nearest training images
COPY_METRIC = "gu-ratio"  # the answer's copy test: nearest / second-nearest pixel distance < 1/3
MEMBERSHIP = ("loss", "secmi", "pia", "pian", "sima")

# The attacks an audit can run, named and set as in benchmarks/digits-scales.toml (the
# sampler's ddim_steps is --ddim-steps). SIDE's settings were chosen there for 8x8 digits.
ATTACKS: dict[str, dict[str, Any]] = {
    "uncond": {"condition": "none", "extractor": "sample", "extractor_settings": {},
               "about": "Carlini et al.'s UnCond: plain sampling of the model"},
    "side": {"condition": "surrogate", "extractor": "side",
             "condition_settings": {"clusters": 20, "tau": 0.5, "n_syn": 1000, "dropped": "relabel"},
             "extractor_settings": {"guidance_scale": 3.0, "classifier_steps": 240, "classifier_holdout": 0.0},
             "about": "SIDE: a classifier trained on clusters of the model's own generations guides it "
                      "(K = 20 clusters of 1,000 generations, lambda = 3, 240 classifier steps: the settings "
                      "chosen on 8x8 digits, a starting point)"},
    "cond": {"condition": "informative", "extractor": "classifier-guidance",
             "condition_settings": {"conditional_target": False},
             "extractor_settings": {"guidance_scale": 1.0, "classifier_steps": 30, "classifier_holdout": 0.0},
             "about": "Carlini et al.'s Cond: a classifier of the training set's own labels (its class "
                      "subfolders) guides the model"},
}
DEFAULT_ATTACKS = ("uncond", "side")


@dataclass
class AuditPlan:
    """A validated audit: the suite it runs (``raw``, the TOML's contents), the run prepared
    from it (run/prepared.py: what the CLI and ``audit`` run, without preparing again) and
    where it goes."""

    raw: dict[str, Any]
    prepared: PreparedRun  # its suite's path is OUT/audit.toml, as a rerun from the file has it
    out: Path
    suite_file: Path  # OUT/audit.toml
    device: str
    model: Path
    model_shape: tuple[int, int, int]
    model_classes: int
    n_train: int
    n_heldout: int
    attacks: list[str]
    notes: list[str] = field(default_factory=list)  # what the audit chose and why

    @property
    def suite(self) -> Suite:
        return self.prepared.suite

    @property
    def cells(self) -> list[Cell]:
        return self.prepared.cells

    @property
    def run_dir(self) -> Path:  # OUT/audit/<run-id>
        return self.prepared.run_dir

    @property
    def warnings(self) -> list[str]:
        return list(self.suite.warnings)

    def toml(self) -> str:
        return suite_toml(self.raw, self.notes)


@dataclass
class AuditResult:
    plan: AuditPlan
    report: Any  # report.audit.AuditReport: the answer, the pairs, membership, next steps
    page: Path  # OUT/index.html


def _prefixed(build: Callable[[], Any], option: str):
    """Errors of a component built from an option, naming the option."""
    try:
        return build()
    except BenchError as error:
        text = str(error)
        raise BenchError(text if text.startswith(WHERE) else f"{WHERE}: {option}: {text}") from error


def plan_audit(model: str | Path, train: str | Path, heldout: str | Path, out: str | Path, *,
               attacks: list[str] | tuple[str, ...] | None = None, n_generations: int = 256,
               device: str = "cpu", ddim_steps: int = 50, seed: int = 0,
               settings: dict[str, dict[str, dict]] | None = None, gallery_size: int = GALLERY_SIZE,
               registry: Registry | None = None) -> AuditPlan:
    """Everything an audit will do, validated as a run validates a suite; nothing is written.

    ``attacks``: names from ``ATTACKS`` (default: uncond, and side for an unconditional model).
    ``settings``: per attack, settings over the defaults, e.g. ``{"side": {"condition_settings":
    {"n_syn": 64}, "extractor_settings": {"classifier_steps": 5}}}`` (what a test runs cheaply).
    """
    registry = registry or load_registry()
    resolve_device(device, "--device")
    for option, value, low in (("--n-generations", n_generations, 1), ("--ddim-steps", ddim_steps, 1),
                               ("seed", seed, 0), ("gallery_size", gallery_size, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise BenchError(f"{WHERE}: {option}: expected an integer >= {low}, got {value!r}")
    if n_generations > MAX_GENERATIONS:
        raise BenchError(f"{WHERE}: --n-generations: {n_generations:,} is more than {MAX_GENERATIONS:,}")
    out = check_writable(Path(out).expanduser(), "--out").resolve()
    if (out / "index.html").exists() and not (out / "audit.json").exists():  # someone's own page: never overwritten
        raise BenchError(f"{WHERE}: --out {out}: holds an index.html that is not an audit's page; give another folder")
    model_path = Path(model).expanduser().resolve()
    target = _prefixed(lambda: registry.build("models", "diffusers", {"path": str(model_path)}, f"{WHERE}: --model"),
                       "--model")
    channels, height, width = target.image_shape
    if height != width:
        raise BenchError(f"{WHERE}: --model: {model_path} makes {height}x{width} images; side-bench's data sets "
                         "make square ones")
    data_settings = {"train": str(Path(train).expanduser().resolve()),
                     "heldout": str(Path(heldout).expanduser().resolve()),
                     "image_size": height, "channels": channels}
    dataset = _prefixed(lambda: registry.build("datasets", "image-folder", data_settings, f"{WHERE}: [dataset]"),
                        "--train/--heldout")
    chosen, notes = _choose_attacks(attacks, target.num_classes, dataset.num_classes)
    raw = _suite(data_settings, str(model_path), chosen, n_train=dataset.fixed_scale, n_generations=n_generations,
                 ddim_steps=ddim_steps, seed=seed, conditional=bool(target.num_classes),
                 settings=settings or {}, gallery_size=gallery_size)
    if target.num_classes:
        notes.append(f"the model is class-conditional ({target.num_classes} classes): each generation's class is "
                     "drawn uniformly; the membership attacks score unconditional models only and are left out")
    # every check a run makes, before any cell; the suite named by the file it will be written to
    suite = dataclasses.replace(parse_suite(copy.deepcopy(raw), WHERE, registry), path=str(out / SUITE_FILE))
    prepared = prepare_run(suite, device=device, results_dir=out, registry=registry)
    return AuditPlan(raw=raw, prepared=prepared, out=out, suite_file=out / SUITE_FILE, device=device, model=model_path,
                     model_shape=(channels, height, width), model_classes=target.num_classes,
                     n_train=dataset.fixed_scale, n_heldout=dataset.heldout_size, attacks=chosen, notes=notes)


def _choose_attacks(asked, model_classes: int, data_classes: int) -> tuple[list[str], list[str]]:
    notes = []
    if not asked:
        chosen = [name for name in DEFAULT_ATTACKS if not (name == "side" and model_classes)]
        if model_classes:
            notes.append("side left out: SIDE guides an unconditional model, and this one is class-conditional")
        return chosen, notes
    chosen = []
    for name in asked:
        if name not in ATTACKS:
            raise BenchError(f"{WHERE}: --attack: unknown attack {name!r} (known: {', '.join(ATTACKS)})")
        if name in chosen:
            raise BenchError(f"{WHERE}: --attack: {name!r} is given twice")
        if name in ("side", "cond") and model_classes:
            raise BenchError(f"{WHERE}: --attack {name}: guides an unconditional model; this one is class-conditional "
                             f"({model_classes} classes in its config's num_class_embeds): use --attack uncond")
        if name == "cond" and not data_classes:
            raise BenchError(f"{WHERE}: --attack cond: needs the training images' labels (class subfolders of "
                             "--train, e.g. train/cat/*.png); --train has none")
        chosen.append(name)
    return chosen, notes


def _suite(data_settings: dict, model: str, attacks: list[str], *, n_train: int, n_generations: int,
           ddim_steps: int, seed: int, conditional: bool, settings: dict, gallery_size: int) -> dict[str, Any]:
    """The audit's suite, as its TOML file holds it."""
    unknown = sorted(set(settings) - set(attacks))
    if unknown:
        raise BenchError(f"{WHERE}: settings for {unknown[0]!r}, which this audit does not run ({', '.join(attacks)})")
    metrics: list[Any] = [COPY_METRIC, "ams", "ums", "p95"]
    if not conditional:  # membership leakage: members = the training set, non-members = the held-out images
        metrics += list(MEMBERSHIP)
        metrics += [{"name": name, "id": f"{name} (tpr@1%)", "report": "tpr@1%"} for name in MEMBERSHIP]
    tables = []
    for name in attacks:
        spec = ATTACKS[name]
        table: dict[str, Any] = {"name": name, "condition": spec["condition"], "extractor": spec["extractor"]}
        condition = dict(spec.get("condition_settings", {}))
        if spec["condition"] == "surrogate":
            condition["ddim_steps"] = ddim_steps  # the pool it clusters is sampled like the candidates
        extractor = {"ddim_steps": ddim_steps, **spec["extractor_settings"]}
        overrides = settings.get(name, {})
        extra = sorted(set(overrides) - {"condition_settings", "extractor_settings"})
        if extra:
            raise BenchError(f"{WHERE}: settings.{name}: unknown key {extra[0]!r} (expected condition_settings, "
                             "extractor_settings)")
        condition.update(overrides.get("condition_settings", {}))
        extractor.update(overrides.get("extractor_settings", {}))
        if condition:
            table["condition_settings"] = condition
        table["extractor_settings"] = extractor
        tables.append(table)
    return {
        "name": SUITE_NAME,
        "description": f"side-bench audit of {model}: does it copy its training images?",
        "scales": [n_train], "seeds": [seed], "n_generations": n_generations,
        "headline": COPY_METRIC, "metrics": metrics, "features": "pixel", "gallery_size": gallery_size,
        "dataset": {"name": "image-folder", **data_settings},
        "model": {"name": "diffusers", "path": model},
        "attacks": tables,
    }


# ------------------------------------------------------------------------------------------
# The suite as TOML (a small writer: the standard library reads TOML but does not write it)
# ------------------------------------------------------------------------------------------

def _key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() and key.isascii() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BenchError(f"{WHERE}: a setting of {value} cannot be written to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    raise BenchError(f"{WHERE}: cannot write {value!r} to TOML")


def suite_toml(raw: dict[str, Any], notes: list[str] = ()) -> str:
    """The audit's suite as TOML, with comments on what to edit; read back, it is ``raw``."""
    lines = ["# Written by side-bench audit. Edit and run again:",
             f"#   side-bench run --suite {SUITE_FILE} --results .   (from this folder)",
             "# SIDE's settings are the ones chosen for 8x8 digits (benchmarks/digits-scales.toml): a starting",
             "# point. More generations (n_generations) narrow every interval.",
             *(f"# note: {note}" for note in notes), ""]
    for key in ("name", "description", "scales", "seeds", "n_generations", "headline", "features", "gallery_size"):
        lines.append(f"{key} = {_value(raw[key])}")
    lines.append("metrics = [")
    lines += [f"  {_value(metric)}," for metric in raw["metrics"]]
    lines += ["]", "", "[dataset]   # train: the model's training images; heldout: images it never saw (the null)"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in raw["dataset"].items()]
    lines += ["", "[model]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in raw["model"].items()]
    for table in raw["attacks"]:
        lines += ["", "[[attacks]]" + (f"   # {ATTACKS[table['name']]['about']}" if table["name"] in ATTACKS else "")]
        lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != raw:  # the writer above covers what an audit writes; never a silent change
        raise BenchError(f"{WHERE}: the suite does not survive being written as TOML (a bug: please report it)")
    return text


def write_suite(plan: AuditPlan) -> Path:
    """OUT/audit.toml (OUT made if needed): the suite the audit runs."""
    atomic_write(plan.suite_file, plan.toml())
    return plan.suite_file


def finish_audit(plan: AuditPlan):
    """The page OUT/index.html (and OUT/audit.json) from the run's rows and records."""
    from side_bench.report.audit import write_audit_page

    report = write_audit_page(plan)
    return AuditResult(plan=plan, report=report, page=plan.out / "index.html")


def audit(model: str | Path, train: str | Path, heldout: str | Path, out: str | Path, *,
          cache_dir: str | Path | None = None, threads: int | None = 1,
          progress: Callable[[str, int, int], None] | None = None,
          on_cell: Callable[[Cell, dict], None] | None = None, **options) -> AuditResult:
    """Audit a diffusers model folder: validate (``plan_audit``; ``options`` are its keywords),
    write OUT/audit.toml, run it into OUT/audit/<run-id>/ and write the page OUT/index.html."""
    from side_bench.run.runner import run_prepared

    plan = plan_audit(model, train, heldout, out, **options)
    write_suite(plan)
    run_prepared(for_executor(plan.prepared, "local", threads=threads), cache_dir=cache_dir, progress=progress,
                 on_cell=on_cell)
    return finish_audit(plan)
