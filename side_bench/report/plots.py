"""The leaderboard's plots: each metric against scale, and a swept attack against its setting.

Each plot is written twice, PNG (shown in the page) and SVG (for print). Scales double, so
the x axis is logarithmic; the legend sits outside the data; an attack keeps one colour in
every plot of a page (``attack_colours``); the null baseline is a shaded band where its
interval is known. A suite with one scale gets a dot chart per attack instead of a line
with one x tick (``plot_dot_chart``). Every plot of a rate has a companion panel: each
attack's difference to UnCond with its 95% interval (``plot_difference_against_scale``, and
in ``plot_sweeps`` and ``plot_setting_curve``; why a panel rather than a log axis: see
``REFERENCE_WHY``). Labels are capped (``leaderboard.cap``): a result file may hold anything.
A submitted attack carries its origin's mark in every legend, tick label and title that names
it (``attack_label``, ``marks`` from ``submissions.origin_marks``), as its row in the tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from side_bench.report.leaderboard import PERCENT_UNITS, cap, wide
from side_bench.scoring import stats

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


Marks = dict[tuple[str, str], str]  # (setup as the page shows it, attack) -> its origin's mark


def attack_label(attack: str, setup: str, marks: Marks | None = None) -> str:
    """An attack's name in a plot: capped at 40 characters, then its origin's mark where it was
    submitted ("[submitted, verified]", ...: ``submissions.ORIGIN_MARKS``), never cut off by the cap,
    so that a plot says what its table says. This project's attacks have no mark."""
    mark = (marks or {}).get((cap(setup, 160), str(attack)))
    return f"{cap(attack, 40)} {mark}" if mark else cap(attack, 40)


def _new_axes(title: str, subtitle: str, height: float = 3.8):
    from matplotlib.figure import Figure as MplFigure  # no pyplot: no global state, no display

    figure = MplFigure(figsize=(7.2, height), dpi=100, layout="constrained")
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



def _lines_against_scale(axes, frame: pd.DataFrame, order: list, colours: dict, bars_of, factor: float,
                         label=lambda attack: cap(attack, 40)) -> None:
    """One line per attack (in ``order``) against scale, with the error bars ``bars_of(lines,
    factor)`` gives: the rates themselves, or their differences to the reference attack; each
    named in the legend by ``label(attack)``."""
    for attack in order:
        lines = frame[frame["attack"] == attack].sort_values("scale")
        values, bars = bars_of(lines, factor)
        colour, marker = colours.get(attack, ("#000000", "o"))
        axes.errorbar(lines["scale"], values, yerr=bars, marker=marker, markersize=4, capsize=2, linewidth=1.2,
                      color=colour, label=label(attack))


def _log_scale_axis(axes, scales) -> None:
    scales = sorted({int(s) for s in scales})
    if len(scales) > 1 and min(scales) > 0:
        axes.set_xscale("log", base=2)
        axes.minorticks_off()
    axes.set_xticks(scales, [str(s) for s in scales])


def plot_against_scale(part: pd.DataFrame, *, metric: str, band: str, setup: str, out: Path,
                       colours: dict[str, tuple[str, str]], marks: Marks | None = None) -> Figure:
    """The metric against scale, one line per attack (bars: 95% intervals), the null as a shaded band;
    at a single scale, a dot chart per attack (``plot_dot_chart``)."""
    if part["scale"].nunique() == 1:
        return plot_dot_chart(part, metric=metric, band=band, setup=setup, out=out, colours=colours, marks=marks)
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
    _lines_against_scale(axes, part, order, colours, _error_bars, factor, lambda a: attack_label(a, setup, marks))
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


