"""The leaderboard as files: a page (Markdown and HTML, rendered from one page model by Jinja2
templates), CSV and JSON; plots (``plots.py``) and galleries (``galleries.py``) beside it.

The output folder is self-contained: the page uses inline CSS and a few lines of inline
script (sorting; the page reads the same without it), images are files next to it
(``plots/``, ``galleries/``), so it can be published or opened without a server. Every
string from a result file is capped (``leaderboard.cap``) and escaped by the templates
(HTML: Jinja2's autoescape; Markdown: an escaper applied to every expression); figures
reported by papers are shown in their own section, never in the tables of reproduced
numbers. ``--out`` is written atomically: into a temporary folder beside it, renamed at the end.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from side_bench.errors import BenchError
from side_bench.report.galleries import copy_galleries
from side_bench.report.leaderboard import Warn, aggregate, format_value, load_rows, select, warn_on_stderr
from side_bench.report.page import NULL_LABEL, Page, build_page
from side_bench.report.plots import attack_colours, plot_against_scale, plot_sweeps
from side_bench.results.records import read_reported

FORMATS = ("md", "html", "csv", "json")
PAGE_FILE = {"md": "leaderboard.md", "html": "index.html", "csv": "leaderboard.csv", "json": "leaderboard.json"}
IMAGE_FOLDERS = ("plots", "galleries")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads these as a formula
CSV_CELL_LIMIT = 32_000  # characters; spreadsheets hold 32,767 per cell


# ------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------


def md_escape(value) -> str:
    """Text from a result file, safe in Markdown (no HTML, no table-cell breaks); Markup passes."""
    if isinstance(value, Markup):
        return str(value)
    text = html.escape(str(value), quote=False).replace("\\", "\\\\")
    for special in "|*`":
        text = text.replace(special, "\\" + special)
    # a link or image needs '](' or '][' (no reference is defined on the page): break those, keep
    # brackets readable in '12.50% [9.10, 16.90]'
    text = text.replace("![", "!\\[").replace("](", "]\\(").replace("][", "]\\[")
    return text.replace("\r", " ").replace("\n", " ")


def _md_row(values) -> Markup:
    return Markup(" | ".join(md_escape(v) for v in values))


def _environment(kind: str) -> jinja2.Environment:
    loader = jinja2.PackageLoader("side_bench.report", "templates")
    if kind == "html":
        return jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                  undefined=jinja2.StrictUndefined)
    environment = jinja2.Environment(loader=loader, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                                     finalize=md_escape, undefined=jinja2.StrictUndefined)
    environment.filters["md_row"] = _md_row
    return environment


def render_markdown(page: Page) -> str:
    text = _environment("md").get_template("leaderboard.md.j2").render(page=page)
    lines, blank = [], False
    for line in text.splitlines():  # at most one blank line in a row, none at the end
        if line.strip() or not blank:
            lines.append(line.rstrip())
        blank = not line.strip()
    return "\n".join(lines).strip() + "\n"


def render_html(page: Page) -> str:
    return _environment("html").get_template("leaderboard.html.j2").render(page=page)


# ------------------------------------------------------------------------------------------
# CSV and JSON: numbers stay numbers (fractions, not percent), names keep their full text
# ------------------------------------------------------------------------------------------


def _formula_safe(value):
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP's advice);
    one longer than a spreadsheet cell holds is cut, with an ellipsis (the JSON keeps the full text)."""
    if not isinstance(value, str):
        return value
    if len(value) > CSV_CELL_LIMIT:
        value = value[: CSV_CELL_LIMIT - 1] + "\u2026"
    return "'" + value if value.startswith(FORMULA_START) else value


def render_table(table: pd.DataFrame, fmt: str) -> str:
    """The leaderboard frame as CSV or JSON text."""
    columns = [c for c in table.columns if c not in ("metric_description",)] if fmt == "csv" else table.columns
    if fmt == "csv":
        safe = table[columns].copy()
        for column in safe.columns:
            if not pd.api.types.is_numeric_dtype(safe[column]):
                safe[column] = safe[column].map(_formula_safe)
        return safe.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=2) + "\n"
    raise ValueError(fmt)


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def find_reported(paths: Iterable[str | Path]) -> list[tuple[Path, dict]]:
    """Reported-figure files (JSON) from files or folders, validated against their schema."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            found.append(path)
        else:
            raise BenchError(f"--reported: {path}: no such file or folder")
    return [(path, read_reported(path)) for path in found]


def _draw(page: Page, rows: pd.DataFrame, out: Path) -> None:
    """Plots for every table of the page, galleries copied: files under ``out``."""
    colours = attack_colours(list(dict.fromkeys(rows["attack"])))
    for table in page.tables():
        part = table.part
        first = part.iloc[0]
        args = {"metric": str(first["metric"]), "band": table.band, "setup": str(first["setup"]), "out": out}
        table.figures = [plot_against_scale(part, colours=colours, **args), *plot_sweeps(part, **args)]
    page.galleries = copy_galleries(rows, out)


def _stage(out: Path) -> Path:
    """An empty folder beside ``out`` (same file system, so that the final rename is atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as error:
        raise BenchError(f"--out {out}: cannot write there ({error.strerror or error})") from error


def _publish(staging: Path, out: Path, replaced: set[str]) -> None:
    """Put ``staging`` in the place of ``out``; what ``out`` held and this run did not write stays."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: exists and is not a folder")
    if out.is_dir():
        for entry in out.iterdir():
            if entry.name not in replaced and not (staging / entry.name).exists():
                os.replace(entry, staging / entry.name)
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def write_report(results, *, formats: Iterable[str] = ("md",), out: str | Path | None = None,
                 metric: str | None = None, band: str | None = None, reported: Iterable[str | Path] = (),
                 headline: str | None = None, warn: Warn | None = warn_on_stderr) -> dict[str, str | Path]:
    """Build the leaderboard of ``results`` and write it.

    With ``out``: writes each format's file there (plus plots/ and galleries/ for md and
    html), atomically, and returns {format: path}. Without: returns {format: text} (html
    needs ``out``: its images are files). ``headline`` (``METRIC`` or ``METRIC:BAND``)
    overrides the suites' headline metric; ``warn`` receives one line per run left out or
    value not ranked (default: stderr).
    """
    formats = list(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in FORMATS:
            raise BenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is None and "html" in formats:
        raise BenchError("--format html: needs --out DIR (the page's images are files next to it)")
    rows = select(load_rows(results, warn=warn), metric=metric, band=band)
    table = aggregate(rows)
    pages = {"md", "html"} & set(formats)
    page = build_page(rows, table, headline=headline, reported=find_reported(reported)) if pages else None
    texts = {}
    if out is None:
        for fmt in formats:
            texts[fmt] = render_markdown(page) if fmt == "md" else render_table(table, fmt)
        return texts
    out_dir = Path(out)
    staging = _stage(out_dir)
    try:
        if page is not None:
            _draw(page, rows, staging)
        written: dict[str, str | Path] = {}
        for fmt in formats:
            if fmt == "md":
                text = render_markdown(page)
            elif fmt == "html":
                text = render_html(page)
            else:
                text = render_table(table, fmt)
            (staging / PAGE_FILE[fmt]).write_text(text)
            written[fmt] = out_dir / PAGE_FILE[fmt]
        # a regenerated page must not keep old images; a CSV alone leaves them
        _publish(staging, out_dir, {PAGE_FILE[f] for f in formats} | (set(IMAGE_FOLDERS) if pages else set()))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


__all__ = ["FORMATS", "NULL_LABEL", "format_value", "render_html", "render_markdown", "render_table",
           "write_report"]
