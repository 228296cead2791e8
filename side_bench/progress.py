"""Progress for output that is not a terminal: a log file, CI, ``nohup``.

On a terminal ``side-bench run`` redraws rich's progress bars in place. Written to a file
they would print nothing until the end (rich draws a non-terminal's bars once, when they
stop), so a log said nothing for the minutes a model trains. ``LogProgress`` takes the
bars' place there: the same calls, but each stage becomes a plain line, at most one every
``LOG_INTERVAL_SECONDS`` per stage, saying what runs, how far it is and how long it has
left at its rate so far. A stage that ends sooner prints nothing: the line the CLI prints
for each finished cell says it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

LOG_INTERVAL_SECONDS = 30.0


def duration(seconds: float) -> str:
    """'45s', '4m12s', '1h02m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    started: float  # when the task was added, and how far it was then: its rate is measured from there
    completed_at_start: float
    last_line: float  # when its last line was printed (or it was added)


class LogProgress:
    """The part of ``rich.progress.Progress`` the CLI's ``run`` uses (a context manager with
    ``add_task``, ``update``, ``advance``, ``remove_task`` and ``console``), as log lines.

    ``update`` prints a task's line when ``interval`` seconds (default ``LOG_INTERVAL_SECONDS``)
    have passed since its last one, or since it was added; ``advance`` (the run's cell count,
    whose every step the CLI reports itself) prints nothing. ``clock`` is for tests.
    """

    def __init__(self, *_columns, console, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, **_options):
        self.console = console
        self.interval = LOG_INTERVAL_SECONDS if interval is None else interval
        self._clock = clock
        self._tasks: dict[int, _Task] = {}
        self._next_id = 0

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **_fields) -> int:
        now = self._clock()
        task_id, self._next_id = self._next_id, self._next_id + 1
        self._tasks[task_id] = _Task(description, total, completed, now, completed, now)
        return task_id

    def update(self, task_id: int, *, completed: float | None = None, total: float | None = None,
               description: str | None = None, advance: float | None = None, **_fields) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        now = self._clock()
        if now - task.last_line >= self.interval:
            task.last_line = now
            self.console.print(self.line(task, now), markup=False, highlight=False, soft_wrap=True)

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self._tasks.get(task_id)
        if task is not None:
            task.completed += advance

    def remove_task(self, task_id: int) -> None:
        self._tasks.pop(task_id, None)

    @staticmethod
    def line(task: _Task, now: float) -> str:
        """'sampling: 500 of 1,000 (50%), 31s elapsed, about 31s left'."""
        what = task.description.strip() or "working"
        elapsed = now - task.started
        if not task.total:
            return f"{what}: {task.completed:,.0f} done, {duration(elapsed)} elapsed"
        share = 100 * task.completed / task.total
        done_here = task.completed - task.completed_at_start
        left = (f"about {duration((task.total - task.completed) * elapsed / done_here)} left"
                if done_here > 0 and elapsed > 0 else "time left not known yet")
        return (f"{what}: {task.completed:,.0f} of {task.total:,.0f} ({share:.0f}%), "
                f"{duration(elapsed)} elapsed, {left}")