def plot_sweeps(part: pd.DataFrame, *, metric: str, band: str, setup: str, out: Path,
                reference: str | None = None, marks: Marks | None = None) -> list[Figure]:
    """For each attack swept over one setting: the metric against the setting, one line per scale;
    for a rate, followed by its panel of differences to UnCond (``reference``) at each scale."""
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
        # the swept attack is in the title, not the legend (its lines are scales): its mark too
        title = (f"{metric} {band} of {attack_label(base, setup, _base_marks(variants, setup, marks))} against "
                 f"{cap(key, 40)}").replace("  ", " ")
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
        with_reference = pd.concat([variants, part[part["attack"] == reference]])
        differences = difference_lines(with_reference, reference, ["scale"])
        if not differences.empty:
            series = [(f"scale {scale}", styles[f"scale {scale}"], lines.sort_values("x"))
                      for scale, lines in differences.groupby("scale")]
            figures.append(_difference_panel(
                series, title=f"{title} difference to {cap(reference, 40)}", setup=setup, x_label=cap(key, 40),
                y_label=_difference_label(metric, unit, reference), reference=attack_label(reference, setup, marks),
                factor=factor,
                log=axes.get_xscale() == "log", stem=file_stem("sweep-diff", base, key, metric, band, setup), out=out))
    return figures


def _base_marks(variants: pd.DataFrame, setup: str, marks: Marks | None) -> Marks:
    """The mark of a swept attack's variants (one submission: one origin), keyed by their base."""
    found = {(marks or {}).get((cap(setup, 160), str(a))) for a in variants["attack"]} - {None}
    return {(cap(setup, 160), str(variants["attack_base"].iloc[0])): found.pop()} if len(found) == 1 else {}


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
                       colours: dict[str, tuple[str, str]], reference: str | None = None,
                       marks: Marks | None = None) -> list[Figure]:
    """One metric against one of its settings (column ``x``), one line per attack, one plot per
    scale: e.g. canary recall against the duplication count d (log axis when the values spread
    4x or more); bars are 95% intervals, the null (held-out images) dotted. For a rate, each
    plot is followed by its panel of differences to UnCond (``reference``)."""
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
                          color=colour, label=attack_label(attack, setup, marks))
        ticks = sorted(set(at_scale["x"]))
        if min(ticks) > 0 and max(ticks) / min(ticks) >= 4:
            axes.set_xscale("log", base=2)
            axes.minorticks_off()
        axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
        axes.set_xlabel(f"{cap(key, 40)} (log axis)" if axes.get_xscale() == "log" else cap(key, 40))
        axes.set_ylabel(_y_label(title, unit))
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        figures.append(_save(figure, out, file_stem("curve", title, key, band, setup, str(scale)), heading))
        differences = difference_lines(at_scale, reference, ["x"])
        if not differences.empty:
            series = [(attack_label(attack, setup, marks), colours.get(attack, ("#000000", "o")),
                       differences[differences["attack"] == attack].sort_values("x"))
                      for attack in order if attack in set(differences["attack"])]
            figures.append(_difference_panel(
                series, title=f"{heading} difference to {cap(reference, 40)}", setup=setup,
                x_label=axes.get_xlabel(), y_label=_difference_label(title, unit, reference),
                reference=attack_label(reference, setup, marks),
                factor=factor, log=axes.get_xscale() == "log",
                stem=file_stem("curve-diff", title, key, band, setup, str(scale)), out=out))
    return figures


# ------------------------------------------------------------------------------------------
# One scale: a dot chart per attack
# ------------------------------------------------------------------------------------------


def _finite(value) -> float | None:
    """A number from a table's line, None where it is missing (NaN) or not finite."""
    number = _numeric(value)
    return number if number is not None and math.isfinite(number) else None


def _dot_height(lines: int) -> float:
    return max(2.4, 1.3 + 0.32 * lines)


