"""A run prepared once: ``PreparedRun``, what every way of running a suite builds and then holds.

``side-bench run`` (and its ``--dry-run``), ``side-bench audit`` and the Python API
(``run_suite``, ``audit``) each call ``prepare_run`` once: the suite parsed and validated, the
registry it was validated with, the cells and their config hashes (this installation's
``versions``, each cell holding those it uses), a shared-targets pack checked against them, the
run folder chosen, and, for a run that will execute, the executor built and its worker count
resolved. Nothing is written. The runner (``runner.run_prepared``) and the dry run
(``dryrun.plan``) take the ``PreparedRun`` and never prepare again, so the CLI and the API
prepare the same thing (``tests/test_prepared_run.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from side_bench.errors import BenchError, resolve_device
from side_bench.registry import Registry, load_registry
from side_bench.results.store import RunStore
from side_bench.run.suite import Cell, Suite, check_data_root, default_run_id, expand_cells, load_suite, safe_name

# The packages whose installed versions a manifest and every row record; a cell's config (its
# hash) holds those it uses (run/suite.py cell_versions: faiss, an optional extra, only where used).
VERSIONED_PACKAGES = ("side-bench", "torch", "diffusers", "numpy", "scikit-learn", "faiss-cpu", "faiss-gpu")


def versions() -> dict[str, str]:
    """The installed versions of ``VERSIONED_PACKAGES`` and Python."""
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


@dataclass
class PreparedRun:
    """A suite validated and laid out for one device and run folder; nothing written yet."""

    suite: Suite
    registry: Registry  # the registry the suite was validated with: the runner builds from it
    cells: list[Cell]
    store: RunStore  # the run folder (RunStore writes nothing until asked)
    device: str
    targets: Path | None = None  # a shared-targets pack, checked against every cell
    executor: str | None = None  # None: prepared to be planned (a dry run), not run
    executor_settings: dict[str, Any] = field(default_factory=dict)
    executor_obj: Any = None  # the executor plugin, built with its settings checked
    workers: int = 1  # the local executor's processes, "auto" resolved
    threads: int | None = 1  # torch threads on CPU (0 or None: torch's own)
    checks: tuple[str, ...] = ()  # what was checked, in order (suite, device, targets, data root, ...)

    @property
    def run_dir(self) -> Path:
        return self.store.run_dir

    def cells_done(self) -> int:
        """Cells already done in the run folder (read now: another process may finish some)."""
        return sum(self.store.is_done(cell.config_hash) for cell in self.cells)


def suite_cells(suite: Suite, device: str, registry: Registry, *, every_package: bool = False) -> list[Cell]:
    """The cells of a validated suite on ``device``, with this installation's versions
    (``every_package``: all of them in every cell, as before issue 30)."""
    features = registry.build("features", suite.features.name, suite.features.settings)
    return expand_cells(suite, versions=versions(), device=torch.device(device).type,
                        features_identity=features.identity, every_package=every_package)


def _cells_and_run_id(suite: Suite, device: str, registry: Registry, results_dir: Path, run_id: str | None,
                      targets: str | Path | None) -> tuple[list[Cell], str]:
    """The cells and the run folder's name. The default name leaves plugin provenance out, so
    that after a plugin changes a rerun lands in the same folder and recomputes only the cells
    that use it.

    Before issue 30 every cell's config held the version of every installed package, faiss's
    included (``every_package``). Where the run folder holds cells configured that way (every
    committed run under results/ does), those configs are the cells, so a rerun of a published
    suite on the installation that made it still lands in its folder, with its cells done (or,
    as before, recomputed where a plugin they use changed: provenance is left out of the match,
    as it is of the default name)."""

    def without_plugins(config: dict) -> dict:
        return {key: value for key, value in config.items() if key != "plugins"}

    def laid_out(every_package: bool) -> list[Cell]:
        cells = suite_cells(suite, device, registry, every_package=every_package)
        if targets is not None:
            from side_bench.run.targets import cells_for_pack

            cells = cells_for_pack(targets, cells, registry)
        return cells

    cells = laid_out(every_package=False)
    legacy = laid_out(every_package=True)
    if [c.config_hash for c in legacy] != [c.config_hash for c in cells]:
        store = RunStore(results_dir / suite.name / (run_id or default_run_id(legacy)))
        wanted = [without_plugins(cell.config) for cell in legacy]
        if any(isinstance(record.get("config"), dict) and without_plugins(record["config"]) in wanted
               for record in store.records()):
            return legacy, run_id or default_run_id(legacy)
    return cells, run_id or default_run_id(cells)


def prepare_run(suite: str | Suite, *, device: str = "cpu", results_dir: str | Path = "results",
                run_id: str | None = None, registry: Registry | None = None, targets: str | Path | None = None,
                executor: str | None = None, executor_settings: dict | None = None, workers: int | str = 1,
                threads: int | None = 1, data_root_given: bool = False) -> PreparedRun:
    """Validate everything and lay out the run; nothing is written. ``suite``: a registered
    name, a TOML path, or a suite parsed already (``parse_suite``: the audit's). With ``targets``
    (a shared-targets pack) every cell's model, file hashes and training subset are checked
    against it, and the pack enters the cells' configs (run/targets.py). ``executor``: build it
    and resolve ``workers`` (``for_executor``); None for a run that is only planned.
    ``data_root_given``: --data-root was given, so the data set must read one."""
    registry = registry or load_registry()
    suite_obj = suite if isinstance(suite, Suite) else load_suite(suite, registry)
    checks = ["suite"]
    resolve_device(device, "--device")
    checks.append("device")
    if run_id is not None:
        safe_name(run_id, "--run-id")
    cells, run_id = _cells_and_run_id(suite_obj, device, registry, Path(results_dir), run_id, targets)
    if targets is not None:
        checks.append("targets")
    if data_root_given:
        check_data_root(suite_obj, registry)
        checks.append("data root")
    prepared = PreparedRun(suite=suite_obj, registry=registry, cells=cells,
                           store=RunStore(Path(results_dir) / suite_obj.name / run_id), device=device,
                           targets=Path(targets) if targets is not None else None, checks=tuple(checks))
    if executor is None:
        return prepared
    return for_executor(prepared, executor, executor_settings, workers=workers, threads=threads)


def for_executor(prepared: PreparedRun, executor: str = "local", executor_settings: dict | None = None, *,
                 workers: int | str = 1, threads: int | None = 1) -> PreparedRun:
    """``prepared`` made ready to run: the executor built (its settings checked) and the worker
    count resolved ("auto": from the cells left to run), before any output."""
    settings = dict(executor_settings or {})
    executor_obj = prepared.registry.build("executors", executor, settings, where=f"--executor {executor}")
    left = len(prepared.cells) - prepared.cells_done() if workers == "auto" else 2
    count = set_workers(executor_obj, executor, workers, cells=left, device=prepared.device, threads=threads)
    return dataclasses.replace(prepared, executor=executor, executor_settings=settings, executor_obj=executor_obj,
                               workers=count, threads=threads, checks=(*prepared.checks, "executor", "workers"))


def cpu_cores() -> int:
    """The cores this process may use (its affinity), which a container may make fewer than the machine's."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(cells: int, device: str = "cpu", threads: int | None = 1) -> int:
    """``--workers auto``: on CPU, as many processes as the cores hold at ``threads`` threads
    each (one single-thread process per core by default; ``threads`` 0 or None: torch's own
    count), where more than one cell is to run; otherwise one. On CUDA one: the cells share
    one GPU, which a single process keeps busy at the sizes that need it."""
    if cells <= 1 or torch.device(device).type != "cpu":
        return 1
    per_process = threads or torch.get_num_threads()
    return max(1, min(cells, cpu_cores() // max(1, per_process)))


def set_workers(executor_obj, executor: str, workers: int | str, *, cells: int = 2, device: str = "cpu",
                threads: int | None = 1) -> int:
    """Give the executor its worker count (0: one per core; "auto": ``auto_workers`` for
    ``cells`` cells still to run on ``device`` at ``threads`` threads); only an executor with a
    ``workers`` attribute (the local one) takes one, Ray schedules its own tasks."""
    if workers == "auto":
        workers = auto_workers(cells, device, threads) if hasattr(executor_obj, "workers") else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise BenchError(f"--workers: expected 'auto', 0 (one per core) or a positive count, got {workers!r}")
    count = workers or cpu_cores()
    if not hasattr(executor_obj, "workers"):
        if workers != 1:
            raise BenchError(f"--workers: only for --executor local; --executor {executor} runs its own "
                             "processes (ray: its cpus_per_task setting)")
        return 1
    executor_obj.workers = count
    return count
