"""Executors: ``local`` runs cells one after another in this process, or in ``workers``
processes of this machine (``side-bench run --workers N``); ``ray`` runs each cell as a Ray
task (a local Ray instance, or a cluster at ``address``), one GPU per task on CUDA.

Both receive the same picklable ``run_cell`` (``side_bench.run.runner.CellRunner``) and call
``on_done`` in this process, so results land in the same store the same way: the rows are
identical whichever executor ran them (same device, same versions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from side_bench.plugin_api import BenchError, failure_record, hookimpl, one_line

# Environment a Ray worker needs to see the same plugins, data and cache as the driver.
FORWARDED_ENV = ("SIDE_BENCH_PLUGINS", "SIDE_BENCH_DATA_ROOT", "SIDE_BENCH_CACHE")


class LocalExecutor:
    """One cell at a time in this process, or ``workers`` > 1 processes each computing whole
    cells with this process's torch thread count (one by default): a cell is computed by one
    process with one thread count either way, so its rows are bit-identical to one worker's.
    Workers share the run folder and the cache (a model is trained once, under ``cache_lock``);
    which cell an idle worker takes is ``ModelQueue``'s choice, so that distinct models train
    side by side and no worker waits on another's model."""

    workers = 1  # the runner sets it (run_suite(workers=...), side-bench run --workers)

    @property
    def parallelism(self):
        # one worker: one claimed cell at a time, so two processes on one run folder share the
        # work; several: every free cell at once, handed to the next idle worker
        return 1 if self.workers <= 1 else None

    def run(self, cells, run_cell, on_done):
        if self.workers <= 1 or len(cells) <= 1:
            for cell in cells:
                on_done(run_cell(cell))
            return
        _run_in_workers(cells, run_cell, on_done, min(self.workers, len(cells)))


# -- worker processes of the local executor ---------------------------------------------------

class ModelQueue:
    """Which waiting cell an idle worker takes next.

    Cells that share a target model (``model_of(cell)``, the same key) would all reach the
    model's cache lock at once, and every worker but the one training it would wait there
    idle. So a model is *unbuilt* (no cell has asked for it yet), *building* (one running cell
    trains or loads it) or *ready*, and a worker takes the first waiting cell, in the suite's
    order, whose model is unbuilt or ready: a cell of a model being built waits in the queue,
    not in a worker, while the worker trains another model or samples from a ready one. The
    model is ready when the runner reports that the cell's target stage is over (``ready``),
    or when that cell finishes; if it failed before that, the next cell of the model builds
    it. A cell without a key (``model_of`` None or absent) can always be taken.

    An unbuilt model's cell goes first: training is the long part of a cell (minutes against
    seconds of sampling at the quickstart's sizes), so starting every model's training as
    early as a worker is free shortens the run, and the ready models' cells fill the workers
    while the last ones train.
    """

    def __init__(self, cells, model_of=None):
        self.waiting = list(cells)
        self._model = {cell.config_hash: model_of(cell) if model_of else None for cell in self.waiting}
        self._building: dict[str, str] = {}  # model -> the config hash of the cell building it
        self._ready: set[str] = set()

    def take(self):
        """The next cell a worker may run without waiting, or None (all wait on models being
        built): the first whose model is unbuilt, else the first whose model is ready."""
        unbuilt = ready = None
        for position, cell in enumerate(self.waiting):
            model = self._model[cell.config_hash]
            if model is None or model in self._ready:
                ready = position if ready is None else ready
            elif model not in self._building:
                unbuilt = position
                self._building[model] = cell.config_hash
                break
        chosen = unbuilt if unbuilt is not None else ready
        return None if chosen is None else self.waiting.pop(chosen)

    def ready(self, config_hash: str) -> None:
        """The target model of cell ``config_hash`` is trained (or loaded): its cells may run."""
        model = self._model.get(config_hash)
        if model is not None:
            self._ready.add(model)
            self._building.pop(model, None)

    def finished(self, config_hash: str, done: bool) -> None:
        """Cell ``config_hash`` ended (``done``: it computed its rows, so its model exists)."""
        model = self._model.get(config_hash)
        if done:
            self.ready(config_hash)
        elif model is not None and self._building.get(model) == config_hash:
            del self._building[model]  # failed before its model was ready: another cell tries

_worker_runner = None  # in a worker: the CellRunner it received once, with its per-scale caches


def _worker_start(run_cell, threads, messages, counter):
    """A worker's initializer: one runner for all its cells, so a scale's split, reference and
    null baseline are built once per worker rather than once per cell."""
    import signal

    import torch

    global _worker_runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    torch.set_num_threads(threads)
    with counter.get_lock():
        counter.value += 1
        worker = counter.value

    def progress(stage, done, total):
        messages.put(("progress", worker, stage, done, total))

    def target_ready(config_hash):
        messages.put(("target-ready", config_hash))

    run_cell.progress = progress
    run_cell.target_ready = target_ready
    _worker_runner = run_cell


def _worker_cell(cell):
    return _worker_runner(cell)