def plot_dot_chart(part: pd.DataFrame, *, metric: str, band: str, setup: str, out: Path,
                   colours: dict[str, tuple[str, str]], marks: Marks | None = None) -> Figure:
    """A suite with one scale: one dot per attack with its 95% interval, in the table's order (the
    first at the top), the null baseline a shaded band; a line plot would have one x tick."""
    unit = _unit(part)
    factor = 100.0 if unit in PERCENT_UNITS else 1.0
    scale = part["scale"].iloc[0]
    title = f"{metric} {band}".strip()
    _, order, _, _ = wide(part)
    figure, axes = _new_axes(title, f"{setup}, scale {scale}", height=_dot_height(len(order)))
    null = part.iloc[0]
    null_value = _finite(null.get("null_value"))
    if null_value is not None:
        low, high = _finite(null.get("null_ci_low")), _finite(null.get("null_ci_high"))
        if low is not None and high is not None:
            axes.axvspan(low * factor, high * factor, color=NULL_COLOUR, alpha=0.18, linewidth=0,
                         label="null 95% interval")
        axes.axvline(null_value * factor, color=NULL_COLOUR, linestyle="--", linewidth=1, label="null (held-out)")
    positions = list(range(len(order)))[::-1]
    for y, attack in zip(positions, order, strict=True):
        lines = part[part["attack"] == attack]
        values, bars = _error_bars(lines, factor)
        colour, marker = colours.get(attack, ("#000000", "o"))
        axes.errorbar(values, [y] * len(lines), xerr=bars, fmt=marker, markersize=5, capsize=3, color=colour)
    axes.set_yticks(positions, [attack_label(a, setup, marks) for a in order])
    axes.set_ylim(-0.7, len(order) - 0.3)
    axes.grid(False, axis="y")
    axes.set_xlabel(_y_label(metric, unit))
    if null_value is not None:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, out, file_stem("dots", metric, band, setup), title)


# ------------------------------------------------------------------------------------------
# A rate plot's companion panel: each attack's difference to UnCond
# ------------------------------------------------------------------------------------------

# Why a panel of differences rather than a log axis: the question a reader brings to these
# plots is "does this attack beat UnCond?", and at the scales where it is open (digits-power at
# 96-160) every rate is a few percent: the lines overlap in the bottom 5% of a linear axis. A
# log axis would spread them, but leaves the comparison to the eye, with intervals that are
# not the difference's, and cannot show a rate of 0 (0 of 4,096 is common at large scales).
# The difference, with its own interval (Newcombe's for two rates, stats.difference), shows 0,
# and whether the gap is resolved is whether the interval crosses the zero line.
REFERENCE_WHY = "a difference panel: the question is each attack against UnCond, and 0 must show"
REFERENCE_CONDITION, REFERENCE_EXTRACTOR = "none", "sample"  # UnCond: the target sampled plainly
REFERENCE_NAME = "uncond"


def reference_attack(rows: pd.DataFrame) -> str | None:
    """The page's UnCond: the attack that samples the target plainly (condition ``none``,
    extractor ``sample``, nothing swept), the one named 'uncond' among several, else the first;
    None when the suite has none (its plots then have no difference panel)."""
    if rows.empty or not {"condition", "extractor", "attack"} <= set(rows.columns):
        return None
    plain = rows[(rows["condition"] == REFERENCE_CONDITION) & (rows["extractor"] == REFERENCE_EXTRACTOR)]
    if "swept" in plain:
        plain = plain[[not s for s in plain["swept"]]]
    found = list(dict.fromkeys(plain["attack"]))
    return REFERENCE_NAME if REFERENCE_NAME in found else (found[0] if found else None)


def _estimate(line: pd.Series) -> dict:
    return {k: _finite(line.get(k)) for k in ("value", "count", "n", "se")}


def difference_lines(part: pd.DataFrame, reference: str | None, match: list[str]) -> pd.DataFrame:
    """Every line of ``part`` but the reference's, minus the reference's line that agrees on
    ``match`` (e.g. the scale), with a 95% interval (``stats.difference``): the columns of
    ``part`` plus ``diff``, ``diff_low`` and ``diff_high``. Empty for a metric not shown in
    percent (a rate plot's panel), without a reference, or where no difference can be computed."""
    if reference is None or part.empty or _unit(part) not in PERCENT_UNITS:
        return part.iloc[0:0].assign(diff=[], diff_low=[], diff_high=[])
    references = {tuple(line[m] for m in match): line for _, line in part[part["attack"] == reference].iterrows()}
    found = []
    for _, line in part[part["attack"] != reference].iterrows():
        other = references.get(tuple(line[m] for m in match))
        result = None if other is None else stats.difference(_estimate(line), _estimate(other))
        if result is not None:
            found.append({**line.to_dict(), "diff": result[0], "diff_low": result[1], "diff_high": result[2]})
    return pd.DataFrame(found) if found else part.iloc[0:0].assign(diff=[], diff_low=[], diff_high=[])


