"""The leaderboard as files: plots (PNG + SVG), galleries, Markdown, a static HTML page, CSV, JSON.

The output folder is self-contained: the page uses inline CSS and no script, images are
files next to it (``plots/``, ``galleries/``), so it can be published or opened without a
server. Every string that comes from a result file is escaped before it reaches HTML or
Markdown; figures reported by papers are shown in their own section, never in the tables
of reproduced numbers.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from side_bench import stats
from side_bench.errors import BenchError
from side_bench.leaderboard import (
    PERCENT_UNITS,
    aggregate,
    format_cell,
    format_value,
    groups,
    load_rows,
    select,
    wide,
)
from side_bench.result_files import read_reported

FORMATS = ("md", "html", "csv", "json")
PAGE_FILE = {"md": "leaderboard.md", "html": "index.html", "csv": "leaderboard.csv", "json": "leaderboard.json"}
NULL_LABEL = "null baseline (held-out real images)"
REPORTED_BANDS = ("low", "mid", "high")
LEGEND = (
    "Each cell: the value pooled over seeds, [its 95% interval] and (k/N_G) for rates (Wilson interval of the "
    "pooled count; UMS and p95: seeded bootstrap over candidates), 'sd' across seeds when there are several, "
    f"#rank at that scale and 'n.s.' when not significantly above the null baseline. Ranks come from pairwise "
    f"tests at the same scale ({stats.RATE_TEST} for rates, {stats.BOOTSTRAP_TEST} otherwise), "
    f"{stats.CORRECTION}-corrected, alpha {stats.ALPHA}: attacks not significantly different share a rank. "
    "★ marks the one attack alone at rank 1 and above the null; ties are never starred. Rates in percent. "
    "Rows with different N_G, features or bands are never averaged together: each setup has its own tables. "
    "The null baseline is the metric on held-out real images; a number means something only above it."
)


@dataclass
class Figure:
    """One plot, written as PNG (shown) and SVG (for print), paths relative to the output folder."""

    title: str
    png: str
    svg: str


@dataclass
class Section:
    """One table: a setup, a metric and a band, with its plot and sweep plots."""

    setup: str
    metric: str
    band: str
    part: pd.DataFrame
    plot: Figure | None = None
    sweeps: list[Figure] = field(default_factory=list)


def _file_stem(*parts: str) -> str:
    """A safe, unique file name for strings that may hold anything (attack names included)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p for p in parts if p)).strip("-")[:60] or "plot"
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------


def _new_axes(title: str, subtitle: str):
    from matplotlib.figure import Figure as MplFigure  # no pyplot: no global state, no display

    figure = MplFigure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(f"{title}\n{subtitle}", fontsize=10)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _save(figure, out: Path, stem: str, title: str) -> Figure:
    (out / "plots").mkdir(parents=True, exist_ok=True)
    png, svg = f"plots/{stem}.png", f"plots/{stem}.svg"
    figure.savefig(out / png)
    figure.savefig(out / svg)
    return Figure(title=title, png=png, svg=svg)


def _unit(part: pd.DataFrame) -> str | None:
    units = part["unit"].dropna() if "unit" in part else pd.Series(dtype=object)
    return units.iloc[0] if len(units) else None


def _scale_of_y(unit: str | None) -> float:
    return 100.0 if unit in PERCENT_UNITS else 1.0


def _y_label(metric: str, unit: str | None) -> str:
    return f"{metric} (%)" if unit in PERCENT_UNITS else metric


def _error_bars(lines: pd.DataFrame, factor: float):
    """Asymmetric bars from each value to its 95% interval (none where it is unknown)."""
    value = pd.to_numeric(lines["value"], errors="coerce")
    low = (value - pd.to_numeric(lines["ci_low"], errors="coerce")).clip(lower=0).fillna(0)
    high = (pd.to_numeric(lines["ci_high"], errors="coerce") - value).clip(lower=0).fillna(0)
    return value * factor, [low * factor, high * factor]


