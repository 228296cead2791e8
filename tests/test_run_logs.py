"""`side-bench run` into a log (no terminal): a progress line per stage at most every 30 s (what,
how far, time left), lines never wrapped at 80 columns, and the leaderboard command at the end."""

from __future__ import annotations

import re
import shlex

from click.testing import CliRunner

from side_bench import progress as progress_module
from side_bench.cli import main
from side_bench.progress import LogProgress, duration


class Lines:
    """A console that keeps what it is asked to print."""

    def __init__(self):
        self.lines: list[str] = []

    def print(self, text, **_options):
        self.lines.append(text)


def test_a_stage_prints_a_line_at_most_every_interval_with_how_far_and_time_left():
    now = [0.0]
    console = Lines()
    bars = LogProgress("a column", console=console, interval=30, clock=lambda: now[0])
    cells = bars.add_task("cells", total=4)
    sampling = bars.add_task("  sampling", total=1000)
    for t, done in ((10, 100), (29.9, 300)):  # under 30 s since the stage began: nothing
        now[0] = t
        bars.update(sampling, completed=done, total=1000, description="  sampling")
    assert console.lines == []
    now[0] = 31
    bars.update(sampling, completed=500, total=1000)
    # 500 done in 31 s: 500 more take 31 s
    assert console.lines == ["sampling: 500 of 1,000 (50%), 31s elapsed, about 31s left"]
    now[0] = 45  # 14 s after that line: nothing
    bars.update(sampling, completed=600)
    now[0] = 62
    bars.update(sampling, completed=800)  # 800 in 62 s: 200 more take 15.5 s -> 16 s
    assert console.lines[1:] == ["sampling: 800 of 1,000 (80%), 1m02s elapsed, about 16s left"]
    bars.advance(cells)  # the cell count: the CLI prints each cell's own line
    assert len(console.lines) == 2
    bars.remove_task(sampling)
    bars.update(sampling, completed=900)  # a removed stage says nothing
    assert len(console.lines) == 2


def test_the_rate_counts_from_where_a_stage_was_when_it_began():
    now = [100.0]
    console = Lines()
    bars = LogProgress(console=console, interval=30, clock=lambda: now[0])
    task = bars.add_task("training", total=2000, completed=1000)  # resumed half-way
    now[0] = 130
    bars.update(task, completed=1000)  # no step yet: no rate
    now[0] = 160
    bars.update(task, completed=1500)  # 500 steps in 60 s: 500 more take 60 s
    assert console.lines == ["training: 1,000 of 2,000 (50%), 30s elapsed, time left not known yet",
                             "training: 1,500 of 2,000 (75%), 1m00s elapsed, about 1m00s left"]


def test_durations():
    assert [duration(s) for s in (0, 44.6, 60, 252, 3599, 3600, 3720, 90000)] == [
        "0s", "45s", "1m00s", "4m12s", "59m59s", "1h00m", "1h02m", "25h00m"]


def test_a_run_into_a_log_prints_progress_lines_whole_lines_and_the_leaderboard_command(write_suite, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_SECONDS", 0)  # every update a line, to see them
    results = tmp_path / ("results-" + "long" * 20)  # every line naming it is longer than 80 columns
    suite = write_suite()
    result = CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(results),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    run_dir = next((results / "tiny").iterdir())
    header = f"{suite}: 2 cells (0 already done) -> {run_dir}"
    assert len(header) > 80 and header in lines  # whole, on one line
    assert f"finished in {lines[-2].split('finished in ')[1].split('s;')[0]}s; rows in {run_dir / 'rows.jsonl'}" \
        in lines
    # the model trains 12 steps (the tiny suite): its lines say how far, and how long it has left
    training = [line for line in lines if line.startswith("training: ")]
    assert training and all(re.fullmatch(r"training: \d+ of 12 \(\d+%\), \d+s elapsed, "
                                         r"(about \d+s left|time left not known yet)", line) for line in training)
    assert any(line.startswith("sampling: ") for line in lines)
    assert not any("━" in line for line in lines)  # no progress bars in a log
    # the run ends with the command that makes its leaderboard, and that command works
    assert lines[-1] == f"leaderboard: side-bench leaderboard {shlex.quote(str(run_dir))}"
    command = shlex.split(lines[-1].removeprefix("leaderboard: "))
    assert command[:2] == ["side-bench", "leaderboard"]
    board = CliRunner().invoke(main, command[1:])
    assert board.exit_code == 0 and board.stdout.startswith("# side-bench leaderboard")
