"""The ``side-bench`` command line. Library code prints nothing; this module shows progress.

Start-up is kept short: torch, pandas and the plugins are imported inside the commands that
use them, so ``--help``, ``--version``, ``plugins`` and ``suites`` answer in well under a second.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import click

from side_bench.errors import BenchError


class _LazyConsole:
    """A rich Console made on first use (importing rich.console costs ~0.1 s)."""

    def __init__(self, **options):
        self._options = options
        self._console = None

    def real(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
            if not self._console.is_terminal:  # a log, CI, nohup: every line whole, not wrapped at 80 columns
                self._console.soft_wrap = True
        return self._console

    def __getattr__(self, name):
        return getattr(self.real(), name)


console = _LazyConsole(stderr=True)
out = _LazyConsole()
out_console = out  # for commands whose --out option shadows the name


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def Table(*args, **kwargs):  # noqa: N802 - rich's class, imported when a table is drawn
    from rich.table import Table as RichTable

    return RichTable(*args, **kwargs)


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


class BenchGroup(click.Group):
    """Click's own usage errors (unknown option, missing argument, bad choice) as one line,
    ``error: ...``, and exit code 2, like every other input error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            where = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            message = " ".join(error.format_message().split()).rstrip(".")
            click.echo(f"error: {message}{where}", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            click.echo(f"error: {' '.join(error.format_message().split())}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


class WorkersParam(click.ParamType):
    """``--workers``: "auto", or a count (0: one per core)."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        text = str(value).strip()
        if text == "auto":
            return text
        if text.isdigit():
            return int(text)
        self.fail(f"expected 'auto', 0 (one per core) or a positive count, got {value!r}", param, ctx)


WORKERS = WorkersParam()


@click.group(cls=BenchGroup)
@click.version_option(package_name="side-bench", prog_name="side-bench")
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
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="torch threads on CPU (0: torch's default). One is fastest on a busy machine and keeps "
                   "numbers bit-identical between machines with other core counts.")
@click.option("--workers", default="auto", show_default=True, type=WORKERS, envvar="SIDE_BENCH_WORKERS",
              help="--executor local: processes running cells side by side, each with --threads threads; "
                   "auto: one per core when more than one cell is left to run on CPU, else one; 0: one per "
                   "core. Rows are bit-identical to one worker's. Each holds its own copy of a scale's data "
                   "[env: SIDE_BENCH_WORKERS].")
@click.option("--targets", "targets", default=None, type=click.Path(file_okay=False),
              help="A shared-targets pack (side-bench targets export): attack its models, never train; "
                   "checked before any cell runs.")
@user_errors
def run(suite, device, results_dir, cache_dir, executor, address, run_id, fail_fast, data_root, dry_run, threads,
        workers, targets):
    """Run a suite: train or load models, attack them, score, write results."""
    from side_bench.results.store import check_writable
    from side_bench.run.suite import safe_name

    if run_id is not None:  # a folder under --results: never a path out of it
        safe_name(run_id, "--run-id")
    check_writable(results_dir, "--results")
    # Only an explicit --data-root is refused for a data set without a root (not the variable).
    data_root_given = bool(data_root) and click.get_current_context().get_parameter_source(
        "data_root") == click.core.ParameterSource.COMMANDLINE
    if data_root:  # datasets read their root from the environment (their 'root' setting's default)
        os.environ["SIDE_BENCH_DATA_ROOT"] = str(Path(data_root).expanduser())
    if dry_run and targets:
        raise BenchError("--targets: not with --dry-run (the plan counts the trainings a pack saves)")
    if dry_run:
        from side_bench.run.dryrun import prepare_plan

        _print_plan(prepare_plan(suite, device=device, results_dir=results_dir, run_id=run_id,
                                 data_root_given=data_root_given))
        return None

    from side_bench.run.prepared import prepare_run
    from side_bench.run.runner import default_cache_dir

    check_writable(cache_dir or default_cache_dir(), "--cache-dir")
    # refuse before output: the suite, the targets, --data-root, the executor's settings, and
    # --workers where it does not apply
    prepared = prepare_run(suite, device=device, results_dir=results_dir, run_id=run_id, targets=targets,
                           executor=executor, executor_settings={"address": address} if address else None,
                           workers=workers, threads=threads, data_root_given=data_root_given)
    _run_prepared(prepared, suite, cache_dir=cache_dir, fail_fast=fail_fast)


def _print_plan(prepared) -> None:
    """The dry run's table and totals (``run --dry-run``, ``audit --dry-run``), its warnings on stderr."""
    from side_bench.run.dryrun import print_plan

    estimate = print_plan(prepared, console=out)
    if estimate and estimate.get("warning"):  # the cost first: beyond a day is the one to see
        click.echo(f"warning: {estimate['warning']}", err=True)
    for warning in (estimate or {}).get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


def _run_prepared(prepared, label: str, *, cache_dir, fail_fast: bool = False) -> None:
    """Run a prepared run (``side-bench run``, ``audit``) with progress, then its summary and
    profile; exit 1 where a cell failed, 130 on an interrupt."""
    from side_bench.results.store import check_writable
    from side_bench.run.runner import CellFailed, run_prepared

    store, cells, suite_obj, targets, workers = (prepared.store, prepared.cells, prepared.suite, prepared.targets,
                                                 prepared.workers)
    check_writable(store.run_dir, "--results")
    done_before = prepared.cells_done()
    for warning in suite_obj.warnings:
        click.echo(f"warning: {warning}", err=True)
    console.print(f"[bold]{escape(label)}[/]: {len(cells)} cells ({done_before} already done) -> {store.run_dir}"
                  + (f" ({workers} workers)" if workers > 1 else "")
                  + (f"; targets from the pack {escape(str(targets))}, none trained" if targets else ""))
    if suite_obj.data_note:  # which images are the training set and which the null baseline
        console.print(f"data: {escape(suite_obj.data_note)}", soft_wrap=True)
    recomputed = _recomputed(store, cells)
    if recomputed:
        console.print(escape(recomputed))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from side_bench.progress import LogProgress

    started = time.perf_counter()
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # not a terminal: a line per stage at most every 30 s instead of bars a log would only get at the end
    bars_class = Progress if console.is_terminal else LogProgress
    with bars_class(*columns, console=console.real(), transient=False) as bars:
        overall = bars.add_task("cells", total=len(cells), completed=done_before)
        stage_tasks: dict[str, int] = {}

        def progress(stage, done, total):
            task = stage_tasks.get(stage)
            if task is None:
                task = stage_tasks[stage] = bars.add_task(stage, total=total)
            bars.update(task, completed=done, total=total, description=f"  {stage}"[:28])

        finished_here: list[dict] = []

        def on_cell(cell, record):
            finished_here.append(record)
            bars.advance(overall)
            # names like side[guidance_scale=3.0] must not be read as rich markup
            status = "[green]done[/]" if record["status"] == "done" else f"[red]failed[/]: {escape(record['error'])}"
            bars.console.print(f"{escape(cell.attack.name)} @ {cell.scale} seed {cell.seed}: {status} ({record['seconds']:.1f}s)")
            # stage bars belong to the cell that just ended (with workers, another worker's bar
            # comes back at its next update)
            for task in stage_tasks.values():
                bars.remove_task(task)
            stage_tasks.clear()

        try:
            rows = run_prepared(prepared, cache_dir=cache_dir, fail_fast=fail_fast, progress=progress,
                                on_cell=on_cell)
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
    _print_profile(finished_here)
    if failures:
        console.print(f"[red]{len(failures)} cell(s) failed[/]; tracebacks in {store.cells_dir}")
    if not rows.empty:  # the next step, ready to paste
        import shlex

        console.print(f"leaderboard: side-bench leaderboard {shlex.quote(str(store.run_dir))}", markup=False,
                      highlight=False, soft_wrap=True)
    if failures:
        sys.exit(1)


@main.command()
@click.option("--model", required=True, type=click.Path(), help="A diffusers model folder (DDPMPipeline.save_pretrained, "
              "or a flat UNet2DModel folder with scheduler_config.json): unconditional or class-conditional.")
@click.option("--train", required=True, type=click.Path(),
              help="The images the model was trained on: a folder (class subfolders give labels) or a text file "
                   "listing them.")
@click.option("--heldout", required=True, type=click.Path(),
              help="Images the model never saw (the null baseline): a folder or a text file listing them.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for audit.toml (the suite), the run folder and index.html (the page).")
@click.option("--attack", "attacks", multiple=True, metavar="NAME",
              help="An attack, as the built-in suites name them: uncond, side, cond (repeatable). "
                   "[default: uncond and side; uncond alone for a class-conditional model]")
@click.option("--n-generations", default=256, show_default=True, type=int, help="Generations per attack (N_G).")
@click.option("--ddim-steps", default=50, show_default=True, type=int, help="DDIM steps of every sampler.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Classifiers and surrogate pools (default: $SIDE_BENCH_CACHE or ~/.cache/side-bench).")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="torch threads on CPU (0: torch's default).")
@click.option("--dry-run", is_flag=True, help="Check everything and show the suite and its cells; write nothing.")
@user_errors
def audit(model, train, heldout, out, attacks, n_generations, ddim_steps, device, cache_dir, threads, dry_run):
    """Audit a diffusers model: does it copy its training images, and does it leak which they were?

    Writes OUT/audit.toml (edit it and rerun with `side-bench run --suite OUT/audit.toml --results
    OUT`), the rows in OUT/audit/<run-id>/rows.jsonl and the page OUT/index.html."""
    from side_bench.run.audit import finish_audit, plan_audit, write_suite

    plan = plan_audit(model, train, heldout, out, attacks=list(attacks), n_generations=n_generations,
                      device=device, ddim_steps=ddim_steps)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    if dry_run:  # the plan of the run the audit prepared (plan.prepared): nothing is written in OUT
        _print_plan(plan.prepared)
        click.echo(f"would write {plan.suite_file}, {plan.run_dir}/ and {plan.out / 'index.html'}; the suite:\n")
        click.echo(plan.toml(), nl=False)
        return
    _check_cache_dir(cache_dir)
    write_suite(plan)
    failed = 0
    try:  # the run command's own progress, summary and profile, of the run the plan prepared
        from side_bench.run.prepared import for_executor

        _run_prepared(for_executor(plan.prepared, "local", workers="auto", threads=threads), str(plan.suite_file),
                      cache_dir=cache_dir)
    except SystemExit as stop:
        if stop.code != 1:  # 1: some cells failed; the page shows the others
            raise
        failed = 1
    try:
        result = finish_audit(plan)
    except BenchError as error:
        if not failed:
            raise
        click.echo(f"error: no page: {error}", err=True)  # every cell failed: run said why
        sys.exit(1)
    click.echo(f"\n{result.report.verdict}")
    for answer in result.report.answers:
        click.echo(f"  {answer.text}")
    if result.report.membership_text:
        click.echo(f"  membership: {result.report.membership_text}")
    click.echo(f"page: {result.page}\nsuite: {plan.suite_file} (rerun: side-bench run --suite {plan.suite_file} "
               f"--results {plan.out})")
    if failed:
        sys.exit(1)


def _check_cache_dir(cache_dir) -> None:
    from side_bench.results.store import check_writable, default_cache_dir

    check_writable(cache_dir or default_cache_dir(), "--cache-dir")


def _print_profile(records: list[dict]) -> None:
    """Where this run's time went, per stage (the rows' stage_seconds), so a user sees what to tune."""
    from side_bench.run.runner import stage_profile

    profile = stage_profile(records)
    if not profile:
        return
    print_listing(f"time per stage ({len({r['config_hash'] for r in records if r.get('status') == 'done'})} cells "
                  "computed in this run; data, target and null once per scale or model)",
                  ["stage", "seconds", "share", "cells"],
                  [[p["stage"], f"{p['seconds']:.1f}", f"{100 * p['share']:.0f}%", str(p["cells"])] for p in profile],
                  right=("seconds", "share", "cells"))


def _recomputed(store, cells) -> str:
    """"2 cells recomputed: metric/copy-rate: example 0.1.0 -> 0.2.0" for cells whose earlier
    result in this folder came from another config (a plugin changed, a setting was edited)."""
    from side_bench.results.store import cell_identity
    from side_bench.run.suite import plugin_changes

    earlier: dict[tuple, dict] = {}
    for record in store.records():
        earlier[cell_identity(record)] = record
    reasons: dict[str, int] = {}
    for cell in cells:
        record = earlier.get((cell.scale, cell.attack.name, cell.seed))
        if record is None or record.get("config_hash") == cell.config_hash:
            continue
        rows = record.get("rows") or [{}]
        old_plugins = record.get("plugins") or rows[0].get("plugins")
        if old_plugins is None and isinstance(record.get("config"), dict):
            old_plugins = record["config"].get("plugins")
        changes = plugin_changes(old_plugins, cell.config.get("plugins")) if old_plugins is not None else []
        reason = "; ".join(changes) if changes else "their config changed"
        reasons[reason] = reasons.get(reason, 0) + 1
    parts = [f"{count} cell{'s' if count != 1 else ''} recomputed: {reason}" for reason, count in reasons.items()]
    return "\n".join(parts)


def _fmt(value) -> str:
    return "" if value is None or value != value else f"{value:.4f}"


def print_listing(title: str, columns: list[str], rows: list[list[str]], right: tuple[str, ...] = ()) -> None:
    """A table on stdout that never crops a cell. On a terminal: rich's table, long cells folded
    onto more lines. Piped or redirected: plain columns two spaces apart, as wide as their
    longest cell, so ``side-bench plugins | grep divergence`` and CI logs see every name whole
    (rich would crop them to the 80 columns it assumes off a terminal: ``memorizat…``)."""
    if not sys.stdout.isatty():
        widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)]

        def line(cells) -> str:
            return "  ".join(cell.rjust(width) if column in right else cell.ljust(width)
                             for column, cell, width in zip(columns, cells, widths, strict=True)).rstrip()

        click.echo("\n".join([title, line(columns), *(line(row) for row in rows)]))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)


