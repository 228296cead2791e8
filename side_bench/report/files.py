"""The leaderboard as files: a page (Markdown and HTML, rendered from one page model by Jinja2
templates), CSV and JSON; plots (``plots.py``) and galleries (``galleries.py``) beside it.

The output folder is self-contained: the page uses inline CSS and a few lines of inline
script (sorting; the page reads the same without it), images are files next to it
(``plots/``, ``galleries/``), so it can be published or opened without a server. Every
string from a result file is capped (``leaderboard.cap``) and escaped by the templates
(HTML: Jinja2's autoescape; Markdown: an escaper applied to every expression); figures
reported by papers are shown in their own section, never in the tables of reproduced
numbers. ``--out`` is written atomically: into a temporary folder beside it, renamed at the end.
Submitted run folders (a ``submission.toml`` beside ``rows.jsonl``) are verified here and each
attack's origin marked (``submissions.py``); without one, nothing of this shows.

Beside each page goes ``summary.json`` (its headline tables and sentences); ``write_index``
builds a site index (``index.html`` and ``index.md``) from the summaries of every page in a
folder's subfolders, such as ``results/published/``, and a page written into a folder whose
parent already holds such an index refreshes it, so the index never lags the pages.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import jinja2
import pandas as pd
import tomllib
from markupsafe import Markup

from side_bench.errors import BenchError
from side_bench.report.galleries import copy_galleries
from side_bench.report.leaderboard import (
    Warn,
    aggregate,
    format_value,
    has_measured_cost,
    load_rows,
    select,
    warn_on_stderr,
    with_cost,
)
from side_bench.report.page import (
    FINDINGS_FILE,
    INDEX_TITLE,
    MARKS,
    NULL_LABEL,
    SUMMARY_FILE,
    Finding,
    IndexPage,
    Page,
    build_page,
    index_entry,
    order_entries,
    page_summary,
    parse_findings,
)
from side_bench.report.plots import (
    attack_colours,
    plot_against_scale,
    plot_difference_against_scale,
    plot_extraction_curves,
    plot_setting_curve,
    plot_sweeps,
    reference_attack,
    setting_curves,
)
from side_bench.report.submissions import mark_origins, mark_page, origin_columns, origin_marks
from side_bench.results.records import read_reported
from side_bench.results.store import atomic_write

FORMATS = ("md", "html", "csv", "json")
BUDGET_FILE = "budget.json"  # extraction against cost and the equal-cost lines (issue 29), with --format json
EQUAL_COST_FILE = "equal-cost.csv"  # the equal-cost lines, with --format csv
PAGE_FILE = {"md": "leaderboard.md", "html": "index.html", "csv": "leaderboard.csv", "json": "leaderboard.json"}
INDEX_FILE = {"md": "index.md", "html": "index.html"}
# The first line of a site index's Markdown (invisible when rendered): it tells a later page
# written beside the index that it may refresh it, and that nobody should edit it by hand.
INDEX_MARKER = "<!-- side-bench site index: built by side-bench leaderboard --index; do not edit -->"
IMAGE_FOLDERS = ("plots", "galleries")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet reads these as a formula
SAFE_CODE = re.compile(r"[A-Za-z0-9_.,=+%/:\- ]{1,80}")  # a finding's `code`: names and numbers only
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
        environment = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                         undefined=jinja2.StrictUndefined)
        environment.filters["marks"] = lambda text: inline_marks(text, "html")
        return environment
    environment = jinja2.Environment(loader=loader, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                                     finalize=md_escape, undefined=jinja2.StrictUndefined)
    environment.filters["md_row"] = _md_row
    environment.filters["marks"] = lambda text: inline_marks(text, "md")
    return environment


def _tidy(text: str) -> str:
    """At most one blank line in a row, none at the end (the templates' blocks leave many)."""
    lines, blank = [], False
    for line in text.splitlines():
        if line.strip() or not blank:
            lines.append(line.rstrip())
        blank = not line.strip()
    return "\n".join(lines).strip() + "\n"


def render_markdown(page: Page) -> str:
    return _tidy(_environment("md").get_template("leaderboard.md.j2").render(page=page))


def render_html(page: Page) -> str:
    return _environment("html").get_template("leaderboard.html.j2").render(page=page)


def render_index(index: IndexPage, kind: str) -> str:
    text = _environment(kind).get_template(f"index.{kind}.j2").render(index=index, marker=Markup(INDEX_MARKER))
    return _tidy(text) if kind == "md" else text


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


def _plain(value):
    """numpy and pandas scalars in budget.json as plain numbers (NaN as null is done by the caller)."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


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
    """Plots for every table of the page, galleries copied: files under ``out``. A submitted
    attack is marked in the plots as in the tables (``origin_marks``)."""
    colours = attack_colours(list(dict.fromkeys(rows["attack"])))
    reference = reference_attack(rows)  # UnCond: every rate plot's companion panel is the difference to it
    marks = origin_marks(rows)
    for table in page.tables():
        part = table.part
        first = part.iloc[0]
        args = {"metric": str(first["metric"]), "band": table.band, "setup": str(first["setup"]), "out": out,
                "marks": marks}
        # a model-level metric's lines are target models: their own colours, and no sweep (the
        # attack's setting does not change the model) and no difference to UnCond (no attacks)
        model_level = "model_level" in part and bool(part["model_level"].fillna(False).astype(bool).all())
        table.figures = [plot_against_scale(part, colours=attack_colours(list(dict.fromkeys(part["attack"])))
                                            if model_level else colours, **args),
                         *([] if model_level else _differences(part, colours, reference, args)),
                         *([] if model_level else plot_sweeps(part, reference=reference, **args))]
    _draw_setting_curves(page, rows, out, colours, reference, marks)
    _draw_budgets(page, out, colours, marks)
    page.galleries = copy_galleries(rows, out)


def _differences(part: pd.DataFrame, colours: dict, reference: str | None, args: dict) -> list:
    """The companion panel of a rate plot (each attack minus UnCond), when there is one."""
    figure = plot_difference_against_scale(part, colours=colours, reference=reference, **args)
    return [] if figure is None else [figure]


def _draw_budgets(page: Page, out: Path, colours: dict, marks: dict | None = None) -> None:
    """Each setup's extraction-against-cost plot (issue 29), where its runs measured cost."""
    for setup in page.setups:
        if setup.budget is not None:
            figure = plot_extraction_curves(setup.budget.curves, setup=setup.setup, out=out, colours=colours,
                                            criterion=setup.budget.criterion, marks=marks)
            setup.budget.figures = [figure] if figure is not None else []


def budget_document(page: Page) -> dict | None:
    """budget.json: every setup's extraction-against-cost curves and equal-cost lines (issue 29);
    None when no run measured cost (then nothing is written)."""
    sections = [s for s in page.setups if s.budget is not None]
    if not sections:
        return None
    from side_bench.cost import EQUIVALENTS, EQUIVALENTS_TEXT

    return {"unit": "UNet-evaluation equivalents", "equivalents": EQUIVALENTS, "conversion": EQUIVALENTS_TEXT,
            "setups": [{"setup": s.setup, "criterion": s.budget.criterion, "question": s.budget.question,
                        "tests": list(s.budget.tests), "curves": s.budget.curves, "unmeasured": s.budget.missing,
                        "equal_cost": s.budget.lines}
                       for s in sections]}


def _draw_setting_curves(page: Page, rows: pd.DataFrame, out: Path, colours: dict,
                         reference: str | None = None, marks: dict | None = None) -> None:
    """A metric given at several values of one setting (canary recall per count d) drawn against
    it, under the table of the curve's first metric id (per setup and band)."""
    for key, points in setting_curves(rows):
        tables = [t for t in page.tables() if t.part is not None and not t.part.empty
                  and str(t.part.iloc[0]["metric"]) in points]
        for _, group in itertools.groupby(sorted(tables, key=lambda t: (t.setup, t.band)),
                                                      key=lambda t: (t.setup, t.band)):
            group = sorted(group, key=lambda t: points[str(t.part.iloc[0]["metric"])])
            part = pd.concat([t.part.assign(x=points[str(t.part.iloc[0]["metric"])]) for t in group])
            title = os.path.commonprefix(sorted(points)).rstrip("0123456789").rstrip("-_ ") or group[0].metric
            group[0].figures += plot_setting_curve(part, key=key, title=title, band=group[0].band,
                                                   setup=str(part.iloc[0]["setup"]), out=out, colours=colours,
                                                   reference=reference, marks=marks)


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


def leaderboard_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard frame of (origin-marked) rows: ``aggregate``, each line's origin, and its
    measured cost (columns added only when some run measured it)."""
    return with_cost(origin_columns(aggregate(rows), rows), rows)


def build_leaderboard(results: Iterable[str | Path] | str | Path, *, metric: str | None = None,
                      band: str | None = None, targets: str | Path | None = None) -> pd.DataFrame:
    """The leaderboard frame of the result files under ``results`` (see ``aggregate``), with each
    line's ``origin`` and ``submission`` (``report/submissions.py``: submitted folders verified
    here, ``targets`` the pack their target models are checked against).

    ``metric`` and ``band`` keep only that metric / band name.
    """
    rows, _ = mark_origins(select(load_rows(results), metric=metric, band=band), targets=targets, warn=warn_on_stderr)
    return leaderboard_table(rows)


def write_report(results, *, formats: Iterable[str] = ("md",), out: str | Path | None = None,
                 metric: str | None = None, band: str | None = None, reported: Iterable[str | Path] = (),
                 headline: str | None = None, warn: Warn | None = warn_on_stderr,
                 targets: str | Path | None = None) -> dict[str, str | Path]:
    """Build the leaderboard of ``results`` and write it.

    With ``out``: writes each format's file there (plus plots/ and galleries/ for md and
    html), atomically, and returns {format: path}. Without: returns {format: text} (html
    needs ``out``: its images are files). ``headline`` (``METRIC`` or ``METRIC:BAND``)
    overrides the suites' headline metric; ``warn`` receives one line per run left out or
    value not ranked (default: stderr). A run folder with a ``submission.toml`` is verified
    here and its attacks marked with their origin (``report/submissions.py``; ``targets``: a
    pack their rows' target models are checked against).
    """
    formats = list(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in FORMATS:
            raise BenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is None and "html" in formats:
        raise BenchError("--format html: needs --out DIR (the page's images are files next to it)")
    rows = select(load_rows(results, warn=warn), metric=metric, band=band)
    rows, submitted = mark_origins(rows, targets=targets, warn=warn)  # after select: a bad --metric costs nothing
    table = leaderboard_table(rows)
    pages = {"md", "html"} & set(formats)
    budgets = out is not None and bool({"json", "csv"} & set(formats)) and has_measured_cost(rows)
    page = build_page(rows, table, headline=headline, reported=find_reported(reported)) \
        if pages or budgets else None
    if page is not None:
        mark_page(page, rows, submitted)
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
        budget = budget_document(page) if page is not None else None
        extra = set()
        if budget is not None and "json" in formats:  # the curves and equal-cost lines as data
            (staging / BUDGET_FILE).write_text(json.dumps(budget, indent=1, default=_plain) + "\n")
            written["budget"], extra = out_dir / BUDGET_FILE, extra | {BUDGET_FILE}
        if budget is not None and "csv" in formats:
            lines = [line for s in budget["setups"] for line in s["equal_cost"]]
            (staging / EQUAL_COST_FILE).write_text(render_table(pd.DataFrame(lines), "csv"))
            written["equal-cost"], extra = out_dir / EQUAL_COST_FILE, extra | {EQUAL_COST_FILE}
        if pages:  # what a site index shows of this page
            summary = page_summary(page, {f: PAGE_FILE[f] for f in sorted(pages)})
            (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        # a regenerated page must not keep old images or an old summary; a CSV alone leaves them
        _publish(staging, out_dir, {PAGE_FILE[f] for f in formats} | extra
                 | ({*IMAGE_FOLDERS, SUMMARY_FILE} if pages else set()))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if pages and is_index(out_dir.resolve().parent):
        written["index"] = write_index(out_dir.resolve().parent, warn=warn)["md"]
    return written


def read_findings(path: Path) -> list[Finding]:
    """The site index's order and findings (``FINDINGS_FILE`` beside the pages, e.g.
    results/published/findings.toml); [] when there is none (then the index is alphabetical)."""
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise BenchError(f"{path}: not readable TOML ({error})") from error
    return parse_findings(data, str(path))


def inline_marks(text: str, kind: str) -> Markup:
    """A finding's text with its ``**bold**``, ``*italic*`` and `code` marks kept (as the README
    writes them), everything else escaped for ``kind`` (html or md); code only of plain names."""
    escape = Markup.escape if kind == "html" else md_escape
    tags = {"**": ("<b>", "</b>"), "*": ("<i>", "</i>"), "`": ("<code>", "</code>")}
    parts = []
    for token in re.split(r"(\*\*[^*\n]+\*\*|\*[^*\s][^*\n]*\*|`[^`\n]+`)", str(text)):
        mark = next((m for m in tags if len(token) > 2 * len(m) and token.startswith(m) and token.endswith(m)), None)
        inner = token[len(mark):-len(mark)] if mark else token
        if mark is None or (mark == "`" and not SAFE_CODE.fullmatch(inner)):
            parts.append(str(escape(token)))
        else:
            opening, closing = tags[mark] if kind == "html" else (mark, mark)
            parts.append(f"{opening}{escape(inner)}{closing}")
    return Markup("".join(parts))


def is_index(folder: Path) -> bool:
    """Whether ``folder`` holds a site index that ``write_index`` built (and may rebuild)."""
    try:
        with open(Path(folder) / INDEX_FILE["md"], encoding="utf-8") as stream:
            return stream.readline().strip() == INDEX_MARKER
    except (OSError, UnicodeDecodeError):
        return False


def write_index(root: str | Path, *, warn: Warn | None = warn_on_stderr) -> dict[str, Path]:
    """``root/index.html`` and ``root/index.md``: every page below ``root`` (one subfolder each,
    with the ``summary.json`` its leaderboard wrote), its headline tables and sentences, linked.

    Returns {format: path}. A subfolder with a page but no summary (written by an older
    side-bench) is named in a warning and left out; none at all is a one-line error.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"--index {root}: no such folder")
    if (root / INDEX_FILE["html"]).exists() and not is_index(root):
        # a leaderboard page (or someone's own file) is there: never overwrite it
        raise BenchError(f"--index {root}: {INDEX_FILE['html']} there is not a side-bench site index "
                         f"(a leaderboard page?); give the folder that holds the pages")
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary = folder / SUMMARY_FILE
        if not summary.is_file():
            if (folder / PAGE_FILE["html"]).exists() or (folder / PAGE_FILE["md"]).exists():
                if warn is not None:
                    warn(f"{folder}: a leaderboard page without {SUMMARY_FILE} (written by an older side-bench?); "
                         f"left out of the index until it is written again")
            continue
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BenchError(f"{summary}: not readable JSON ({error})") from error
        entries.append(index_entry(folder.name, data, str(summary)))
    if not entries:
        raise BenchError(f"--index {root}: no leaderboard below it (no */{SUMMARY_FILE}; write one with "
                         f"side-bench leaderboard RESULTS --format md --format html --out {root}/NAME)")
    entries, missing = order_entries(entries, read_findings(root / FINDINGS_FILE))
    if missing and warn is not None:
        warn(f"{root / FINDINGS_FILE}: no page in {root} for {', '.join(missing)}; its finding is left out of the index")
    index = IndexPage(title=INDEX_TITLE, marks=MARKS, entries=entries)
    written = {}
    for kind in ("html", "md"):
        atomic_write(root / INDEX_FILE[kind], render_index(index, kind))
        written[kind] = root / INDEX_FILE[kind]
    return written


__all__ = ["FORMATS", "NULL_LABEL", "build_leaderboard", "format_value", "render_html", "render_index", "render_markdown",
           "render_table", "write_index", "write_report"]
