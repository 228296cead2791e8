"""The local executor's ModelQueue: with several workers, no worker idles while a cell whose
model is ready or unbuilt is waiting; distinct models train side by side, each once.

A simulation with a slow fake trainer checks it step by step (and shows that handing out
cells in the suite's order, as before, leaves a worker waiting on another's model), then
real worker processes check the plumbing: the runner's "target ready" reaches the queue.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from side_bench.plugin_api import cache_lock
from side_bench_builtins.executors import ModelQueue, _run_in_workers


@dataclass(frozen=True)
class FakeCell:
    config_hash: str
    model: str


class SuiteOrder:
    """What the executor did before ModelQueue: every cell handed out in the suite's order."""

    def __init__(self, cells, model_of=None):
        self.waiting = list(cells)

    def take(self):
        return self.waiting.pop(0) if self.waiting else None

    def ready(self, config_hash):
        pass

    def finished(self, config_hash, done):
        pass


def simulate(cells, workers, queue, train=10, sample=1):
    """Whole time steps. A cell whose model is not in the cache takes the model's lock and
    trains it for ``train`` steps (then says so: ``queue.ready``), then samples for ``sample``
    steps; one whose model is cached samples at once; one whose model another worker is
    training waits for the lock, idle. After each hand-out, checks that no worker is idle
    while a waiting cell's model is ready or unbuilt, and that no worker waits on a lock.
    Returns ({cell: the step it finished}, [violations], {model: times trained})."""
    built, trained, lock_holder = set(), {}, {}
    running = {}  # worker -> [cell, phase ("train", "lock", "sample"), steps left]
    finished, violations = {}, []
    left = list(cells)
    for now in range(1000):
        for worker, state in list(running.items()):  # the step that ended at `now`
            cell, phase, steps = state
            if phase == "lock" and cell.model in built:
                state[1:] = ["sample", sample]
            elif phase in ("train", "sample"):
                state[2] = steps - 1
                if state[2] == 0 and phase == "train":
                    built.add(cell.model)
                    lock_holder.pop(cell.model)
                    queue.ready(cell.config_hash)
                    state[1:] = ["sample", sample]
                elif state[2] == 0:
                    finished[cell.config_hash] = now
                    queue.finished(cell.config_hash, True)
                    del running[worker]
        for worker in range(workers):  # idle workers take what the queue gives them
            if worker in running:
                continue
            cell = queue.take()
            if cell is None:
                break
            left.remove(cell)
            if cell.model in built:
                running[worker] = [cell, "sample", sample]
            elif cell.model in lock_holder:
                running[worker] = [cell, "lock", None]  # cache_lock: blocked behind another worker
            else:
                lock_holder[cell.model] = worker
                trained[cell.model] = trained.get(cell.model, 0) + 1
                running[worker] = [cell, "train", train]
        idle = workers - sum(state[1] != "lock" for state in running.values())
        takeable = [c.config_hash for c in left if c.model in built or c.model not in lock_holder]
        if idle and takeable:
            violations.append((now, f"{idle} worker(s) idle while {takeable} could run"))
        if not running and not left:
            return finished, violations, trained
    raise AssertionError("the simulation did not end")


CELLS = [FakeCell("a1", "A"), FakeCell("a2", "A"), FakeCell("a3", "A"), FakeCell("b1", "B")]


def test_a_second_worker_trains_another_model_instead_of_waiting():
    finished, violations, trained = simulate(CELLS, 2, ModelQueue(CELLS, lambda c: c.model))
    assert violations == []
    assert trained == {"A": 1, "B": 1}
    # by hand: a1 trains A in steps 0-10 and b1 trains B beside it; both sample to 11, then
    # a2 and a3 sample from the ready A to 12
    assert finished == {"a1": 11, "b1": 11, "a2": 12, "a3": 12}


def test_in_suite_order_the_second_worker_waits_on_the_first_s_model():
    # the check above can fail: this is what the executor did before
    finished, violations, trained = simulate(CELLS, 2, SuiteOrder(CELLS))
    assert violations and violations[0][0] == 0  # a2 waits on A's lock from the start
    assert finished == {"a1": 11, "a2": 11, "a3": 12, "b1": 22}  # B trained only after A: 22 steps, not 12