def _print_summary(rows: list[dict]) -> None:
    print_listing("results (value | null baseline on held-out real images)",
                  ["scale", "attack", "seed", "metric", "band", "value", "null"],
                  [[str(row["scale"]), row["attack"], str(row["seed"]), row["metric"], row["band"] or "",
                    _fmt(row["value"]), _fmt(row.get("null_value"))] for row in rows],
                  right=("scale", "seed", "value", "null"))


def _print_costs(rows: list[dict]) -> None:
    """One line per cell: what its attack spent, as the runner measured it (side_bench/cost.py)."""
    from side_bench.cost import EQUIVALENTS_TEXT, equivalents

    cells = {}
    for row in rows:
        cells.setdefault(row["config_hash"], row)
    lines = []
    for row in cells.values():
        spent = row.get("cost")
        head = [str(row["scale"]), row["attack"], str(row["seed"]), f"{row['n_generations']:,}"]
        if not isinstance(spent, dict) or not spent.get("measured"):
            lines.append([*head, *[""] * 7, "not measured"])
            continue
        total = equivalents(spent)
        said = [f"{spent.get('unet_forward', 0):,}", f"{spent.get('unet_backward', 0):,}",
                f"{spent.get('guide_evals', 0):,}", f"{spent.get('sampled_images', 0):,}",
                f"{spent.get('classifier_train_images', 0):,}", f"{equivalents(spent.get('fixed')):,.0f}",
                f"{total:,.0f} ({total / max(row['n_generations'], 1):,.1f}/candidate)"]
        stages = row.get("stage_seconds") or {}
        seconds = sum(float(stages.get(stage, 0)) for stage in ("condition", "extraction", "rankers"))
        notes = [f"attacker {seconds:,.1f} s on {row.get('device') or '?'} (condition, extraction, rankers)",
                 *(spent.get("unmeasured") or []), *(spent.get("notes") or [])]
        lines.append([*head, *said, "; ".join(notes)])
    print_listing(f"cost per cell, measured by the runner ({EQUIVALENTS_TEXT})",
                  ["scale", "attack", "seed", "N_G", "UNet fwd", "UNet bwd", "guide", "sampled", "classifier imgs",
                   "fixed (equiv.)", "total (equiv.)", "notes"],
                  lines, right=("scale", "seed", "N_G", "UNet fwd", "UNet bwd", "guide", "sampled", "classifier imgs",
                                "fixed (equiv.)", "total (equiv.)"))


