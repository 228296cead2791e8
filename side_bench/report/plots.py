"""The leaderboard's plots: each metric against scale, and a swept attack against its setting.

Each plot is written twice, PNG (shown in the page) and SVG (for print). Scales double, so
the x axis is logarithmic; the legend sits outside the data; an attack keeps one colour in
every plot of a page (``attack_colours``); the null baseline is a shaded band where its
interval is known. Labels are capped (``leaderboard.cap``): a result file may hold anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from side_bench.report.leaderboard import PERCENT_UNITS, cap, wide

NULL_COLOUR = "#555555"
# Okabe-Ito and tab10 without grey: distinct for colour-blind readers first, then more.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
           "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class Figure:
    """One plot, paths relative to the output folder."""

    title: str
    png: str
    svg: str


def file_stem(*parts: str) -> str:
    """A safe, unique file name for strings that may hold anything (attack names included)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p[:200] for p in parts if p)).strip("-")[:60] or "plot"
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:8]
    return f"{slug}-{digest}"


def attack_colours(attacks) -> dict[str, tuple[str, str]]:
    """(colour, marker) per attack, in the given order: the same attack looks the same in every plot."""
    styles = {}
    for attack in attacks:
        if attack not in styles:
            i = len(styles)
            styles[attack] = (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)])
    return styles


