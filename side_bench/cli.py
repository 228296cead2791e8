"""The ``side-bench`` command line. Library code prints nothing; this module shows progress."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from side_bench.errors import BenchError

console = Console(stderr=True)
out = Console()


def user_errors(command):
    """BenchError -> one line on stderr and exit code 2, as the README promises."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BenchError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="side-bench")
def main():
    """side-bench: memorization in diffusion models, and the attacks that extract it."""


@main.command()
@click.option("--suite", default="quickstart", show_default=True, help="Registered suite name or path to a TOML file.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--results", "results_dir", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Trained models and classifiers (default: $SIDE_BENCH_CACHE or ~/.cache/side-bench).")
@click.option("--executor", default="local", show_default=True, help="local, or ray (pip install 'side-bench[ray]').")
@click.option("--address", default=None, help="--executor ray: a running Ray cluster (auto, HOST:PORT or ray://HOST:PORT); "
              "default: start Ray on this machine.")
@click.option("--run-id", default=None, help="Run folder name (default: derived from the suite's config).")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failing cell.")
@click.option("--data-root", default=None, envvar="SIDE_BENCH_DATA_ROOT", type=click.Path(file_okay=False),
              help="Local data for datasets that read files (celeba, image-folder) [env: SIDE_BENCH_DATA_ROOT].")
@click.option("--dry-run", is_flag=True, help="List the cells and their estimated cost; run and write nothing.")
@user_errors
def run(suite, device, results_dir, cache_dir, executor, address, run_id, fail_fast, data_root, dry_run):
    """Run a suite: train or load models, attack them, score, write results."""
    from side_bench.runner import CellFailed, prepare_run, run_suite

    if data_root:  # datasets read their root from the environment (their 'root' setting's default)
        os.environ["SIDE_BENCH_DATA_ROOT"] = str(Path(data_root).expanduser())
    if dry_run:
        from side_bench.dryrun import print_plan

        return print_plan(suite, device=device, results_dir=results_dir, run_id=run_id, console=out)

    _, cells, store = prepare_run(suite, device=device, results_dir=results_dir, run_id=run_id)
    executor_settings = {"address": address} if address else None
    from side_bench.registry import load_registry

    load_registry().build("executors", executor, executor_settings, where=f"--executor {executor}")  # refuse before output
    done_before = sum(store.is_done(c.config_hash) for c in cells)
    console.print(f"[bold]{suite}[/]: {len(cells)} cells ({done_before} already done) -> {store.run_dir}")
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bars:
        overall = bars.add_task("cells", total=len(cells), completed=done_before)
        stage_tasks: dict[str, int] = {}

        def progress(stage, done, total):
            task = stage_tasks.get(stage)
            if task is None:
                task = stage_tasks[stage] = bars.add_task(stage, total=total)
            bars.update(task, completed=done, total=total, description=f"  {stage}"[:28])

        def on_cell(cell, record):
            bars.advance(overall)
            # names like side[guidance_scale=3.0] must not be read as rich markup
            status = "[green]done[/]" if record["status"] == "done" else f"[red]failed[/]: {escape(record['error'])}"
            bars.console.print(f"{escape(cell.attack.name)} @ {cell.scale} seed {cell.seed}: {status} ({record['seconds']:.1f}s)")
            for task in stage_tasks.values():  # stage bars belong to the cell that just ended
                bars.remove_task(task)
            stage_tasks.clear()

        try:
            rows = run_suite(suite, device=device, results_dir=results_dir, cache_dir=cache_dir,
                             executor=executor, run_id=run_id, fail_fast=fail_fast,
                             executor_settings=executor_settings,
                             progress=progress, on_cell=on_cell)
        except CellFailed as failure:
            click.echo(f"error: {failure}\n{failure.record['traceback']}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted; finished cells are saved. Resume with the same command "
                       f"(cells done in {store.run_dir} are skipped).", err=True)
            sys.exit(130)
    console.print(f"finished in {time.perf_counter() - started:.1f}s; rows in {store.run_dir / 'rows.jsonl'}")
    failures = store.failures()
    if not rows.empty:
        _print_summary(store.rows())
    if failures:
        console.print(f"[red]{len(failures)} cell(s) failed[/]; tracebacks in {store.cells_dir}")
        sys.exit(1)


def _fmt(value) -> str:
    return "" if value is None or value != value else f"{value:.4f}"


def _print_summary(rows: list[dict]) -> None:
    table = Table(title="results (value | null baseline on held-out real images)")
    for column in ("scale", "attack", "seed", "metric", "band", "value", "null"):
        table.add_column(column, justify="right" if column in ("scale", "seed", "value", "null") else "left")
    for row in rows:
        table.add_row(str(row["scale"]), escape(row["attack"]), str(row["seed"]), row["metric"],
                      row["band"] or "", _fmt(row["value"]), _fmt(row.get("null_value")))
    out.print(table)


@main.command()
@user_errors
def plugins():
    """List installed plugins and what each registers."""
    from side_bench.registry import load_registry

    registry = load_registry()
    table = Table(title="side-bench plugins")
    for column in ("kind", "name", "aliases", "plugin"):
        table.add_column(column)
    for kind, entries in registry.by_kind.items():
        for name in sorted(entries):
            entry = entries[name]
            table.add_row(kind, name, ", ".join(entry.aliases), entry.plugin)
    out.print(table)


@main.command()
@user_errors
def suites():
    """List registered suites."""
    import tomllib

    from side_bench.registry import load_registry

    registry = load_registry()
    table = Table(title="suites")
    for column in ("name", "description", "path"):
        table.add_column(column)
    for name in registry.names("suites"):
        path = Path(registry.get("suites", name).component)
        try:
            description = tomllib.loads(path.read_text()).get("description", "")
        except (OSError, tomllib.TOMLDecodeError) as error:
            description = f"unreadable: {error}"
        table.add_row(name, description, str(path))
    out.print(table)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@user_errors
def show(run_dir):
    """Show the rows of a run folder as a table."""
    from side_bench.store import RunStore

    store = RunStore(Path(run_dir))
    if not (store.run_dir / "rows.jsonl").exists() and not store.cells_dir.exists():
        raise BenchError(f"{run_dir}: not a run folder (no rows.jsonl)")
    rows = store.rows()
    if rows:
        _print_summary(rows)
    else:
        out.print("no rows yet")
    for failure in store.failures():
        out.print(f"[red]failed[/] {escape(failure['attack'])} @ {failure['scale']} seed {failure['seed']}: {escape(failure['error'])}")


@main.command()
@click.option("--generated", required=True, help="Folder of PNG/JPEG images or .npy (N, C, H, W) in [0, 1].")
@click.option("--train", required=True, help="The training images, same forms.")
@click.option("--heldout", default=None, help="Held-out real images for the null baseline.")
@click.option("--features", default="pixel", show_default=True)
@click.option("--metrics", default="ams,ums,p95,gu-ratio", show_default=True, help="Comma-separated.")
@click.option("--knn", default="auto", show_default=True, type=click.Choice(["auto", "faiss", "torch"]))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@user_errors
def score(generated, train, heldout, features, metrics, knn, as_json):
    """Score images made elsewhere against a training set."""
    from side_bench.images import read_images
    from side_bench.runner import score_rows

    rows = score_rows(
        read_images(generated, "--generated"), read_images(train, "--train"),
        read_images(heldout, "--heldout") if heldout else None,
        features=features, metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()), knn=knn,
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"scores ({features} features)")
    for column in ("metric", "band", "value", "null"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["metric"], row["band"] or "", _fmt(row["value"]), _fmt(row.get("null_value")))
    out.print(table)


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--metric", default=None, help="Only this metric (e.g. ams).")
@click.option("--band", default=None, help="Only this band (e.g. mid).")
@click.option("--format", "formats", multiple=True, default=("md",), show_default=True,
              type=click.Choice(["md", "html", "csv", "json"]), help="Repeat for several: --format md --format html.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Folder for the files, plots and galleries (default: print md, csv or json).")
@click.option("--reported", multiple=True, type=click.Path(),
              help="Reported figures (JSON file or folder) shown in their own section "
                   "[default: results/reported if it exists].")
@user_errors
def leaderboard(results, metric, band, formats, out, reported):
    """Tables and plots across scales from run folders, suite folders or a results root."""
    from side_bench.report import write_report

    if not reported and Path("results/reported").is_dir():
        reported = ("results/reported",)
    written = write_report(results, formats=formats, out=out, metric=metric, band=band, reported=reported)
    for fmt, value in written.items():
        if out is None:
            click.echo(value, nl=False)
        else:
            console.print(f"{fmt}: {value}")