def parse_settings(pairs: tuple[str, ...], option: str) -> dict:
    """``("path=/x/w.pt", "resize=224")`` -> ``{"path": "/x/w.pt", "resize": 224}``: each value as
    the same text would be read in a suite's TOML table, so the Settings checks see the types a
    suite gives them; a value TOML cannot read (a bare path, ``cpu``) is text, saving the quotes."""
    import tomllib

    settings: dict = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise BenchError(f"{option}: expected KEY=VALUE, got {pair!r}")
        if key in settings:
            raise BenchError(f"{option}: {key!r} is given twice")
        try:
            settings[key] = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            settings[key] = text.strip()
    return settings


_NO_CACHE = click.option("--no-cache", is_flag=True,
                         help="Import every plugin now instead of using the cached listing (which is "
                              "remade whenever a plugin's version or source changes).")


_JSON = click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")


@main.command()
@_NO_CACHE
@_JSON
@user_errors
def plugins(no_cache, as_json):
    """List installed plugins and what each registers, with its distribution and version."""
    from side_bench.registry import registry_listing

    listing = registry_listing(use_cache=not no_cache)
    if as_json:  # every registration as registry_listing gives it (kind, name, aliases, plugin, provenance)
        click.echo(json.dumps(listing, indent=2))
        return
    rows = []
    for item in listing:
        version = item["version"] or ""
        if item.get("source_hash"):  # editable or local install: the source is what counts
            version += f" ({item['source_hash'][:8]})"
        rows.append([item["kind"], item["name"], ", ".join(item["aliases"]), item["plugin"],
                     item["distribution"] or "", version])
    print_listing("side-bench plugins", ["kind", "name", "aliases", "plugin", "distribution", "version"], rows)