def _new_axes(title: str, subtitle: str):
    from matplotlib.figure import Figure as MplFigure  # no pyplot: no global state, no display

    figure = MplFigure(figsize=(7.2, 3.8), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(f"{cap(title)}\n{cap(subtitle)}", fontsize=9)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _save(figure, out: Path, stem: str, title: str) -> Figure:
    (out / "plots").mkdir(parents=True, exist_ok=True)
    png, svg = f"plots/{stem}.png", f"plots/{stem}.svg"
    from matplotlib import rc_context

    figure.savefig(out / png)
    _palette(out / png)
    # Text as text (a third of the size, and searchable); no timestamp and fixed element ids
    # (matplotlib draws them at random unless salted), so a regenerated page diffs cleanly.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "side-bench"}):
        figure.savefig(out / svg, metadata={"Date": None})
    return Figure(title=cap(title, 160), png=png, svg=svg)


def _palette(path: Path) -> None:
    """A line plot needs few colours: a 256-colour palette PNG is a third of the size, the same to the eye."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def _unit(part: pd.DataFrame) -> str | None:
    units = part["unit"].dropna() if "unit" in part else pd.Series(dtype=object)
    return units.iloc[0] if len(units) else None


def _y_label(metric: str, unit: str | None) -> str:
    return f"{cap(metric, 40)} (%)" if unit in PERCENT_UNITS else cap(metric, 40)


def _error_bars(lines: pd.DataFrame, factor: float):
    """Asymmetric bars from each value to its 95% interval (none where it is unknown)."""
    value = pd.to_numeric(lines["value"], errors="coerce")
    low = (value - pd.to_numeric(lines["ci_low"], errors="coerce")).clip(lower=0).fillna(0)
    high = (pd.to_numeric(lines["ci_high"], errors="coerce") - value).clip(lower=0).fillna(0)
    return value * factor, [low * factor, high * factor]


def _log_scale_axis(axes, scales) -> None:
    scales = sorted({int(s) for s in scales})
    if len(scales) > 1 and min(scales) > 0:
        axes.set_xscale("log", base=2)
        axes.minorticks_off()
    axes.set_xticks(scales, [str(s) for s in scales])


def plot_against_scale(part: pd.DataFrame, *, metric: str, band: str, setup: str, out: Path,
                       colours: dict[str, tuple[str, str]]) -> Figure:
    """The metric against scale, one line per attack (bars: 95% intervals), the null as a shaded band."""
    unit = _unit(part)
    factor = 100.0 if unit in PERCENT_UNITS else 1.0
    title = f"{metric} {band}".strip()
    figure, axes = _new_axes(title, setup)
    nulls = part.drop_duplicates("scale").sort_values("scale")
    null_values = pd.to_numeric(nulls["null_value"], errors="coerce")
    if null_values.notna().any():
        low = pd.to_numeric(nulls["null_ci_low"], errors="coerce")
        high = pd.to_numeric(nulls["null_ci_high"], errors="coerce")
        if low.notna().all() and high.notna().all():
            axes.fill_between(nulls["scale"], low * factor, high * factor, color=NULL_COLOUR, alpha=0.18,
                              linewidth=0, label="null 95% interval")
        axes.plot(nulls["scale"], null_values * factor, color=NULL_COLOUR, linestyle="--", linewidth=1,
                  label="null (held-out)")
    _, order, _, _ = wide(part)  # the legend lists the attacks in the table's order
    for attack in order:
        lines = part[part["attack"] == attack].sort_values("scale")
        values, bars = _error_bars(lines, factor)
        colour, marker = colours.get(attack, ("#000000", "o"))
        axes.errorbar(lines["scale"], values, yerr=bars, marker=marker, markersize=4, capsize=2, linewidth=1.2,
                      color=colour, label=cap(attack, 40))
    _log_scale_axis(axes, part["scale"])
    axes.set_xlabel("scale (training images, log axis)")
    axes.set_ylabel(_y_label(metric, unit))
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, out, file_stem("scale", metric, band, setup), title)


def _numeric(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_sweeps(part: pd.DataFrame, *, metric: str, band: str, setup: str, out: Path) -> list[Figure]:
    """For each attack swept over one setting: the metric against the setting, one line per scale."""
    figures = []
    unit = _unit(part)
    factor = 100.0 if unit in PERCENT_UNITS else 1.0
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
        title = f"{metric} {band} of {cap(base, 40)} against {cap(key, 40)}".replace("  ", " ")
        figure, axes = _new_axes(title, setup)
        styles = attack_colours(f"scale {s}" for s in sorted(variants["scale"].unique()))
        for scale, lines in variants.groupby("scale"):
            lines = lines.sort_values("x")
            values, bars = _error_bars(lines, factor)
            colour, _ = styles[f"scale {scale}"]
            axes.errorbar(lines["x"], values, yerr=bars, marker="o", markersize=4, capsize=2, color=colour,
                          label=f"scale {scale}")
            null = pd.to_numeric(lines["null_value"], errors="coerce").mean()
            if pd.notna(null):
                axes.axhline(null * factor, linestyle=":", color=colour, alpha=0.7)
        if min(x_values) > 0 and max(x_values) / min(x_values) >= 4:
            axes.set_xscale("log")
            axes.minorticks_off()
        ticks = sorted(set(x_values))
        axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
        axes.set_xlabel(cap(key, 40))
        axes.set_ylabel(_y_label(metric, unit))
        axes.legend(fontsize=7, title="dotted: null", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    frameon=False)
        figures.append(_save(figure, out, file_stem("sweep", base, key, metric, band, setup), title))
    return figures


def setting_curves(rows: pd.DataFrame) -> list[tuple[str, dict[str, float]]]:
    """Metric ids that are one metric at several values of one numeric setting, e.g.
    ``canary-recall`` with ``count`` 1, 2, 4 ... as ids ``canary-recall-d1`` ...: [(setting,
    {metric id: value})]. One metric is told by its description and unit (the rows carry no
    plugin name); ids whose settings differ in more than one key, or in a non-numeric one, are
    no curve. Non-positive values (e.g. ``count = 0``, every canary) are a summary, not a point."""
    if rows.empty or "metric_settings" not in rows:
        return []
    first = rows.drop_duplicates("metric")
    groups: dict[tuple, list[tuple[str, dict]]] = {}
    for _, row in first.iterrows():
        settings = row["metric_settings"] if isinstance(row["metric_settings"], dict) else {}
        key = (row.get("metric_description"), row.get("unit"), tuple(sorted(settings)))
        groups.setdefault(key, []).append((str(row["metric"]), settings))
    curves = []
    for members in groups.values():
        if len(members) < 3:
            continue
        names = members[0][1].keys()
        varying = [k for k in names if len({json.dumps(s[k], sort_keys=True, default=str) for _, s in members}) > 1]
        if len(varying) != 1:
            continue
        key = varying[0]
        points = {metric: _numeric(s[key]) for metric, s in members}
        points = {metric: x for metric, x in points.items() if x is not None and x > 0}
        if len(set(points.values())) >= 3 and len(set(points.values())) == len(points):
            curves.append((key, points))
    return curves


def plot_setting_curve(part: pd.DataFrame, *, key: str, title: str, band: str, setup: str, out: Path,
                       colours: dict[str, tuple[str, str]]) -> list[Figure]:
    """One metric against one of its settings (column ``x``), one line per attack, one plot per
    scale: e.g. canary recall against the duplication count d (log axis when the values spread
    4x or more); bars are 95% intervals, the null (held-out images) dotted."""
    figures = []
    unit = _unit(part)
    factor = 100.0 if unit in PERCENT_UNITS else 1.0
    _, order, _, _ = wide(part)
    for scale, at_scale in part.groupby("scale"):
        heading = f"{title} {band} against {key}, scale {scale}".replace("  ", " ")
        figure, axes = _new_axes(heading, setup)
        nulls = at_scale.drop_duplicates("x").sort_values("x")
        null_values = pd.to_numeric(nulls["null_value"], errors="coerce")
        if null_values.notna().any():
            axes.plot(nulls["x"], null_values * factor, color=NULL_COLOUR, linestyle=":", linewidth=1,
                      label="null (held-out)")
        for attack in order:
            lines = at_scale[at_scale["attack"] == attack].sort_values("x")
            if lines.empty:
                continue
            values, bars = _error_bars(lines, factor)
            colour, marker = colours.get(attack, ("#000000", "o"))
            axes.errorbar(lines["x"], values, yerr=bars, marker=marker, markersize=4, capsize=2, linewidth=1.2,
                          color=colour, label=cap(attack, 40))
        ticks = sorted(set(at_scale["x"]))
        if min(ticks) > 0 and max(ticks) / min(ticks) >= 4:
            axes.set_xscale("log", base=2)
            axes.minorticks_off()
        axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
        axes.set_xlabel(f"{cap(key, 40)} (log axis)" if axes.get_xscale() == "log" else cap(key, 40))
        axes.set_ylabel(_y_label(title, unit))
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        figures.append(_save(figure, out, file_stem("curve", title, key, band, setup, str(scale)), heading))
    return figures


REFERENCE_STYLE = ("#000000", "--")
SEED_STYLES = ("-", ":", "-.", (0, (5, 2, 1, 2)))


def plot_extraction_curves(curves: list[dict], *, setup: str, out: Path, colours: dict[str, tuple[str, str]],
                           criterion: str) -> Figure | None:
    """Extraction against cost (report/budget.py), one panel per scale: distinct training images
    copied (top) and copies (bottom) against cumulative cost (log axis), one line per attack and
    seed (line style by seed), the reference's (UnCond's) largest cell per seed dashed black."""
    if not curves:
        return None
    from matplotlib.figure import Figure as MplFigure

    scales = sorted({int(c["scale"]) for c in curves})
    seeds = sorted({int(c["seed"]) for c in curves})
    chosen: dict[tuple, dict] = {}  # per attack, scale and seed: the cell with most candidates
    for c in curves:
        key = (c["attack"], int(c["scale"]), int(c["seed"]))
        if c["points"] and (key not in chosen or c["n_generations"] > chosen[key]["n_generations"]):
            chosen[key] = c
    figure = MplFigure(figsize=(max(7.2, 2.7 * len(scales) + 1.8), 5.4), dpi=100, layout="constrained")
    grid = figure.subplots(2, len(scales), squeeze=False, sharex="col")
    title = f"Extraction against cost ({cap(criterion, 60)})"
    figure.suptitle(f"{title}\n{cap(setup)}", fontsize=9)
    handles = {}
    for column, scale in enumerate(scales):
        for row, (field, label) in enumerate((("distinct", "distinct training images"), ("copies", "copies"))):
            axes = grid[row][column]
            axes.grid(True, alpha=0.3)
            for (attack, at_scale, seed), c in chosen.items():
                if at_scale != scale:
                    continue
                colour, _ = REFERENCE_STYLE if c.get("reference") else colours.get(attack, ("#000000", "o"))
                style = REFERENCE_STYLE[1] if c.get("reference") else SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)]
                x = [p["cost"] for p in c["points"]]
                y = [p[field] for p in c["points"]]
                name = cap(attack, 40) + (f" (seed {seed})" if len(seeds) > 1 else "")
                (line,) = axes.plot(x, y, color=colour, linestyle=style, linewidth=1.3 if c.get("reference") else 1.1)
                axes.plot(x[-1:], y[-1:], marker="o", markersize=3, color=colour)  # everything it spent
                handles.setdefault(name, line)
            axes.set_xscale("log")
            if row == 0:
                axes.set_title(f"scale {scale}", fontsize=9)
            if row == 1:
                axes.set_xlabel("cost (UNet-eval. equiv., log)", fontsize=8)
            if column == 0:
                axes.set_ylabel(label, fontsize=8)
            axes.tick_params(labelsize=7)
    figure.legend(list(handles.values()), list(handles), fontsize=7, loc="outside right upper", frameon=False)
    return _save(figure, out, file_stem("cost", setup, criterion), title)