def _run_in_workers(cells, run_cell, on_done, workers: int) -> None:
    """Run ``cells`` in ``workers`` spawned processes; ``on_done`` here as each finishes.

    Spawned, not forked: a fork of a process whose torch thread pool has started can hang,
    and a spawned worker imports only what a cell needs. A cell is handed to a worker only
    when one is idle, chosen by ``ModelQueue`` (``run_cell.model_of``). Progress and "this
    cell's target model is ready" come back over a queue; progress reaches
    ``run_cell.progress`` as "w<k> <stage>", one line of bars per worker.
    """
    import concurrent.futures
    import multiprocessing
    import queue
    from concurrent.futures.process import BrokenProcessPool

    import torch

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    counter = context.Value("i", 0)
    forward = getattr(run_cell, "progress", None)
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_start,
        initargs=(run_cell, torch.get_num_threads(), messages, counter))

    waiting = ModelQueue(cells, getattr(run_cell, "model_of", None))

    def drain():
        while True:
            try:
                message = messages.get_nowait()
            except queue.Empty:
                return
            if message[0] == "target-ready":
                waiting.ready(message[1])
            elif forward is not None:
                _, worker, stage, done, total = message
                forward(f"w{worker} {stage}", done, total)

    pending = {}  # running cells: never more than there are workers, so each one runs at once

    def lost(cell, error):  # the worker died (killed, out of memory): the cell's failure
        waiting.finished(cell.config_hash, False)
        on_done(failure_record(cell, f"{type(error).__name__}: worker process lost: {one_line(error, 400)}",
                               repr(error)))

    def hand_out():
        while len(pending) < workers:
            cell = waiting.take()
            if cell is None:
                return
            try:
                pending[pool.submit(_worker_cell, cell)] = cell
            except BrokenProcessPool as error:  # a worker died earlier
                lost(cell, error)

    try:
        hand_out()
        while pending:
            finished, _ = concurrent.futures.wait(pending, timeout=0.2,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            drain()
            for future in finished:
                cell = pending.pop(future)
                try:
                    record = future.result()
                except Exception as error:
                    lost(cell, error)
                    continue
                waiting.finished(cell.config_hash, record.get("status") == "done")
                on_done(record)
            hand_out()
    finally:
        # fail-fast or Ctrl-C: cells not started are dropped, running ones are stopped (their
        # locks are released by the runner; a rerun computes them)
        for future in pending:
            future.cancel()
        for process in list(getattr(pool, "_processes", {}).values()) if pending else []:
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        drain()


def _run_cell_task(run_cell, cell, threads):
    import torch

    torch.set_num_threads(threads)  # Ray would leave one thread per task CPU
    return run_cell(cell)


class RayExecutor:
    """Each cell is a Ray task. ``address``: "" starts (and stops) a Ray instance on this
    machine; "auto", "HOST:PORT" or "ray://HOST:PORT" joins a running cluster, whose workers
    need side-bench (and any plugins) installed and the results folder's data readable."""

    @dataclass
    class Settings:
        address: str = ""
        cpus_per_task: float = 1.0
        gpus_per_task: float = -1.0  # -1: 1 when the run's device is cuda, else 0
        num_cpus: int = 0  # for a Ray instance started here: CPUs it may use (0: all)
        # torch threads in a task; 0: as many as this process uses, because on CPU the thread
        # count changes float reductions, and rows must equal the local executor's bit for bit
        threads_per_task: int = 0

        def validate(self, where: str) -> None:
            if self.cpus_per_task <= 0:
                raise BenchError(f"{where}: cpus_per_task: expected > 0, got {self.cpus_per_task}")
            if self.num_cpus < 0 or self.threads_per_task < 0:
                raise BenchError(f"{where}: num_cpus and threads_per_task: expected >= 0")

    parallelism = None  # every claimed cell is submitted at once; Ray schedules them

    def __init__(self, settings: RayExecutor.Settings | None = None):
        self.settings = settings or RayExecutor.Settings()
        try:
            import ray  # noqa: F401
        except ImportError as error:
            raise BenchError("executor 'ray' needs Ray: pip install 'side-bench[ray]'") from error

    def _connect(self):
        import ray

        if ray.is_initialized():
            return False
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        options = dict(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env} if env else None)
        if self.settings.address:
            options["address"] = self.settings.address
        elif self.settings.num_cpus:
            options["num_cpus"] = self.settings.num_cpus
        try:
            ray.init(**options)
        except (ConnectionError, ValueError, RuntimeError) as error:
            where = self.settings.address or "a local Ray instance"
            raise BenchError(f"--executor ray: cannot connect to {where}: {' '.join(str(error).split())[:200]}") from error
        return True

    def run(self, cells, run_cell, on_done):
        if not cells:
            return
        import ray

        started_here = self._connect()
        device = str(getattr(run_cell, "device", "cpu"))
        gpus = self.settings.gpus_per_task
        if gpus < 0:
            gpus = 1.0 if device.startswith("cuda") else 0.0
        task = ray.remote(num_cpus=self.settings.cpus_per_task, num_gpus=gpus, max_retries=0)(_run_cell_task)
        import torch

        threads = self.settings.threads_per_task or torch.get_num_threads()
        shipped = ray.put(run_cell)
        pending = {task.remote(shipped, cell, threads): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayError as error:  # the worker died: record it as the cell's failure
                        record = failure_record(cell, f"{type(error).__name__}: {one_line(error, 500)}", str(error))
                    on_done(record)
        finally:
            for ref in pending:  # fail-fast or Ctrl-C: do not leave work running
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


@hookimpl
def register_executors(register):
    register("local", LocalExecutor)
    register("ray", RayExecutor)