@main.command()
@_NO_CACHE
@_JSON
@user_errors
def suites(no_cache, as_json):
    """List registered suites."""
    import tomllib

    from side_bench.registry import registry_listing

    found = []
    for item in registry_listing(use_cache=not no_cache):
        if item["kind"] != "suites":
            continue
        path = Path(item["path"])
        try:
            description = tomllib.loads(path.read_text()).get("description", "")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            description = f"unreadable: {error}"
        found.append({"name": item["name"], "description": description, "path": str(path)})
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    print_listing("suites", ["name", "description", "path"],
                  [[item["name"], item["description"], item["path"]] for item in found])


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help='Print {"rows": [...], "failures": [...]} as JSON.')
@user_errors
def show(run_dir, as_json):
    """Show the rows of a run folder as a table."""
    from side_bench.results.records import ROWS_FILE, read_rows_file
    from side_bench.results.store import RunStore

    store = RunStore(Path(run_dir))
    rows_file = store.run_dir / ROWS_FILE
    if not rows_file.exists() and not store.cells_dir.exists():
        raise BenchError(f"{run_dir}: not a run folder (no {ROWS_FILE})")
    # cells/ while a run is going (rows.jsonl lags by a cell); rows.jsonl alone in a copied folder.
    # Either way the rows come back upgraded to the current schema version.
    rows = store.rows() if store.cells_dir.exists() else read_rows_file(rows_file)
    failures = list(store.failures())
    if as_json:  # strict JSON: a value that cannot be computed is null
        from side_bench.contracts import dumps_strict

        keep = ("config_hash", "scale", "attack", "seed", "error")
        click.echo(dumps_strict({"rows": rows, "failures": [{k: f.get(k) for k in keep} for f in failures]},
                                indent=2, default=str))
        return
    if rows:
        _print_summary(rows)
        _print_costs(rows)
    else:
        click.echo("no rows yet")
    for failure in failures:
        click.echo(f"failed {failure['attack']} @ {failure['scale']} seed {failure['seed']}: {failure['error']}")