def _difference_bars(lines: pd.DataFrame, factor: float):
    d = lines["diff"].astype(float)
    return d * factor, [(d - lines["diff_low"]).clip(lower=0) * factor, (lines["diff_high"] - d).clip(lower=0) * factor]


def _difference_label(metric: str, unit: str | None, reference: str) -> str:
    points = " (points)" if unit in PERCENT_UNITS else ""
    return f"{cap(metric, 30)} minus {cap(reference, 30)}{points}"


def _nice_at_least(value: float) -> float:
    """The least of 1, 2, 5 x 10^k that is >= ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-9))


def _symlog_ticks(low: float, high: float, linear: float) -> list[float]:
    """0, +-linear and the 1-2-5 steps beyond it inside [low, high] (at most about nine)."""
    for steps in ((1, 2, 5), (1, 3), (1,)):
        ticks = {0.0}
        power = 10.0 ** math.floor(math.log10(linear))
        while power <= 10 * max(abs(low), abs(high), linear):
            for step in steps:
                tick = step * power
                if tick >= linear * (1 - 1e-9):
                    ticks |= {t for t in (tick, -tick) if low <= t <= high}
            power *= 10
        if len(ticks) <= 9:
            break
    return sorted(ticks)


def _say_axis(axes, words: str) -> None:
    """A third title line for an axis that is not linear."""
    if words:
        axes.set_title(f"{axes.get_title()}\n{words}", fontsize=9)


def _difference_axis(axes, lines: pd.DataFrame, factor: float, axis: str = "y") -> str:
    """A symmetric log axis for differences that span far more than their intervals (digits-power:
    -33 points at scale 64, a few tenths at 112-160, where the question is open): linear within
    +-L, L the typical interval's half-width rounded up to 1-2-5, logarithmic beyond, so a gap
    of a few tenths and its interval stay readable beside one of 30 points. Linear otherwise.
    Returns the words that say so, for the title ('' when linear)."""
    low, high = lines["diff_low"].astype(float) * factor, lines["diff_high"].astype(float) * factor
    half = ((high - low) / 2).where(lambda h: h > 0).dropna()
    reach = float(max(high.abs().max(), low.abs().max(), 0.0))
    if half.empty or reach <= 8 * float(half.median()):
        return ""
    linear = _nice_at_least(2 * float(half.median()))
    scale = axes.set_yscale if axis == "y" else axes.set_xscale
    scale("symlog", linthresh=linear, linscale=1.0)
    lower, upper = min(float(low.min()), 0.0), max(float(high.max()), 0.0)
    margin = 0.05 * (upper - lower)
    ticks = _symlog_ticks(lower - margin, upper + margin, linear)
    (axes.set_yticks if axis == "y" else axes.set_xticks)(ticks, [f"{t:g}" for t in ticks])
    axes.minorticks_off()
    return f"{'y' if axis == 'y' else 'x'} axis: symmetric log, linear within \u00b1{linear:g}"


def plot_difference_against_scale(part: pd.DataFrame, *, metric: str, band: str, setup: str, out: Path,
                                  colours: dict[str, tuple[str, str]], reference: str | None,
                                  marks: Marks | None = None) -> Figure | None:
    """The companion of ``plot_against_scale`` for a rate: each attack minus UnCond at each scale,
    with its 95% interval (Newcombe's), on the same log axis; at one scale, a dot chart. None when
    there is nothing to compare (no UnCond, or not a rate)."""
    lines = difference_lines(part, reference, ["scale"])
    if lines.empty:
        return None
    unit = _unit(part)
    factor = 100.0 if unit in PERCENT_UNITS else 1.0
    title = f"{metric} {band} difference to {cap(reference, 40)}".replace("  ", " ")
    _, order, _, _ = wide(part)
    order = [a for a in order if a in set(lines["attack"])]
    if part["scale"].nunique() == 1:
        figure, axes = _new_axes(title, f"{setup}, scale {part['scale'].iloc[0]}", height=_dot_height(len(order)))
        positions = list(range(len(order)))[::-1]
        for y, attack in zip(positions, order, strict=True):
            mine = lines[lines["attack"] == attack]
            values, bars = _difference_bars(mine, factor)
            colour, marker = colours.get(attack, ("#000000", "o"))
            axes.errorbar(values, [y] * len(mine), xerr=bars, fmt=marker, markersize=5, capsize=3, color=colour)
        axes.axvline(0, color=colours.get(reference, (NULL_COLOUR,))[0], linewidth=1.2)
        axes.set_yticks(positions, [attack_label(a, setup, marks) for a in order])
        axes.set_ylim(-0.7, len(order) - 0.3)
        axes.grid(False, axis="y")
        axes.set_xlabel(_difference_label(metric, unit, reference))
        _say_axis(axes, _difference_axis(axes, lines, factor, "x"))
        return _save(figure, out, file_stem("dots-diff", metric, band, setup), title)
    figure, axes = _new_axes(title, setup)
    axes.axhline(0, color=colours.get(reference, (NULL_COLOUR,))[0], linewidth=1.2,
                 label=f"{attack_label(reference, setup, marks)} (0)")
    _lines_against_scale(axes, lines, order, colours, _difference_bars, factor, lambda a: attack_label(a, setup, marks))
    _log_scale_axis(axes, part["scale"])
    axes.set_xlabel("scale (training images, log axis)")
    axes.set_ylabel(_difference_label(metric, unit, reference))
    _say_axis(axes, _difference_axis(axes, lines, factor))
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, out, file_stem("scale-diff", metric, band, setup), title)


def _difference_panel(series: list[tuple[str, tuple[str, str], pd.DataFrame]], *, title: str, setup: str,
                      x_label: str, y_label: str, reference: str, factor: float, log: bool, stem: str,
                      out: Path) -> Figure:
    """A panel of differences (column ``diff`` against ``x``), one line per (label, (colour,
    marker), lines), the reference at 0; the x axis as the plot it accompanies. ``reference``
    and the labels come as the legend shows them (``attack_label``: capped, marked)."""
    figure, axes = _new_axes(title, setup)
    axes.axhline(0, color=NULL_COLOUR, linewidth=1.2, label=f"{reference} (0)")
    ticks = set()
    for label, (colour, marker), lines in series:
        values, bars = _difference_bars(lines, factor)
        axes.errorbar(lines["x"], values, yerr=bars, marker=marker, markersize=4, capsize=2, linewidth=1.2,
                      color=colour, label=label)
        ticks |= set(lines["x"])
    if log:
        axes.set_xscale("log")
        axes.minorticks_off()
    ticks = sorted(ticks)
    axes.set_xticks(ticks, [f"{x:g}" for x in ticks])
    axes.set_xlabel(x_label)
    everything = pd.concat([lines for _, _, lines in series])
    axes.set_ylabel(y_label)
    _say_axis(axes, _difference_axis(axes, everything, factor))
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(figure, out, stem, title)


REFERENCE_STYLE = ("#000000", "--")
SEED_STYLES = ("-", ":", "-.", (0, (5, 2, 1, 2)))


def plot_extraction_curves(curves: list[dict], *, setup: str, out: Path, colours: dict[str, tuple[str, str]],
                           criterion: str, marks: Marks | None = None) -> Figure | None:
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
                name = attack_label(attack, setup, marks) + (f" (seed {seed})" if len(seeds) > 1 else "")
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