def plot_against_scale(section: Section, out: Path) -> Figure:
    """The metric against scale, one line per attack (bars: 95% intervals), and the null as a band."""
    part = section.part
    unit = _unit(part)
    factor = _scale_of_y(unit)
    title = f"{section.metric} {section.band}".strip()
    figure, axes = _new_axes(title, section.setup)
    for attack, lines in part.groupby("attack", sort=False):
        lines = lines.sort_values("scale")
        values, bars = _error_bars(lines, factor)
        axes.errorbar(lines["scale"], values, yerr=bars, marker="o", capsize=3, label=str(attack))
    nulls = part.drop_duplicates("scale").sort_values("scale")
    null_values = pd.to_numeric(nulls["null_value"], errors="coerce")
    if null_values.notna().any():
        axes.plot(nulls["scale"], null_values * factor, "k--", marker="x", label="null (held-out)")
        low = pd.to_numeric(nulls["null_ci_low"], errors="coerce")
        high = pd.to_numeric(nulls["null_ci_high"], errors="coerce")
        if low.notna().all() and high.notna().all():
            axes.fill_between(nulls["scale"], low * factor, high * factor, color="k", alpha=0.1, linewidth=0)
    if part["scale"].nunique() > 1:
        axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(part["scale"].unique()), [str(s) for s in sorted(part["scale"].unique())])
    axes.set_xlabel("scale (training images)")
    axes.set_ylabel(_y_label(section.metric, unit))
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, out, _file_stem("scale", section.metric, section.band, section.setup), title)