@main.command()
@click.option("--generated", required=True, help="Folder of PNG/JPEG images or .npy (N, C, H, W) in [0, 1].")
@click.option("--train", required=True, help="The training images, same forms.")
@click.option("--heldout", default=None, help="Held-out real images for the null baseline.")
@click.option("--features", default="pixel", show_default=True,
              help="A features plugin (side-bench plugins): pixel, or sscd / timm with their weights given "
                   "by --feature-setting.")
@click.option("--feature-setting", "feature_settings", multiple=True, metavar="KEY=VALUE",
              help="A setting of --features, as in a suite's features table (repeatable), e.g. "
                   "path=/x/sscd.torchscript.pt; VALUE is read as a TOML value (8, 0.5, true, [1, 2]), "
                   "else as text.")
@click.option("--metrics", default="ams,ums,p95,gu-ratio", show_default=True, help="Comma-separated.")
@click.option("--knn", default="auto", show_default=True, help="auto (the chunked torch search: faster here), faiss or torch.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@user_errors
def score(generated, train, heldout, features, feature_settings, metrics, knn, as_json):
    """Score images made elsewhere against a training set."""
    from side_bench.run.runner import score_rows
    from side_bench.scoring.knn import check_backend

    check_backend(knn, "--knn")
    settings = parse_settings(feature_settings, "--feature-setting")
    from side_bench.scoring.images import read_images

    rows = score_rows(
        read_images(generated, "--generated"), read_images(train, "--train"),
        read_images(heldout, "--heldout") if heldout else None,
        features=features, feature_settings=settings,
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()), knn=knn,
        where=f"--feature-setting (features {features!r})",
    )
    if as_json:  # strict JSON: a value that cannot be computed is null, with its reason
        from side_bench.contracts import dumps_strict

        click.echo(dumps_strict(rows, indent=2, default=str))
        return
    table = Table(title=f"scores ({features} features)")
    notes = any(row.get("reason") for row in rows)
    for column in ("metric", "band", "value", "null", *(["note"] if notes else [])):
        table.add_column(column)
    for row in rows:
        value = _fmt(row["value"]) or "n/a"
        table.add_row(row["metric"], row["band"] or "", value, _fmt(row.get("null_value")),
                      *([escape(row.get("reason") or "")] if notes else []))
    out.print(table)


