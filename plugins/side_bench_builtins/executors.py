"""The ``local`` executor: cells one after another in this process."""

from side_bench.hookspecs import hookimpl


class LocalExecutor:
    def run(self, cells, run_cell, on_done):
        for cell in cells:
            on_done(run_cell(cell))


@hookimpl
def register_executors(register):
    register("local", LocalExecutor)