def _numeric(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_sweeps(section: Section, out: Path) -> list[Figure]:
    """For each attack swept over one setting: the metric against the setting, one line per scale."""
    figures = []
    part = section.part
    unit = _unit(part)
    factor = _scale_of_y(unit)
    swept = part[part["swept"] != ""]
    for base, variants in swept.groupby("attack_base", sort=False):
        settings = [json.loads(s) for s in variants["swept"]]
        keys = {tuple(s) for s in settings}
        if len(keys) != 1 or len(next(iter(keys))) != 1:
            continue  # a curve needs exactly one swept setting
        key = next(iter(keys))[0]
        x_values = [_numeric(s[key]) for s in settings]
        if None in x_values or len(set(x_values)) < 2:
            continue
        variants = variants.assign(x=x_values)
        title = f"{section.metric} {section.band} of {base} against {key}".replace("  ", " ")
        figure, axes = _new_axes(title, section.setup)
        for scale, lines in variants.groupby("scale"):
            lines = lines.sort_values("x")
            values, bars = _error_bars(lines, factor)
            drawn = axes.errorbar(lines["x"], values, yerr=bars, marker="o", capsize=3, label=f"scale {scale}")
            null = pd.to_numeric(lines["null_value"], errors="coerce").mean()
            if pd.notna(null):
                axes.axhline(null * factor, linestyle=":", color=drawn.lines[0].get_color(), alpha=0.7)
        axes.set_xlabel(str(key))
        axes.set_ylabel(_y_label(section.metric, unit))
        axes.legend(fontsize=8, title="dotted: null", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        figures.append(_save(figure, out, _file_stem("sweep", base, key, section.metric,
                                                                   section.band, section.setup), title))
    return figures


# ------------------------------------------------------------------------------------------
# Galleries
# ------------------------------------------------------------------------------------------


@dataclass
class Gallery:
    setup: str
    attack: str
    scale: int
    seed: int
    image: str  # relative to the output folder


def copy_galleries(rows: pd.DataFrame, out: Path | None) -> list[Gallery]:
    """Copy each cell's gallery PNG (when the run wrote one) into ``out/galleries/``."""
    if rows.empty or "gallery_path" not in rows:
        return []
    cells = rows[rows["gallery_path"].notna()].drop_duplicates("config_hash")
    galleries = []
    for cell in cells.sort_values(["setup", "scale", "attack", "seed"]).itertuples(index=False):
        relative = f"galleries/{_file_stem(str(cell.config_hash))}.png"
        if out is not None:
            (out / "galleries").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cell.gallery_path, out / relative)
        galleries.append(Gallery(cell.setup, cell.attack, int(cell.scale), int(cell.seed), relative))
    return galleries


# ------------------------------------------------------------------------------------------
# Reported figures (papers)
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


def _reported_columns(document: dict) -> list[str]:
    columns = [f"{m}_{b}" for m in ("ams", "ums") for b in REPORTED_BANDS]
    extra = sorted({k for row in document["rows"] for k in row} - set(columns) - {"dataset", "attack", "n_generations"})
    return [c for c in columns if any(c in row for row in document["rows"])] + extra


def _reported_value(column: str, value) -> str:
    if value is None:
        return ""
    if column.startswith(("ams_", "ums_")):
        return f"{100 * value:.3f}%"
    return f"{value:g}"


def _bands_text(bands: dict | None) -> str:
    if not bands:
        return ""
    parts = []
    for name, (low, high) in bands.items():
        parts.append(f"{name} " + (f"< {high:g}" if low is None else f">= {low:g}" if high is None
                                   else f"[{low:g}, {high:g})"))
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------


def _md(text) -> str:
    """Text from a result file, safe in a Markdown table (no HTML, no cell breaks)."""
    text = html.escape(str(text), quote=False).replace("\\", "\\\\")
    for special in "|[]*`":
        text = text.replace(special, "\\" + special)
    return text.replace("\n", " ")


def _cell_text(line, unit: str | None) -> tuple[str, bool]:
    """The value with its interval and count, its rank, and 'n.s.' when not above the null."""
    text = format_cell(unit, line)
    if text and line.n_seeds and line.n_seeds > 1 and pd.notna(line.std):
        text = f"{text} sd {format_value(unit, line.std)}"
    if text and pd.notna(line.rank):
        text = f"{text} #{int(line.rank)}"
    if text and not line.above_null:
        text = f"{text} n.s."
    return text, bool(line.best)


def render_markdown(sections: list[Section], galleries: list[Gallery], reported: list[tuple[Path, dict]],
                    sources: list[str]) -> str:
    lines = ["# side-bench leaderboard", "",
             LEGEND, "",
             "Runs: " + ", ".join(_md(s) for s in sources), ""]
    setup = None
    for section in sections:
        if section.setup != setup:
            setup = section.setup
            lines += [f"## {_md(setup)}", ""]
        scales, attacks, cells, nulls = wide(section.part)
        seeds = int(section.part["n_seeds"].max())
        lines += [f"### {_md(section.metric)} {_md(section.band)}".rstrip(), "",
                  f"{seeds} seed(s) per cell.", "",
                  "| attack | " + " | ".join(f"scale {s}" for s in scales) + " |",
                  "|---|" + "---:|" * len(scales)]
        for attack in attacks:
            texts = []
            for scale in scales:
                line = cells.get((attack, scale))
                text, best = _cell_text(line, _unit(section.part)) if line is not None else ("", False)
                texts.append(f"**{text} ★**" if best and text else text)
            lines.append(f"| {_md(attack)} | " + " | ".join(texts) + " |")
        lines.append(f"| *{NULL_LABEL}* | " + " | ".join(
            format_cell(_unit(section.part), nulls[s], "null_") for s in scales) + " |")
        lines.append("")
        for figure in [section.plot, *section.sweeps]:
            if figure is not None:
                lines += [f"![{_md(figure.title)}]({figure.png}) ([SVG]({figure.svg}))", ""]
    if galleries:
        lines += ["## Galleries", ""]
        for gallery in galleries:
            lines.append(f"- {_md(gallery.setup)}: {_md(gallery.attack)} @ scale {gallery.scale}, "
                         f"seed {gallery.seed}: [{gallery.image}]({gallery.image})")
        lines.append("")
    for path, document in reported:
        lines += _reported_markdown(path, document)
    return "\n".join(lines).rstrip() + "\n"


def _reported_markdown(path: Path, document: dict) -> list[str]:
    columns = _reported_columns(document)
    lines = [f"## Reported, not reproduced: {_md(document['source'])}", "",
             f"From `{_md(path.name)}`. {_md(document.get('note', ''))}", ""]
    if document.get("bands_stated") or document.get("bands_inferred"):
        lines += [f"Bands stated: {_md(_bands_text(document.get('bands_stated')))}; "
                  f"inferred: {_md(_bands_text(document.get('bands_inferred')))}. {_md(document.get('bands_note', ''))}", ""]
    lines += ["| data set | N_G | attack | " + " | ".join(_md(c) for c in columns) + " |",
              "|---|---:|---|" + "---:|" * len(columns)]
    for row in document["rows"]:
        lines.append(f"| {_md(row['dataset'])} | {row['n_generations']} | {_md(row['attack'])} | "
                     + " | ".join(_md(_reported_value(c, row.get(c))) for c in columns) + " |")
    return [*lines, ""]


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
td.best { background: #e3f5e1; font-weight: bold; }
tr.null td { color: #666; font-style: italic; background: #fafafa; }
.note { color: #555; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 0.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
.gallery img { max-width: 100%; image-rendering: pixelated; }
section.reported { background: #fff8e6; border: 1px solid #e6c56e; padding: 0 1em 1em; margin-top: 2em; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _figure_html(figure: Figure) -> str:
    return (f'<figure><img src="{_e(figure.png)}" alt="{_e(figure.title)}">'
            f'<figcaption>{_e(figure.title)} (<a href="{_e(figure.svg)}">SVG</a>)</figcaption></figure>')


def _table_html(section: Section) -> str:
    scales, attacks, cells, nulls = wide(section.part)
    head = "".join(f"<th>scale {_e(s)}</th>" for s in scales)
    body = []
    for attack in attacks:
        tds = []
        for scale in scales:
            line = cells.get((attack, scale))
            text, best = _cell_text(line, _unit(section.part)) if line is not None else ("", False)
            tds.append(f'<td class="best">{_e(text)} ★</td>' if best and text else f"<td>{_e(text)}</td>")
        body.append(f"<tr><td>{_e(attack)}</td>{''.join(tds)}</tr>")
    null_tds = "".join(
        f"<td>{_e(format_cell(_unit(section.part), nulls[s], 'null_'))}</td>"
        for s in scales)
    body.append(f'<tr class="null"><td>{_e(NULL_LABEL)}</td>{null_tds}</tr>')
    return f"<table><thead><tr><th>attack</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _reported_html(path: Path, document: dict) -> str:
    columns = _reported_columns(document)
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    rows = "".join(
        f"<tr><td>{_e(row['dataset'])}</td><td>{_e(row['n_generations'])}</td><td>{_e(row['attack'])}</td>"
        + "".join(f"<td>{_e(_reported_value(c, row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in document["rows"])
    bands = ""
    if document.get("bands_stated") or document.get("bands_inferred"):
        bands = (f"<p class=\"note\">Bands stated: {_e(_bands_text(document.get('bands_stated')))}; inferred: "
                 f"{_e(_bands_text(document.get('bands_inferred')))}. {_e(document.get('bands_note', ''))}</p>")
    return (f'<section class="reported" id="reported-{_e(_file_stem(path.name))}">'
            f"<h2>Reported, not reproduced: {_e(document['source'])}</h2>"
            f"<p class=\"note\">From <code>{_e(path.name)}</code>. {_e(document.get('note', ''))}</p>{bands}"
            f"<table><thead><tr><th>data set</th><th>N_G</th><th>attack</th>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></section>")


def render_html(sections: list[Section], galleries: list[Gallery], reported: list[tuple[Path, dict]],
                sources: list[str]) -> str:
    parts = ["<h1>side-bench leaderboard</h1>",
             f'<p class="note">Reproduced results. {_e(LEGEND)}</p>',
             f'<p class="note">Runs: {_e(", ".join(sources))}</p>']
    setup = None
    for section in sections:
        if section.setup != setup:
            setup = section.setup
            parts.append(f"<h2>{_e(setup)}</h2>")
        seeds = int(section.part["n_seeds"].max())
        parts.append(f"<h3>{_e(section.metric)} {_e(section.band)}</h3>"
                     f'<p class="note">{seeds} seed(s) per cell.</p>')
        figures = "".join(_figure_html(f) for f in [section.plot, *section.sweeps] if f is not None)
        parts.append(f'<div class="pair"><div>{_table_html(section)}</div>{figures}</div>')
    if galleries:
        parts.append("<h2>Galleries</h2>")
        parts.append('<div class="gallery">' + "".join(
            f'<figure><a href="{_e(g.image)}"><img src="{_e(g.image)}" alt="{_e(g.attack)} at scale {g.scale}"></a>'
            f"<figcaption>{_e(g.setup)}<br>{_e(g.attack)} @ scale {g.scale}, seed {g.seed}</figcaption></figure>"
            for g in galleries) + "</div>")
    parts.extend(_reported_html(path, document) for path, document in reported)
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>side-bench leaderboard</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


# ------------------------------------------------------------------------------------------
# Putting it together
# ------------------------------------------------------------------------------------------


def _sources(rows: pd.DataFrame) -> list[str]:
    pairs = rows[["suite", "run_id"]].drop_duplicates().itertuples(index=False)
    return [f"{suite}/{run_id}" for suite, run_id in pairs]


def render_table(table: pd.DataFrame, fmt: str) -> str:
    """The leaderboard frame as CSV or JSON text (numbers stay numbers: fractions, not percent)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=2) + "\n"
    raise ValueError(fmt)


def write_report(results, *, formats: Iterable[str] = ("md",), out: str | Path | None = None,
                 metric: str | None = None, band: str | None = None,
                 reported: Iterable[str | Path] = ()) -> dict[str, str | Path]:
    """Build the leaderboard of ``results`` and write it.

    With ``out``: writes each format's file there (plus plots/ and galleries/ for md and
    html) and returns {format: path}. Without: returns {format: text} (html needs ``out``:
    its images are files).
    """
    formats = list(dict.fromkeys(formats))
    for fmt in formats:
        if fmt not in FORMATS:
            raise BenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if out is None and "html" in formats:
        raise BenchError("--format html: needs --out DIR (the page's images are files next to it)")
    rows = select(load_rows(results), metric=metric, band=band)
    table = aggregate(rows)
    reported_files = find_reported(reported)
    out_dir = Path(out) if out is not None else None
    pages = {"md", "html"} & set(formats)
    sections = [Section(setup, m, b, part) for setup, m, b, part in groups(table)]
    galleries: list[Gallery] = []
    if out_dir is not None and pages:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("plots", "galleries"):  # a regenerated leaderboard must not keep old images
            shutil.rmtree(out_dir / stale, ignore_errors=True)
        for section in sections:
            section.plot = plot_against_scale(section, out_dir)
            section.sweeps = plot_sweeps(section, out_dir)
        galleries = copy_galleries(rows, out_dir)
    sources = _sources(rows)
    written: dict[str, str | Path] = {}
    for fmt in formats:
        if fmt == "md":
            text = render_markdown(sections, galleries, reported_files, sources)
        elif fmt == "html":
            text = render_html(sections, galleries, reported_files, sources)
        else:
            text = render_table(table, fmt)
        if out_dir is None:
            written[fmt] = text
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / PAGE_FILE[fmt]
            path.write_text(text)
            written[fmt] = path
    return written


__all__ = ["FORMATS", "render_html", "render_markdown", "write_report", "format_value"]