def test_ready_models_are_shared_and_many_models_fill_every_worker():
    cells = [FakeCell(f"{m.lower()}{i}", m) for m in "ABCD" for i in (1, 2, 3)]
    finished, violations, trained = simulate(cells, 3, ModelQueue(cells, lambda c: c.model), train=5, sample=2)
    assert violations == [] and trained == {m: 1 for m in "ABCD"}
    # by hand: a1, b1, c1 train A, B, C in steps 0-5 and sample to 7; then the unbuilt D goes
    # first (d1 trains to 12, samples to 14) beside a2, a3 (to 9), b2, b3 (to 11), c2, c3
    # (to 13); d2 and d3 then sample from the ready D to 15
    assert finished == {"a1": 7, "b1": 7, "c1": 7, "a2": 9, "a3": 9, "b2": 11, "b3": 11, "c2": 13, "c3": 13,
                        "d1": 14, "d2": 15, "d3": 15}


def test_a_model_whose_builder_failed_is_built_by_its_next_cell():
    queue = ModelQueue(CELLS, lambda c: c.model)
    assert [queue.take().config_hash, queue.take().config_hash, queue.take()] == ["a1", "b1", None]
    queue.finished("a1", False)  # failed before A was trained: A is unbuilt again
    assert queue.take().config_hash == "a2"
    assert queue.take() is None  # a3 waits for a2's A
    queue.ready("a2")
    assert queue.take().config_hash == "a3"
    # cells without a model key are always taken, in order
    free = ModelQueue(CELLS)
    assert [free.take().config_hash for _ in CELLS] == ["a1", "a2", "a3", "b1"]


# -- real worker processes with a slow fake trainer ---------------------------------------

@dataclass
class SlowTrainer:
    """A picklable stand-in for CellRunner: it trains a cell's model under the real cache
    lock, slowly: until a cell of another model has started (so the test ends as soon as two
    models train side by side, and fails after ``patience`` seconds if they never do)."""

    folder: str
    patience: float = 60.0
    progress: object = None
    target_ready: object = field(default=None, repr=False)

    def model_of(self, cell):
        return cell.model

    def log(self, what: str) -> None:
        with open(Path(self.folder) / "events.jsonl", "a") as handle:
            handle.write(json.dumps([time.monotonic(), what]) + "\n")

    def events(self) -> list[str]:
        lines = (Path(self.folder) / "events.jsonl").read_text().splitlines()
        return [what for _, what in sorted(json.loads(line) for line in lines)]

    def __call__(self, cell):
        self.log(f"start {cell.config_hash}")
        with cache_lock(Path(self.folder) / cell.model):
            built = Path(self.folder) / f"{cell.model}.built"
            if not built.exists():
                self.log(f"train {cell.model}")
                deadline = time.monotonic() + self.patience
                while time.monotonic() < deadline and not any(
                        what.startswith("start") and not what.startswith(f"start {cell.model.lower()}")
                        for what in self.events()):
                    time.sleep(0.05)
                built.touch()
                self.log(f"built {cell.model}")
        self.target_ready(cell.config_hash)
        return {"config_hash": cell.config_hash, "status": "done", "rows": [], "seconds": 0.0}


def test_worker_processes_train_two_models_side_by_side(tmp_path):
    trainer = SlowTrainer(str(tmp_path))
    done = []
    _run_in_workers(CELLS, trainer, lambda record: done.append(record["config_hash"]), 2)
    events = trainer.events()
    assert sorted(done) == ["a1", "a2", "a3", "b1"]
    # b1 started while A was training (in suite order a2 would have, and waited on A's lock)
    assert events.index("start b1") < events.index("built A")
    # A's other cells were handed out only once A was ready, and each model was trained once
    assert events.index("start a2") > events.index("built A") and events.index("start a3") > events.index("built A")
    assert events.count("train A") == events.count("train B") == 1