@main.command()
@click.argument("results", nargs=-1, type=click.Path())
@click.option("--metric", default=None, help="Only this metric (e.g. ams).")
@click.option("--band", default=None, help="Only this band (e.g. mid).")
@click.option("--format", "formats", multiple=True, default=("md",), show_default=True,
              type=click.Choice(["md", "html", "csv", "json"]), help="Repeat for several: --format md --format html.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Folder for the files, plots and galleries (default: print md, csv or json).")
@click.option("--reported", multiple=True, type=click.Path(),
              help="Reported figures (JSON file or folder) shown in their own section "
                   "[default: results/reported if it exists].")
@click.option("--headline", default=None, metavar="METRIC[:BAND]",
              help="The table the page opens with (default: the suite's 'headline' key, else the table where an "
                   "attack stands most significantly above the null; the page states the rule).")
@click.option("--index", "index_dir", default=None, type=click.Path(file_okay=False),
              help="Also (without RESULTS: only) build DIR/index.html and index.md, the headline of every page in "
                   "DIR's subfolders, e.g. --index results/published; a page written beside it later refreshes it.")
@click.option("--targets", "targets", default=None, type=click.Path(file_okay=False), metavar="PACK",
              help="A shared-targets pack: a submission (a run folder with a submission.toml) is verified only if "
                   "its rows attacked the pack's models.")
@user_errors
def leaderboard(results, metric, band, formats, out, reported, headline, index_dir, targets):
    """Tables and plots across scales from run folders, suite folders or a results root.

    A run folder with a submission.toml is a submission: it is verified here (side-bench verify)
    and its attacks marked as a verified or unverified submission; other folders are this
    project's runs.
    """
    from side_bench.report.files import write_index, write_report

    if not results and index_dir is None:
        raise BenchError("RESULTS: expected run folders, suite folders or a results root "
                         "(or only --index DIR, to rebuild a site index)")
    if out is not None:
        from side_bench.results.store import check_writable

        check_writable(out, "--out")
    if not reported and Path("results/reported").is_dir():
        reported = ("results/reported",)
    written = write_report(results, formats=formats, out=out, metric=metric, band=band, reported=reported,
                           headline=headline, targets=targets) if results else {}
    if index_dir is not None:
        written["index"] = write_index(index_dir)["md"]
    for fmt, value in written.items():
        if out is None and fmt != "index":
            click.echo(value, nl=False)
        else:
            console.print(f"{fmt}: {value}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--bands", "band_specs", multiple=True, metavar="NAME=LOW,HIGH",
              help="A band; repeat for several (default: the run's own). E.g. --bands high=0.93,1.0")
