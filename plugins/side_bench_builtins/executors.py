"""Executors: ``local`` runs cells one after another in this process; ``ray`` runs each cell
as a Ray task (a local Ray instance, or a cluster at ``address``), one GPU per task on CUDA.

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
    parallelism = 1  # the runner claims one cell at a time, so two processes share the work

    def run(self, cells, run_cell, on_done):
        for cell in cells:
            on_done(run_cell(cell))


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