@click.option("--metrics", default=None, help="Comma-separated (default: the run's own).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="The new run folder (default: RUN_DIR-rescored-<hash> beside it; never overwritten).")
@user_errors
def rescore(run_dir, band_specs, metrics, out_dir):
    """Recompute metrics from a run's per-candidate records into a new run folder."""
    from side_bench.scoring.rescore import parse_bands, rescore_run

    bands = parse_bands(band_specs) if band_specs else None
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    written = rescore_run(run_dir, bands=bands, metrics=names, out=out_dir)
    console.print(f"rescored into {escape(str(written))}")
    from side_bench.results.store import RunStore

    _print_summary(RunStore(written).rows())


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print every check (passed, failed, skipped) as a JSON list.")
@click.option("--targets", "targets", default=None, type=click.Path(file_okay=False), metavar="PACK",
              help="A shared-targets pack (targets export): every row's target model must be one of its models, "
                   "file for file (sha256).")
@user_errors
def verify(results, as_json, targets):
    """Check that result folders' rows follow from their settings and per-candidate records.

    RESULTS: run folders, suite folders or a results root. For every row: the config hash
    recomputes from its cell record's settings, the row is its record's, its per-candidate
    files are the cell's own, and every metric recomputed from them gives its numbers.
    One line per failed check (FAILED, file:line, check, row, why), then a summary;
    exit code 1 when a check failed. Links, path escapes, NaN and truncated files are refused.
    With --targets PACK, each row's recorded target model must also be the pack's.
    """
    from side_bench.scoring.verify import failures, summary, verify_runs

    checks = verify_runs(results, targets=targets)
    if as_json:
        click.echo(checks.to_json(orient="records", indent=2))
    else:
        from side_bench.scoring.verify import Check

        for line in failures(checks).itertuples(index=False):
            click.echo(Check(**line._asdict()).text())
        table = summary(checks)
        print_listing("verify: checks per run folder", ["run", "check", "ok", "failed", "skipped"],
                      [[str(r.run), r.check, str(r.ok), str(r.failed), str(r.skipped)] for r in table.itertuples()],
                      right=("ok", "failed", "skipped"))
    failed = int((checks["status"] == "failed").sum())
    runs = checks["run"].nunique()
    if failed:
        click.echo(f"{failed} check(s) failed in {runs} run folder(s)", err=True)
        sys.exit(1)
    click.echo(f"every check passed in {runs} run folder(s) "
               f"({int((checks['status'] == 'skipped').sum())} skipped: model-level values)", err=True)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.argument("attack_a")
@click.argument("attack_b")
@click.option("--scale", type=int, default=None, help="Only this scale (default: every scale both ran at).")
@click.option("--seed", type=int, default=None, help="Only this seed.")
@click.option("--by", "by", default=None, metavar="METRIC",
              help="The metric whose copy criterion counts (its memorized method), e.g. gu-ratio. [default: the "
                   "metric that declares itself the default copy criterion; of the built-ins, ams]")
@click.option("--band", default="high", show_default=True, help="With a metric of bands (ams): the band of a copy.")
@click.option("--gu", "by_gu", is_flag=True, help="The same as --by gu-ratio (Gu et al.'s ratio < 1/3).")
@click.option("--equal-cost", is_flag=True,
              help="ATTACK_A at its own measured cost against ATTACK_B's prefix of that cost (ATTACK_B: the "
                   "reference, e.g. uncond, from its smallest cell that reaches it): distinct training images and "
                   "precision of ATTACK_A's N_G claims, Holm-corrected.")
@click.option("--json", "as_json", is_flag=True, help="Print the lines as a JSON list.")
@user_errors
def compare(run_dirs, attack_a, attack_b, scale, seed, band, by, by_gu, equal_cost, as_json):
    """Training images two attacks on the same model copied: both, only one, and the tests.

    RUN_DIRS: one run folder, or several whose cells attacked the same models (companion suites)."""
    from side_bench.report.compare import compare_attacks

    if by_gu and by is not None:
        raise BenchError("--gu is --by gu-ratio: give one of them")
    if equal_cost:
        _compare_equal_cost(list(run_dirs), attack_a, attack_b, scale, seed, band,
                            "gu-ratio" if by_gu else by, as_json)
        return
    frame = compare_attacks(list(run_dirs), attack_a, attack_b, scale=scale, seed=seed, band=band,
                            by="gu-ratio" if by_gu else by)
    if as_json:
        click.echo(frame.to_json(orient="records", indent=2))
        return
    width = max(len(attack_a), len(attack_b)) + 1
    for line in frame.itertuples(index=False):
        out.print(f"scale {line.scale}, seed {line.seed}; a copy: {escape(line.copy)}", highlight=False)
        for name, k, n, distinct in ((attack_a, line.copies_a, line.n_a, line.distinct_a),
                                     (attack_b, line.copies_b, line.n_b, line.distinct_b)):
            out.print(f"  {escape((name + ':').ljust(width))} {k} of {n} candidates are copies ({100 * k / n:.2f}%), "
                      f"{distinct} distinct training images", highlight=False)
        out.print(f"  copied by both {line.both}; only {escape(attack_a)} {line.only_a}; "
                  f"only {escape(attack_b)} {line.only_b}", highlight=False)
        out.print(f"  copies: p = {line.p_copies:.3g} (Fisher's exact test, Holm); distinct images: "
                  f"p = {line.p_distinct:.3g} (z-test on occupancy standard errors, Holm)", highlight=False)


def _compare_equal_cost(run_dirs, attack, reference, scale, seed, band, by, as_json) -> None:
    from side_bench.report.budget import DISTINCT_TEST, HEADLINE_QUESTION, PRECISION_TEST, compare_equal_cost

    frame = compare_equal_cost(run_dirs, attack, reference, scale=scale, seed=seed, band=band, by=by)
    if as_json:
        click.echo(frame.to_json(orient="records", indent=2))
        return
    out.print(f"{escape(attack)} at its own cost against {escape(reference)}'s prefix of that cost; a copy: "
              f"{escape(str(frame['criterion'].iloc[0]))}; {HEADLINE_QUESTION}", highlight=False)
    for line in frame.to_dict("records"):
        head = f"scale {line['scale']}, seed {line['seed']}"
        if line.get("reference_n_g") is None or line.get("reference_n_g") != line.get("reference_n_g"):
            out.print(f"{head}, {escape(line['arm'])}: not compared ({escape(line.get('note') or '')})", highlight=False)
            continue
        if line["arm"] == "reference":
            out.print(f"{head}: {escape(attack)} spent {line['cost']:,.0f} UNet-evaluation equivalents for {line['n']:,} "
                      f"candidates; {escape(reference)}'s first {int(line['reference_k']):,} of N_G "
                      f"{int(line['reference_n_g']):,} cost {line['reference_cost']:,.0f}", highlight=False)
            if line.get("note"):
                out.print(f"  {escape(line['note'])}", highlight=False)
            out.print(f"  distinct training images: {int(line['distinct']):,} against {int(line['reference_distinct']):,}"
                      f"{_p_line(line.get('p_distinct'), line.get('verdict_distinct'), DISTINCT_TEST)}", highlight=False)
            claims = f"its first {int(line['reference_claims']):,}"
        else:
            out.print(f"  {escape(line['arm'].replace('reference', reference))}: its top {int(line['reference_claims']):,} "
                      f"of {int(line['reference_k']):,} ({escape(line.get('note') or '')})", highlight=False)
            claims = "those"
        out.print(f"  precision of {line['n']:,} claims: {100 * line['precision']:.2f}% against {claims} "
                  f"{100 * line['reference_precision']:.2f}%"
                  f"{_p_line(line.get('p_precision'), line.get('verdict_precision'), PRECISION_TEST)}", highlight=False)


def _p_line(p, verdict, test: str) -> str:
    if p is None or p != p:
        return " (not tested)"
    return f": p = {p:.3g} ({test}){'; ' + escape(attack_word(verdict)) if verdict else ''}"


def attack_word(verdict: str) -> str:
    return {"more": "the attack is ahead", "fewer": "the attack is behind", "n.s.": "not significantly different"}.get(
        verdict, verdict)


# -- side-bench cache ---------------------------------------------------------------------------

@main.group()
def cache():
    """The cache folder: trained models, classifiers, surrogate pools and clusterings."""


@cache.command("verify")
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option("--fix", is_flag=True, help="Move bad entries aside (<entry>.corrupt-<time>); they are rebuilt when next used.")
@user_errors
def cache_verify(folder, fix):
    """Check every cache entry against its manifest: one line each, STATUS<tab>PATH<tab>DETAIL.

    FOLDER defaults to the one `run` uses ($SIDE_BENCH_CACHE, else ~/.cache/side-bench).
    Exit code 1 when an entry is bad and --fix was not given.
    """
    from side_bench.results.cache import verify_cache
    from side_bench.results.store import default_cache_dir

    root = Path(folder) if folder else default_cache_dir()
    if folder is None and not root.exists():
        click.echo(f"no cache folder yet ({root}): nothing to verify", err=True)
        return
    checks = verify_cache(root, fix=fix)
    for check in checks:
        click.echo(check.line())
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.status] = counts.get(check.status, 0) + 1
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or f"{root}: empty", err=True)
    if counts.get("bad"):
        sys.exit(1)


@main.group()
def targets():
    """Shared targets: a run's trained target models as a pack that others attack as they are."""


@targets.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(), help="The pack's folder (must not exist).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="The cache the run trained into (default: $SIDE_BENCH_CACHE or ~/.cache/side-bench).")
@user_errors
def targets_export(run_dir, out, cache_dir):
    """Write the target models RUN_DIR's finished cells attacked, their manifests and exact
    training subsets (indices into packaged data, content hashes of a user's images; never
    the images) into a new folder; `side-bench run --suite S --targets OUT` attacks them."""
    from side_bench.results.store import check_writable
    from side_bench.run.targets import export_targets

    check_writable(Path(out).parent, "--out")
    models = export_targets(run_dir, out, cache_dir=cache_dir)
    print_listing(f"target pack {out}", ["scale", "seed", "dataset", "labels", "images", "MB", "model key"],
                  [[str(m["scale"]), str(m["seed"]), m["dataset"], m["label_kind"], str(m["images"]),
                    f"{m['bytes'] / 1e6:.2f}", m["model_key"][:12]] for m in models.to_dict("records")],
                  right=("scale", "seed", "images", "MB"))
    click.echo(f"pack sha256 {models.attrs['pack_sha256']}; attack it with: "
               f"side-bench run --suite SUITE --targets {out}", err=True)
