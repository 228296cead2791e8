"""The leaderboard page as data: one model that the Markdown and HTML templates both render.

Per setup, the page opens with the headline table (the suite's headline metric, attack x
scale, with the null baseline row; a suite that names none gets the table that ``HEADLINE_RULE``
picks from the evidence, and a note wherever another table disagrees with its sentences) and
a few sentences generated from its numbers; then a
legend of the attacks and metrics, taken from the plugins' own descriptions; then every
other metric and band, one collapsible section each, in a stable order (the headline
metric's other bands first, then the suite's metrics in order; within a metric the high
band before mid before low). Every string from a result file reaches the page capped
(``cap``); the templates escape it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from side_bench.errors import BenchError
from side_bench.report.galleries import Gallery
from side_bench.report.leaderboard import (
    LABEL_LIMIT,
    PERCENT_UNITS,
    RANK_RULE,
    SATURATED_LABEL,
    cap,
    format_cell,
    format_value,
    groups,
    model_lines,
    wide,
)
from side_bench.report.plots import Figure, file_stem
from side_bench.scoring import stats

TITLE = "side-bench leaderboard"
NULL_LABEL = "null baseline (held-out real images)"
REPORTED_BANDS = ("low", "mid", "high")
MARKS = (
    "Each cell: the value pooled over seeds, [its 95% interval] and (k/N_G) for rates (Wilson interval of the "
    "pooled count; any other metric: the interval it computes, named in each row's 'interval'), 'sd' across "
    "seeds when there are several, "
    f"#rank at that scale and 'n.s.' when not significantly above the null baseline. {RANK_RULE} Rates in percent. "
    "Rows with different N_G, features or bands are never averaged together: each setup has its own tables. "
    "The null baseline is the metric on held-out real images; a number means something only above it."
)
DIRECTION_TEXT = {"higher": "higher", "lower": "lower"}
MODEL_NOTE = ("A property of the target model, not of the attack: every attack on one model gets the same value, "
              "so it is shown once per target model and scale, pooled over that target's models (each model and "
              "seed once), never ranked, and without a null baseline (it has none).")
MODEL_TARGETS = ("A condition that trains its own target (e.g. on other labels) has its own row: those rows are "
                 "different models, not different attacks on one.")
MODEL_LEGEND = "a property of the target model: the same for every attack on it"
HEADLINE_RULE = (
    "The suite names no headline, so the page opens with the table where an attack stands most significantly "
    f"above the null baseline: of every metric and band, the one with the smallest {stats.CORRECTION}-adjusted "
    f"p-value against the null (over its attacks and scales, counting only values above the null at alpha "
    f"{stats.ALPHA}); ties go to the metric listed first in the suite, then to the higher band. When no attack is "
    "significantly above the null in any table, it is the suite's first metric at its highest band. Where "
    "another table has an attack above the null at a scale at which the headline has none, a note under the "
    "headline's sentences names it."
)


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------


@dataclass
class Cell:
    text: str
    sort: str = ""  # the number the HTML table sorts by ("" when there is none)
    best: bool = False
    dim: bool = False  # not significantly above the null, or not computable
    title: str = ""  # why a value is missing (a tooltip in HTML, a footnote-free text in Markdown)
    # the part of ``text`` that HTML puts on a second line (the interval and count, see
    # ``second_line``); Markdown and the CSV keep the one-line ``text``
    detail: str = ""

    @property
    def head(self) -> str:
        """The first line in HTML: ``text`` without ``detail`` (the value, sd, rank and marks)."""
        return " ".join(self.text.replace(self.detail, "", 1).split()) if self.detail else self.text


@dataclass
class Row:
    label: str
    cells: list[Cell]
    colour: str = ""
    null: bool = False


@dataclass
class Table:
    key: str  # a stable id for the HTML anchor
    setup: str
    metric: str
    band: str  # the band's label, e.g. 'high [0.95, 1]' ('' for a metric without bands)
    headings: list[str]
    rows: list[Row]
    seeds: int
    description: str = ""
    direction: str = "higher"
    unit: str | None = None
    part: pd.DataFrame | None = field(default=None, repr=False)  # the aggregated lines (for plots)
    figures: list[Figure] = field(default_factory=list)
    note: str = ""  # a sentence under the table's title (a model-level metric says so)

    @property
    def title(self) -> str:
        return f"{self.metric} {self.band}".strip()


@dataclass
class SetupPage:
    setup: str
    headline: Table
    sentences: list[str]
    details: list[Table]
    diagnostics: list[str]
    # set only when HEADLINE_RULE chose the headline (the suite names none): why this table, and
    # the other tables above the null where the headline's sentences say no attack is
    chosen: str = ""
    notes: list[str] = field(default_factory=list)
    budget: BudgetSection | None = None  # extraction against cost, equal cost (issue 29); None: no cost measured


@dataclass
class AttackEntry:
    name: str
    colour: str
    condition: str  # name (the settings that differ between the page's attacks, see differing_settings)
    extractor: str
    description: str
    # the rest of its settings, each the same in every attack that has it ("" when none): on demand
    condition_rest: str = ""
    extractor_rest: str = ""


@dataclass
class MetricEntry:
    name: str
    bands: str
    direction: str
    unit: str
    description: str


@dataclass
class ReportedTable:
    key: str
    source: str
    file: str
    note: str
    bands: str
    headings: list[str]
    rows: list[list[str]]


@dataclass
class Page:
    title: str
    marks: str
    sources: list[str]
    setups: list[SetupPage]
    attacks: list[AttackEntry]
    metrics: list[MetricEntry]
    galleries: list[Gallery] = field(default_factory=list)
    reported: list[ReportedTable] = field(default_factory=list)
    headline_rule: str = ""  # HEADLINE_RULE when it chose a setup's headline, for the legend
    # submitted attacks (report/submissions.py): the legend's "Submissions" table and the marks' meaning
    submissions: list = field(default_factory=list)
    origin_legend: str = ""

    @property
    def has_settings_rest(self) -> bool:
        """Whether an attack has settings beyond those that differ (shown on demand)."""
        return any(a.condition_rest or a.extractor_rest for a in self.attacks)
    cost_note: str = ""  # how the cost column converts (empty: no cost measured, no column)

    @property
    def has_details(self) -> bool:
        return any(s.details or s.diagnostics for s in self.setups)

    def tables(self) -> list[Table]:
        return [t for s in self.setups for t in [s.headline, *s.details]]


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def cell_text(line, unit: str | None) -> str:
    """The value with its interval and count, 'sd' over seeds, its rank, and 'n.s.' when not above the null."""
    text = format_cell(unit, line)
    if not text:
        return f"n/a ({cap(line.reason, 100)})" if isinstance(line.reason, str) and line.reason else ""
    if line.n_seeds and line.n_seeds > 1 and pd.notna(line.std):
        text = f"{text} sd {format_value(unit, line.std)}"
    tested = isinstance(getattr(line, "test", None), str)  # rows without counts or errors (old runs): no marks
    if tested and pd.notna(line.rank):
        text = f"{text} #{int(line.rank)}"
    if tested and pd.notna(line.p_null) and not line.above_null:
        text = f"{text} n.s."
    return text


def second_line(line, unit: str | None, text: str, prefix: str = "") -> str:
    """What of a cell's ``text`` goes on its second line in HTML, so that a cell takes at most two
    lines however narrow its column: the interval and the count ('[39.45, 42.46] (1677/4096)'),
    the part of ``format_cell`` after the value; for a value that is missing, why (the HTML cuts
    it to the column's width, the whole reason is the cell's tooltip); '' when ``text`` does not
    hold it as such."""
    value = format_value(unit, getattr(line, prefix + "value", None))
    if not value and text.startswith("n/a (") and text.endswith(")"):  # why it is missing: cut to the column
        return text[len("n/a "):]
    whole = format_cell(unit, line, prefix)
    detail = whole[len(value):].strip() if value and whole.startswith(value) else ""
    return detail if detail and detail in text else ""


def _sort_key(value) -> str:
    return "" if value is None or pd.isna(value) or not math.isfinite(float(value)) else repr(float(value))


def make_table(setup: str, metric: str, band: str, part: pd.DataFrame, styles: dict) -> Table:
    first = part.iloc[0]
    unit = first["unit"] if isinstance(first["unit"], str) else None
    if is_model_level(part):
        return _model_table(setup, metric, band, part, unit)
    scales, attacks, cells, nulls = wide(part)
    rows = []
    for attack in attacks:
        row_cells = []
        for scale in scales:
            line = cells.get((attack, scale))
            if line is None:
                row_cells.append(Cell(""))
                continue
            text = cell_text(line, unit)
            row_cells.append(Cell(text, _sort_key(line.value), best=bool(line.best) and bool(text),
                                  dim=pd.isna(line.value) or (pd.notna(line.p_null) and not line.above_null),
                                  title=cap(line.reason or "", 200), detail=second_line(line, unit, text)))
        rows.append(Row(cap(attack), row_cells, colour=styles.get(attack, ("", ""))[0]))
    null_cells = [Cell(text, _sort_key(nulls[s].null_value), detail=second_line(nulls[s], unit, text, "null_"))
                  for s in scales for text in [format_cell(unit, nulls[s], "null_")]]
    rows.append(Row(NULL_LABEL, null_cells, null=True))
    from side_bench.report.leaderboard import RESOLUTION_LABEL, resolution_texts

    if resolution := resolution_texts(part, scales):  # rates: the least rate this null could resolve
        rows.append(Row(RESOLUTION_LABEL, [Cell(text) for text in resolution], null=True))
    rows += saturation_rows(part, scales)
    return Table(key=file_stem("t", setup, metric, band), setup=cap(setup, 160), metric=cap(metric, 40),
                 band=cap(band, 60), headings=["attack", *[f"scale {s}" for s in scales]], rows=rows,
                 seeds=int(part["n_seeds"].max()), description=_description(part),
                 direction=str(first["direction"] or "higher"), unit=unit, part=part)


SATURATED_ROW = "every value at the metric's edge"
SATURATED_TITLE = ("every value at this scale is the same edge of the metric's range (e.g. every attack 0 of N, "
                   "or an AUC of 1 for every model): ties it cannot break, so nothing is ranked or starred")


def saturated_scales(part: pd.DataFrame, scales: list | None = None) -> list:
    """The scales at which a table's lines are saturated (``leaderboard.mark_saturated``)."""
    if "saturated" not in part:
        return []
    marked = set(part.loc[part["saturated"].fillna(False).astype(bool), "scale"])
    return [s for s in (scales if scales is not None else sorted(part["scale"].unique())) if s in marked]


def saturation_rows(part: pd.DataFrame, scales: list) -> list[Row]:
    """A row "cannot rank here" under the scales where every value is at the metric's edge, or none."""
    marked = set(saturated_scales(part, scales))
    if not marked:
        return []
    return [Row(SATURATED_ROW, [Cell(SATURATED_LABEL if s in marked else "", title=SATURATED_TITLE if s in marked
                                       else "") for s in scales], null=True)]


def _description(part: pd.DataFrame) -> str:
    if "metric_description" not in part:
        return ""
    found = part["metric_description"].dropna()
    return cap(found.iloc[0], 200) if len(found) else ""


def is_model_level(part: pd.DataFrame) -> bool:
    """Whether a table's lines are a model-level metric's (``model_lines``), not the attacks'."""
    return "model_level" in part and bool(part["model_level"].fillna(False).astype(bool).all())


def model_note(part: pd.DataFrame) -> str:
    targets = part["attack"].nunique()
    return MODEL_NOTE if targets == 1 else f"{MODEL_NOTE} {MODEL_TARGETS}"


def _model_table(setup: str, metric: str, band: str, part: pd.DataFrame, unit: str | None) -> Table:
    """A row per target model (one, unless a condition trains its own), its value per scale: no
    attacks, ranks or null baseline to show."""
    scales = sorted(part["scale"].unique())
    cells = {(line.attack, line.scale): line for line in part.itertuples(index=False)}
    rows = []
    for target in dict.fromkeys(part["attack"]):
        found = [cells.get((target, s)) for s in scales]
        rows.append(Row(cap(target), [Cell("") if line is None else
                                      Cell(text, _sort_key(line.value), dim=pd.isna(line.value),
                                           title=cap(line.reason or "", 200), detail=second_line(line, unit, text))
                                      for line in found for text in [cell_text(line, unit) if line is not None
                                                                     else ""]]))
    rows += saturation_rows(part, scales)
    first = part.iloc[0]
    return Table(key=file_stem("t", setup, metric, band), setup=cap(setup, 160), metric=cap(metric, 40),
                 band=cap(band, 60), headings=["attack", *[f"scale {s}" for s in scales]],
                 rows=rows, seeds=int(part["n_seeds"].max()), description=_description(part),
                 direction=str(first["direction"] or "higher"), unit=unit, part=part, note=model_note(part))


# ------------------------------------------------------------------------------------------
# The headline and its sentences
# ------------------------------------------------------------------------------------------


def parse_headline(spec: str | None) -> tuple[str, str | None] | None:
    """'gu-ratio' -> ('gu-ratio', None); 'ams:high' -> ('ams', 'high')."""
    if not spec:
        return None
    metric, _, band = spec.partition(":")
    return metric.strip(), (band.strip() or None)


def _band_order(part: pd.DataFrame) -> float:
    low = part["band_low"].iloc[0]
    return math.inf if low is None or pd.isna(low) else float(low)  # no band first, then high before low


def _choose_headline(candidates: list[tuple], spec: tuple[str, str | None] | None, suite_spec: str | None):
    """The (metric, band) group that heads a setup: the option, else the suite's key, else its first metric."""
    for wanted in (spec, parse_headline(suite_spec)):
        if wanted is None:
            continue
        metric, band = wanted
        matching = [c for c in candidates if c[1] == metric and (band is None or c[4] == band)]
        if matching:
            return max(matching, key=lambda c: _band_order(c[3]))
    first = min(candidates, key=lambda c: c[5])
    return max([c for c in candidates if c[1] == first[1]], key=lambda c: _band_order(c[3]))


def _strongest(part: pd.DataFrame):
    """The line of a table that stands most significantly above the null baseline (the smallest
    Holm-adjusted ``p_null`` among the lines above it), or None when no line is above it."""
    if is_model_level(part) or "p_null" not in part or "above_null" not in part:
        return None
    above = part[part["above_null"].fillna(False).astype(bool)].copy()
    above["p_null"] = pd.to_numeric(above["p_null"], errors="coerce")
    above = above[above["p_null"].notna()]
    if above.empty:
        return None
    return above.sort_values(["p_null", "scale"], kind="stable").iloc[0]


def _rule_headline(candidates: list[tuple]) -> tuple[tuple, str]:
    """The (metric, band) group that ``HEADLINE_RULE`` puts first, and the sentence saying why.

    ``candidates``: (setup, metric, band label, part, band, (metric rank in the suite, first seen)).
    """
    scored = [(line, c) for c in candidates if (line := _strongest(c[3])) is not None]
    if not scored:
        first = min(candidates, key=lambda c: c[5])
        chosen = max([c for c in candidates if c[1] == first[1]], key=lambda c: _band_order(c[3]))
        return chosen, ("Headline chosen by the rule in the legend: no attack is significantly above the null "
                        "baseline in any table, so this is the suite's first metric.")
    line, chosen = min(scored, key=lambda lc: (float(lc[0]["p_null"]), lc[1][5], -_band_order(lc[1][3])))
    p = float(line["p_null"])
    return chosen, (f"Headline chosen by the rule in the legend: of every table, {cap(line['attack'], 40)} "
                    f"stands most significantly above the null baseline here ({stats.CORRECTION}-adjusted "
                    f"p {f'= {p:.2g}' if p > 0 else '< 1e-300'} at scale {line['scale']}).")


def _null_scales(part: pd.DataFrame) -> list:
    """The scales at which a table has values but no attack above the null: where ``sentences``
    says 'no attack is significantly above the null baseline'."""
    if is_model_level(part):
        return []
    return [scale for scale, lines in part.groupby("scale", sort=True)
            if lines["value"].notna().any() and not lines.loc[lines["value"].notna(), "above_null"].astype(bool).any()]


def disagreements(chosen: tuple, others: list[tuple], limit: int = 4) -> list[str]:
    """A note when other tables have an attack significantly above the null at a scale where the
    headline table has none, naming them (their leader, starred when it is alone at rank 1)."""
    scales = _null_scales(chosen[3])
    found = []
    for _, metric, band, part, _, _ in others:
        if is_model_level(part):
            continue
        for scale in scales:
            lines = part[(part["scale"] == scale) & part["above_null"].fillna(False).astype(bool)]
            if lines.empty:
                continue
            starred = lines[lines["best"].fillna(False).astype(bool)]
            line = (starred if len(starred) else lines.sort_values("p_null", kind="stable")).iloc[0]
            unit = line["unit"] if isinstance(line["unit"], str) else None
            title = cap(f"{metric} {band}".strip(), 80)
            found.append(f"{title} at scale {scale} ({cap(line['attack'], 40)} {format_value(unit, line['value'])}"
                         f"{' ★' if len(starred) else ''})")
    if not found:
        return []
    named = found if len(found) <= limit else [*found[:limit], f"{len(found) - limit} more"]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return [f"Other tables disagree where the headline shows no attack above the null baseline: {listed} "
            f"{'is' if len(found) == 1 else 'are'} significantly above it (see 'Every metric and band')."]


def _names(attacks: list[str], limit: int = 4) -> str:
    names = [cap(a, 40) for a in attacks]
    if len(names) > limit:
        names = [*names[:limit], f"{len(attacks) - limit} more"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _scales(scales: list) -> str:
    return ("scale " if len(scales) == 1 else "scales ") + _names([str(s) for s in scales], limit=8)


def _null_values(unit: str | None, at_null: list[tuple]) -> str:
    """The null baseline's values, labelled as such: bare, "(0.00%, 0.00%)" read as the attacks' results."""
    known = [(scale, format_value(unit, value)) for scale, value in at_null if pd.notna(value)]
    if not known:
        return ""
    if len({text for _, text in known}) == 1:
        where = "" if len(at_null) == 1 else (" at both scales" if len(at_null) == 2 else " at every one of them")
        if len(known) < len(at_null):
            where = f" at {_scales([scale for scale, _ in known])}"
        return f" (null baseline: {known[0][1]}{where})"
    return " (null baseline: " + ", ".join(f"{text} at {scale}" for scale, text in known) + ")"


def _trend(part: pd.DataFrame, unit: str | None, tops: list[tuple] | None = None,
           what: str = "The best value") -> list[str]:
    """'The best value falls from A at scale s to B at scale t.' ([] when it does not move).
    ``tops``: (scale, best value) in scale order; by default the best value at each scale."""
    if tops is None:
        higher = str(part["direction"].iloc[0] or "higher") != "lower"
        known = part[part["value"].notna()]
        tops = [(scale, lines["value"].max() if higher else lines["value"].min())
                for scale, lines in known.groupby("scale", sort=True)]
    if len(tops) < 2:
        return []
    (low_scale, first), (high_scale, last) = tops[0], tops[-1]
    if first == last:
        return []
    trend = "falls" if last < first else "rises"
    return [f"{what} {trend} from {format_value(unit, first)} at scale {low_scale} "
            f"to {format_value(unit, last)} at scale {high_scale}."]


def sentences(part: pd.DataFrame, metric: str) -> list[str]:
    """Two or three sentences on what the headline table shows, from its numbers alone."""
    unit = part["unit"].iloc[0] if isinstance(part["unit"].iloc[0], str) else None
    if is_model_level(part):  # nothing to rank: what it is, and how it moves with scale
        if part["attack"].nunique() > 1:
            return [model_note(part)]
        return [MODEL_NOTE, *_trend(part, unit, what="The target model's value")]
    test = next((t for t in part["test"] if isinstance(t, str)), None)
    leaders: dict[str, list] = {}
    shared, at_null, scales_seen = [], [], []
    tops = []
    higher = str(part["direction"].iloc[0] or "higher") != "lower"
    saturated = saturated_scales(part)
    for scale, lines in part.groupby("scale", sort=True):
        ranked = lines[lines["value"].notna()]
        if ranked.empty:
            continue
        scales_seen.append(scale)
        top = ranked["value"].max() if higher else ranked["value"].min()
        tops.append((scale, top))
        if scale in saturated:  # said below, once: neither a lead nor a shared one
            continue
        above = ranked[ranked["above_null"].astype(bool)]
        if above.empty:
            at_null.append((scale, lines["null_value"].iloc[0]))
            continue
        best = ranked[ranked["best"].astype(bool)]
        if len(best) == 1:
            leaders.setdefault(best["attack"].iloc[0], []).append((scale, best.iloc[0]))
        else:
            first = above[above["rank"] == above["rank"].min()]
            shared.append((scale, list(first["attack"])))
    said = []
    how = f" ({test}, {stats.CORRECTION}-corrected, alpha {stats.ALPHA})" if test else ""
    for attack, found in leaders.items():
        values = (format_value(unit, found[0][1].value) if len(found) == 1 else
                  ", ".join(f"{format_value(unit, line.value)} at {scale}" for scale, line in found))
        said.append(f"On {cap(metric, 40)}, {cap(attack, 40)} leads at {_scales([s for s, _ in found])} "
                    f"({values}), significantly ahead of every other attack and above the null baseline{how}.")
        how = ""
    for scale, attacks in shared:
        if len(part[(part["scale"] == scale) & part["value"].notna()]) == 1:
            said.append(f"At scale {scale}, {_names(attacks)}, the only attack measured, is significantly above "
                        f"the null baseline{how}.")
            how = ""
            continue
        said.append(f"At scale {scale}, {_names(attacks)} share the lead: above the null baseline, "
                    f"but not significantly different from each other{how}." if len(attacks) > 1 else
                    f"At scale {scale}, {_names(attacks)} is above the null baseline, but not significantly "
                    f"ahead of every other attack{how}.")
        how = ""
    edges: dict[str, list] = {}  # the saturated scales by the value every attack has there
    for scale in saturated:
        edges.setdefault(format_value(unit, part[part["scale"] == scale]["value"].iloc[0]), []).append(scale)
    for text, where in edges.items():
        said.append(f"At {_scales(where)}, every attack scores {text}: {cap(metric, 40)} is saturated there and "
                    f"{SATURATED_LABEL} (a tie, not a shared first place).")
    if at_null:
        everyone = "no attack is" if len(part["attack"].unique()) > 1 else "the attack is not"
        said.append(f"At {_scales([s for s, _ in at_null])}, {everyone} significantly above the null baseline"
                    f"{_null_values(unit, at_null)}.")
    if len(tops) >= 2 and len(said) < 3:
        said += _trend(part, unit, tops)
    if not part["test"].map(lambda t: isinstance(t, str)).any() and part["value"].notna().any():
        said = [f"These rows carry no counts or standard errors (written by an older side-bench), so no "
                f"difference on {cap(metric, 40)} is tested: values only, without ranks or significance."] + said[-1:]
    if not said:
        said.append(f"No value of {cap(metric, 40)} could be computed in these runs.")
    return said


# ------------------------------------------------------------------------------------------
# The legend: from what the rows say of their components (their traits when the cell ran), never
# from the plugins installed here, so a page is a function of the result files alone
# ------------------------------------------------------------------------------------------


def row_text(row, field: str, limit: int) -> str:
    """A row's text field (a component's ``description``, an extractor's ``threat_model``), at most
    ``limit`` characters; '' when the row has none."""
    value = row.get(field)
    return cap(value, limit) if isinstance(value, str) and value.strip() else ""


SETTING_ROLES = ("condition", "extractor")  # an attack is a condition and an extractor, each with settings


def _attack_settings(rows: pd.DataFrame, attacks) -> dict[str, dict[str, dict]]:
    """{attack: {role: its settings}} from each attack's first row (a dict; {} when it has none)."""
    found = {}
    for attack in attacks:
        part = rows[rows["attack"] == attack]
        if part.empty:
            continue
        row = part.iloc[0]
        found[attack] = {role: row.get(f"{role}_settings") if isinstance(row.get(f"{role}_settings"), dict) else {}
                         for role in SETTING_ROLES}
    return found


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_settings(settings: dict[str, dict[str, dict]], plugins: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """{role: the setting names that tell the page's attacks apart} (SIDE's guidance_scale, Cond's
    classifier_steps against SIDE's, K, ...): a value that differs between two attacks that both
    have the setting, or a setting that some attacks of one plugin (``plugins``: {attack: {role:
    name}}) record and others do not (a setting added later is recorded only when it is not its
    default, so that older cells keep their config hash). A setting of one plugin alone, the
    same wherever it is, is not among them: the plugin's name already differs."""
    differing = {}
    for role in SETTING_ROLES:
        values: dict[str, set[str]] = {}
        recorded: dict[tuple[str, str], set[bool]] = {}
        for by_role in settings.values():
            for key, value in by_role[role].items():
                values.setdefault(key, set()).add(_canonical(value))
        for key in values:
            for attack, by_role in settings.items():
                recorded.setdefault((key, plugins[attack][role]), set()).add(key in by_role[role])
        differing[role] = {key for key, seen in values.items() if len(seen) > 1} | \
            {key for (key, _), seen in recorded.items() if len(seen) > 1}
    return differing


def _setting_text(key, value) -> str:
    return f"{cap(key, 40)}={value if isinstance(value, str) else json.dumps(value)}"


def _settings_text(name, settings, keys, limit: int = 300) -> str:
    """'side (guidance_scale=0.3, classifier_steps=1000)': the plugin and the given settings, in order."""
    shown = [k for k in keys if k in settings] if isinstance(settings, dict) else []
    if not shown:
        return cap(name or "", 40)
    return cap(f"{name} ({', '.join(_setting_text(k, settings[k]) for k in shown)})", limit)


def _swept_names(swept) -> list[str]:
    """The settings an attack sweeps, by name: 'extractor.guidance_scale' (newer rows) -> 'guidance_scale'."""
    return [str(k).split(".", 1)[-1] for k in (swept or {})]


def attack_entries(rows: pd.DataFrame, styles: dict) -> list[AttackEntry]:
    """The legend's attacks: each with the settings that differ between the page's attacks first
    (swept ones before the rest), and every other setting apart, for the reader who asks."""
    settings = _attack_settings(rows, styles)
    firsts = {attack: rows[rows["attack"] == attack].iloc[0] for attack in settings}
    differing = differing_settings(settings, {attack: {role: str(row.get(role)) for role in SETTING_ROLES}
                                              for attack, row in firsts.items()})
    entries = []
    for attack in styles:
        if attack not in settings:
            continue
        row = firsts[attack]
        condition, extractor = row.get("condition"), row.get("extractor")
        said = [d for d in (row_text(row, "condition_description", 200), row_text(row, "extractor_description", 200))
                if d]
        threat = row_text(row, "threat_model", 60)
        if threat:  # what the attacker needs: the reader compares attacks of one threat model
            said.append(f"threat model: {threat}")
        swept = _swept_names(row.get("swept"))
        texts = {}
        for role, name in (("condition", condition), ("extractor", extractor)):
            mine = settings[attack][role]
            first = [k for k in swept if k in differing[role]] + sorted(differing[role] - set(swept))
            rest = sorted(k for k in mine if k not in differing[role])
            texts[role] = _settings_text(name, mine, first)
            texts[f"{role}_rest"] = cap(", ".join(_setting_text(k, mine[k]) for k in rest), 1500)
        entries.append(AttackEntry(name=cap(attack), colour=styles[attack][0], description=" / ".join(said),
                                   **texts))
    return entries


def metric_entries(table: pd.DataFrame, order: list[str], model_level: frozenset = frozenset()) -> list[MetricEntry]:
    """The legend's metrics; those in ``model_level`` are said to be a property of the model."""
    from side_bench.report.leaderboard import band_label

    entries = []
    for metric in order:
        part = table[table["metric"] == metric]
        bands = part.drop_duplicates(["band", "band_low", "band_high"]).sort_values("band_low", ascending=False)
        labels = [band_label(b.band, b.band_low, b.band_high) for b in bands.itertuples(index=False)]
        found = part["metric_description"].dropna() if "metric_description" in part else pd.Series(dtype=object)
        description = cap(found.iloc[0], 200) if len(found) else ""
        if metric in model_level:
            description = f"{description} ({MODEL_LEGEND})" if description else MODEL_LEGEND
        unit = next((u for u in part["unit"] if isinstance(u, str)), None)
        entries.append(MetricEntry(
            name=cap(metric, 40), bands=cap(", ".join(label for label in labels if label) or "(none)", 200),
            direction=f"{DIRECTION_TEXT.get(part['direction'].iloc[0], 'higher')} = more memorization",
            unit=(f"{unit} (in percent)" if unit in PERCENT_UNITS else unit or "") if unit else "",
            description=description))
    return entries


# ------------------------------------------------------------------------------------------
# Diagnostics under each attack
# ------------------------------------------------------------------------------------------


def _hit_text(hits: list[dict]) -> str:
    counts = [h for h in hits if isinstance(h.get("count"), (int, float)) and isinstance(h.get("n"), (int, float))]
    if counts:
        k, n = int(sum(h["count"] for h in counts)), int(sum(h["n"] for h in counts))
        if n > 0:
            low, high = stats.wilson(k, n)
            return f"target hit {100 * k / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({k}/{n})"
    values = [h.get("value") for h in hits if isinstance(h.get("value"), (int, float))]
    return f"target hit {100 * sum(values) / len(values):.1f}%" if values else ""


def diagnostics_lines(rows: pd.DataFrame, setup: str) -> list[str]:
    """One compact line per attack and scale: the target hit rate (the runner's diagnostic), then
    what the extractor's summary of its diagnostics says (``diagnostics_summary``: e.g. the
    classifier's held-out accuracy, the guidance's alignment and strength by noise)."""
    if "diagnostics" not in rows:
        return []
    cells = rows[rows["setup"] == setup].drop_duplicates("config_hash")
    lines = []
    for (attack, scale), part in cells.groupby(["attack", "scale"], sort=True):
        with_diagnostics = part[[isinstance(d, dict) and bool(d) for d in part["diagnostics"]]]
        if with_diagnostics.empty:
            continue
        said = []
        hits = [d["target_hit"] for d in with_diagnostics["diagnostics"] if isinstance(d.get("target_hit"), dict)]
        if hits and (text := _hit_text(hits)):
            said.append(text)
        # the extractor's own summary (``summarize_diagnostics``), of the first cell that has diagnostics
        summary = with_diagnostics.iloc[0].get("diagnostics_summary")
        said += [str(phrase) for phrase in summary] if isinstance(summary, list) else []
        if said:
            lines.append(cap(f"{attack} @ scale {scale}: " + "; ".join(said), 600))
    return lines


# ------------------------------------------------------------------------------------------
# Reported figures (papers)
# ------------------------------------------------------------------------------------------


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


def reported_table(path: Path, document: dict) -> ReportedTable:
    columns = _reported_columns(document)
    bands = ""
    if document.get("bands_stated") or document.get("bands_inferred"):
        bands = (f"Bands stated: {_bands_text(document.get('bands_stated'))}; inferred: "
                 f"{_bands_text(document.get('bands_inferred'))}. {document.get('bands_note', '')}").strip()
    rows = [[cap(row["dataset"]), str(row["n_generations"]), cap(row["attack"]),
             *[_reported_value(c, row.get(c)) for c in columns]] for row in document["rows"]]
    return ReportedTable(key=file_stem("reported", path.name), source=cap(document["source"], 200),
                         file=cap(path.name, LABEL_LIMIT), note=cap(document.get("note", ""), 1000),
                         bands=cap(bands, 1000), headings=["data set", "N_G", "attack", *columns], rows=rows)


# ------------------------------------------------------------------------------------------
# Putting the page together
# ------------------------------------------------------------------------------------------


def _sources(rows: pd.DataFrame) -> list[str]:
    pairs = rows[["suite", "run_id"]].drop_duplicates().itertuples(index=False)
    return [cap(f"{suite}/{run_id}", 120) for suite, run_id in pairs]


def build_page(rows: pd.DataFrame, table: pd.DataFrame, *, headline: str | None = None,
               reported: list[tuple[Path, dict]] = ()) -> Page:
    """The page model of an aggregated leaderboard ``table`` (and the ``rows`` it came from).

    ``headline`` is ``METRIC`` or ``METRIC:BAND``; without it each setup's headline is the
    suite's ``headline`` key (from the run's manifest or rows), else the table ``HEADLINE_RULE``
    picks from the evidence (``_rule_headline``), with a note where other tables disagree.
    """
    spec = parse_headline(headline)
    if spec is not None and spec[0] not in set(table["metric"]):
        found = ", ".join(sorted(map(str, set(table["metric"]))))
        raise BenchError(f"--headline: no rows for metric {spec[0]!r} (found: {cap(found, 200)})")
    if spec is not None and spec[1] is not None:
        bands = {b for b in table.loc[table["metric"] == spec[0], "band"] if isinstance(b, str)}
        if spec[1] not in bands:
            raise BenchError(f"--headline: metric {spec[0]!r} has no band {spec[1]!r} "
                             f"(found: {', '.join(sorted(bands)) or 'no bands'})")
    # attacks in order of first appearance over the rows: one colour each on the whole page
    from side_bench.report.plots import attack_colours

    styles = attack_colours(list(dict.fromkeys(rows["attack"])))
    metric_rank = rows.groupby("metric", sort=False)["metric_order"].min().to_dict() if "metric_order" in rows \
        else {}
    first_seen = {m: i for i, m in enumerate(dict.fromkeys(rows["metric"]))}
    # a model-level metric's tables show the target model's lines, not the attacks' (model_lines)
    models = {(setup, metric, band): part for setup, metric, band, part in groups(model_lines(rows))}
    setups = []
    by_setup: dict[str, list] = {}
    for setup, metric, band, part in groups(table):
        part = models.get((setup, metric, band), part)
        order = (metric_rank.get(metric, 0), first_seen.get(metric, 0))
        by_setup.setdefault(setup, []).append((setup, metric, band, part, part["band"].iloc[0], order))
    for setup, candidates in by_setup.items():
        suite_spec = None
        if "headline" in rows:
            named = rows.loc[rows["setup"] == setup, "headline"].dropna()
            suite_spec = str(named.iloc[0]) if len(named) else None
        by_rule = spec is None and suite_spec is None  # a suite's key renders as it always has
        if by_rule:
            chosen, why = _rule_headline(candidates)
        else:
            chosen, why = _choose_headline(candidates, spec, suite_spec), ""
        head_metric = chosen[1]
        rest = [c for c in candidates if c is not chosen]
        rest.sort(key=lambda c: (c[1] != head_metric, c[5], -_band_order(c[3])))
        headline_table = make_table(setup, chosen[1], chosen[2], chosen[3], styles)
        setups.append(SetupPage(setup=cap(setup, 160), headline=headline_table,
                                sentences=sentences(chosen[3], chosen[1]),
                                details=[make_table(c[0], c[1], c[2], c[3], styles) for c in rest],
                                diagnostics=diagnostics_lines(rows, setup), chosen=why,
                                notes=disagreements(chosen, rest) if by_rule else []))
    metric_order = sorted(dict.fromkeys(table["metric"]), key=lambda m: (metric_rank.get(m, 0), first_seen.get(m, 0)))
    heads = list(dict.fromkeys(s.headline.part["metric"].iloc[0] for s in setups))
    metric_order = heads + [m for m in metric_order if m not in heads]
    page = Page(title=TITLE, marks=MARKS, sources=_sources(rows), setups=setups,
                attacks=attack_entries(rows, styles),
                metrics=metric_entries(table, metric_order, frozenset(m for _, m, _ in models)),
                reported=[reported_table(path, document) for path, document in reported],
                headline_rule=HEADLINE_RULE if any(s.chosen for s in setups) else "")
    add_cost(page, rows, table, styles, headline)
    return page



# ------------------------------------------------------------------------------------------
# Cost (issue 29): the cost column, extraction against cost, and the attacks at equal cost.
# Nothing here changes a page whose runs carry no measured cost.
# ------------------------------------------------------------------------------------------

COST_HEADING = "cost / candidate"
BUDGET_TITLE = "Extraction against cost"


@dataclass
class BudgetSection:
    criterion: str  # what counted as a copy
    note: str  # how cost is measured and read
    question: str  # which question the equal-cost view ranks by, and why
    sentences: list[str]
    table: Table | None  # the equal-cost comparison (None: nothing to compare)
    curves: list[dict] = field(default_factory=list, repr=False)  # report/budget.py's, for the plot
    scales: list[int] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: str = ""  # the cells without measured cost: no curve
    tests: tuple[str, str] = ("", "")  # the tests of the two questions: distinct images, precision
    lines: list[dict] = field(default_factory=list, repr=False)  # report/budget.py's equal-cost lines, as data


def add_cost(page: Page, rows: pd.DataFrame, table: pd.DataFrame, styles: dict, headline: str | None = None) -> None:
    """The cost column in every attack table, and each setup's budget section, when some row
    carries a measured cost (``leaderboard.with_cost``); else the page is left as it was.
    ``headline``: the page's ``--headline``, whose copy criterion the curves count by."""
    from side_bench.cost import EQUIVALENTS_TEXT
    from side_bench.report.leaderboard import has_measured_cost, with_cost

    if not has_measured_cost(rows):
        return
    costed = with_cost(table, rows)
    page.cost_note = (f"The '{COST_HEADING}' column of each headline table: what the attack spent per candidate at each scale (the range "
                      f"over scales; the mean over seeds), measured by the runner where the work was done, not "
                      f"declared by the attack; {EQUIVALENTS_TEXT}. Blank: not measured (runs before row schema 5).")
    for setup in page.setups:
        # the headline table only: cost does not depend on the metric, and one more column in
        # every table of a six-scale page pushed them past a 1,400 px window
        t = setup.headline
        if t is not None and t.part is not None and not is_model_level(t.part):
            _cost_column(t, costed)
    setups = {cap(setup, 160): setup for setup in table["setup"].unique()}
    for setup_page in page.setups:
        if setup_page.setup in setups:
            setup_page.budget = budget_section(rows, setups[setup_page.setup], styles, headline)


def _cost_column(t: Table, costed: pd.DataFrame) -> None:
    """One more column: each attack's cost per candidate over the table's scales."""
    part = costed[(costed["setup"] == t.part["setup"].iloc[0])]
    per_attack = {attack: format_cost(lines["cost_per_candidate"]) for attack, lines in part.groupby("attack")}
    labels = {cap(attack): attack for attack in part["attack"].unique()}
    t.headings = [*t.headings, COST_HEADING]
    for row in t.rows:
        text = "" if row.null else per_attack.get(labels.get(row.label, row.label), "")
        row.cells = [*row.cells, Cell(text, text.split("\u2013")[0].replace(",", "") if text else "")]


def format_cost(values) -> str:
    from side_bench.report.leaderboard import format_cost as formatted

    return formatted(values)


def _count(value) -> str:
    return "" if value is None or pd.isna(value) else f"{int(value):,}"


def _p_text(p, verdict: str) -> str:
    if p is None or pd.isna(p):
        return ""
    return f"{'<0.001' if p < 0.001 else f'{p:.3f}'} {verdict}".strip()


def _percent(value) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * float(value):.2f}%"


def budget_section(rows: pd.DataFrame, setup: str, styles: dict, headline: str | None = None) -> BudgetSection | None:
    """The setup's extraction-against-cost curves and equal-cost table (report/budget.py). The
    reference cells may come from any run loaded (a companion suite on the same models). A
    setup none of whose cells measured cost gets only the sentence that says so."""
    from side_bench.report import budget

    mine = rows[rows["setup"] == setup]
    rule = budget.headline_rule(mine.to_dict("records"), headline)
    if rule is None:
        return None
    records = budget.Records(rule)
    cells = mine.drop_duplicates("config_hash")
    if not any(budget.measured(r) for r in cells.to_dict("records")):
        return BudgetSection(criterion=cap(rule.label, 120), note="", question="", sentences=[], table=None,
                             missing=f"No extraction-against-cost curve: none of these {len(cells)} cells measured "
                                     f"its cost (run before row schema 5).")
    curves = budget.extraction_curves(mine, records)
    targets = {(r.get("model_key"), r["scale"], r["seed"]) for r in mine.to_dict("records")}
    # the reference's cells on these targets from every run loaded, for the reference lines
    extra = [r for r in rows[rows["setup"] != setup].to_dict("records")
             if budget.is_reference(r) and (r.get("model_key"), r["scale"], r["seed"]) in targets]
    if extra:
        curves["curves"] += budget.extraction_curves(extra, records)["curves"]
    lines = budget.equal_cost([*mine.to_dict("records"), *extra], attacks=list(mine["attack"].unique()),
                              records=records)
    missing = ""
    if curves["unmeasured"]:
        who = sorted({f"{c['attack']} @ {c['scale']} seed {c['seed']}" for c in curves["unmeasured"]})
        missing = (f"No curve for {len(who)} cell(s) without measured cost (run before row schema 5): "
                   + cap(", ".join(who), 400))
    note = ("Each curve: the copies among the first k candidates of a cell, and the distinct training images they "
            "copied, against what those k cost (candidate i depends only on the seed and i, so a prefix of a cell "
            "is a smaller run): the fixed cost first (the condition's pool, a classifier), then each draw of the "
            "sampler in the order drawn; for a filter over a pool (side-exact) the fewest draws that hold the "
            "first k candidates, and its last point everything it drew. The reference (UnCond) dashed, from its "
            "largest cell on the same model in any run shown.")
    return BudgetSection(criterion=cap(rule.label, 120), note=note, question=budget.HEADLINE_QUESTION,
                         sentences=_budget_sentences(lines), table=_equal_cost_table(setup, lines, styles),
                         curves=curves["curves"], scales=sorted({int(c["scale"]) for c in curves["curves"]}),
                         missing=missing, tests=(budget.DISTINCT_TEST, budget.PRECISION_TEST),
                         lines=_records(lines))


def _records(frame: pd.DataFrame) -> list[dict]:
    """A frame's lines as JSON-ready dicts: NaN as None, numpy scalars as Python numbers."""
    if frame.empty:
        return []
    import json

    return json.loads(frame.to_json(orient="records"))


def _equal_cost_table(setup: str, lines: pd.DataFrame, styles: dict) -> Table | None:
    if lines.empty:
        return None
    # short headings: the note above the table says what each is; the table fits a 1,400 px window
    headings = ["attack", "scale", "seed", "cost (equiv.)", "UnCond at that cost",
                "distinct: attack / UnCond", "p (distinct)", "precision: attack / UnCond",
                "p (precision)", "note"]
    # at each target, the attacks in the order of the headline question: more distinct images first
    order = {"more": 0, "n.s.": 1, "": 2, "fewer": 3}
    plain = lines[lines["arm"] == "reference"]
    rank = {(line["scale"], line["seed"], line["attack"]): order.get(line.get("verdict_distinct") or "", 2)
            for line in plain.to_dict("records")}
    rows = []
    keys = sorted({(line["scale"], line["seed"], line["attack"]) for line in lines.to_dict("records")},
                  key=lambda key: (key[0], key[1], rank.get(key, 2), key[2]))
    for scale, seed, attack in keys:
        group = lines[(lines["scale"] == scale) & (lines["seed"] == seed) & (lines["attack"] == attack)]
        for line in group.to_dict("records"):
            plain = line["arm"] == "reference"
            label = cap(attack) if plain else f"{cap(attack, 40)} vs {cap(line['arm'].replace('reference', 'UnCond'), 40)}"
            bought = (f"{_count(line.get('reference_k'))} of N_G {_count(line.get('reference_n_g'))}"
                      if line.get("reference_n_g") is not None and not pd.isna(line.get("reference_n_g")) else "")
            if not plain and bought:
                bought = f"top {_count(line.get('reference_claims'))} of {bought}"
            distinct = (f"{_count(line.get('distinct'))} / {_count(line.get('reference_distinct'))}"
                        if plain and line.get("reference_distinct") is not None
                        and not pd.isna(line.get("reference_distinct")) else "")
            precision = (f"{_percent(line.get('precision'))} / {_percent(line.get('reference_precision'))}"
                         if line.get("reference_precision") is not None
                         and not pd.isna(line.get("reference_precision")) else "")
            cells = [Cell(str(scale)), Cell(str(seed)),
                     Cell(f"{line['cost']:,.0f}" if line.get("cost") is not None and not pd.isna(line.get("cost"))
                          else "", _sort_key(line.get("cost"))),
                     Cell(bought), Cell(distinct),
                     Cell(_p_text(line.get("p_distinct"), line.get("verdict_distinct", "")) if plain else "",
                          _sort_key(line.get("p_distinct"))),
                     Cell(precision),
                     Cell(_p_text(line.get("p_precision"), line.get("verdict_precision", "")),
                          _sort_key(line.get("p_precision"))),
                     Cell(cap(line.get("note") or "", 200))]
            rows.append(Row(label, cells, colour=styles.get(attack, ("", ""))[0]))
    return Table(key=file_stem("equal-cost", setup), setup=cap(setup, 160), metric="equal cost", band="",
                 headings=headings, rows=rows, seeds=int(lines["seed"].nunique()))


def _budget_sentences(lines: pd.DataFrame) -> list[str]:
    """Per attack: how often it obtained more, as many or fewer distinct training images than
    UnCond at its own cost, and how its claims' precision compared (the tested lines only)."""
    if lines.empty:
        return []
    said = []
    for attack, group in lines.groupby("attack", sort=False):
        plain = group[group["arm"] == "reference"]
        parts = []
        for question, words in (("distinct", "distinct training images"), ("precision", "precision of its claims")):
            verdicts = [v for v in plain.get(f"verdict_{question}", []) if v]
            if verdicts:
                counts = ", ".join(f"{word} at {verdicts.count(word)}" for word in ("more", "n.s.", "fewer")
                                   if verdicts.count(word))
                parts.append(f"{words} against UnCond's: {counts} of {len(verdicts)} target(s)")
        if parts:
            said.append(f"At equal cost, {cap(attack, 40)}: " + "; ".join(parts) + ".")
        elif len(plain):
            notes = [n for n in plain.get("note", []) if isinstance(n, str) and n]
            said.append(f"{cap(attack, 40)} is not compared at equal cost: {cap(notes[0], 200) if notes else 'untested'}.")
    return said


# ------------------------------------------------------------------------------------------
# The site index: every published page's headline, read back from the summary beside it
# ------------------------------------------------------------------------------------------

SUMMARY_FILE = "summary.json"
SUMMARY_KIND = "side-bench leaderboard summary"
INDEX_TITLE = "side-bench: published leaderboards"


@dataclass
class IndexEntry:
    folder: str  # the page's folder, relative to the index (also the prefix of its image paths)
    title: str
    html: str  # the page's files relative to the index ("" when that format was not written)
    md: str
    sources: list[str]
    setups: list[SetupPage]
    findings: list[Finding] = field(default_factory=list)  # from the index folder's FINDINGS_FILE


@dataclass
class IndexPage:
    title: str
    marks: str
    entries: list[IndexEntry]


def _table_data(table: Table) -> dict:
    return {"key": table.key, "setup": table.setup, "metric": table.metric, "band": table.band,
            "headings": table.headings, "seeds": table.seeds, "description": table.description,
            "direction": table.direction, "unit": table.unit,
            "rows": [{"label": r.label, "colour": r.colour, "null": r.null,
                      "cells": [vars(c) for c in r.cells]} for r in table.rows],
            "figures": [vars(f) for f in table.figures]}


def page_summary(page: Page, files: dict[str, str]) -> dict:
    """What the site index shows of a page (its headlines and sentences), as JSON-ready data.

    The index is built from these files rather than from the runs, so it needs no result
    folder and shows exactly the numbers of the published page.
    """
    return {"kind": SUMMARY_KIND, "version": 1, "title": page.title, "files": files, "sources": page.sources,
            "setups": [{"setup": s.setup, "sentences": s.sentences, "headline": _table_data(s.headline),
                        **({"chosen": s.chosen} if s.chosen else {}), **({"notes": s.notes} if s.notes else {})}
                       for s in page.setups]}


def _table_from(data: dict, prefix: str) -> Table:
    rows = [Row(r["label"], [Cell(**c) for c in r["cells"]], colour=r["colour"], null=r["null"])
            for r in data["rows"]]
    figures = [Figure(f["title"], prefix + f["png"], prefix + f["svg"]) for f in data["figures"]]
    return Table(key=file_stem(prefix, data["key"]), setup=data["setup"], metric=data["metric"],
                 band=data["band"], headings=data["headings"], rows=rows, seeds=data["seeds"],
                 description=data["description"], direction=data["direction"], unit=data["unit"],
                 figures=figures)


def index_entry(folder: str, data: dict, where: str) -> IndexEntry:
    """A published page's summary (``page_summary``) as an index entry; a malformed one is named."""
    if not isinstance(data, dict) or data.get("kind") != SUMMARY_KIND:
        raise BenchError(f"{where}: not a side-bench leaderboard summary (expected kind {SUMMARY_KIND!r})")
    if data.get("version") != 1:
        raise BenchError(f"{where}: version: expected 1, got {data.get('version')!r}")
    prefix = folder.rstrip("/") + "/"
    try:
        files = data["files"]
        setups = [SetupPage(setup=cap(str(s["setup"]), 160), headline=_table_from(s["headline"], prefix),
                            sentences=[cap(str(t), 600) for t in s["sentences"]], details=[], diagnostics=[],
                            chosen=cap(str(s.get("chosen", "")), 600),
                            notes=[cap(str(t), 1000) for t in s.get("notes", [])])
                  for s in data["setups"]]
        return IndexEntry(folder=cap(folder, 120), title=cap(str(data["title"]), 120),
                          html=prefix + files["html"] if files.get("html") else "",
                          md=prefix + files["md"] if files.get("md") else "",
                          sources=[cap(str(s), 120) for s in data["sources"]], setups=setups)
    except (KeyError, TypeError, AttributeError) as error:
        raise BenchError(f"{where}: malformed summary ({type(error).__name__}: {error})") from error


# ------------------------------------------------------------------------------------------
# The site index's order and one-line findings: a small committed file beside the pages
# ------------------------------------------------------------------------------------------

FINDINGS_FILE = "findings.toml"
FINDING_KEYS = {"study": str, "finding": str, "pages": list, "details": str}


@dataclass
class Finding:
    """One study's one-line finding (a row of the README's 'What the benchmarks found' table):
    ``study`` and ``finding`` as the README has them (``**bold**`` and ``code`` marks allowed),
    the published folders it is about (``pages``) and its findings page (``details``, a path
    relative to the findings file)."""

    study: str
    finding: str
    pages: list[str]
    details: str = ""


def parse_findings(data: dict, where: str) -> list[Finding]:
    """The ``[[study]]`` tables of a findings file, in order; a malformed one is a one-line
    error naming the file, the study and the field."""
    if set(data) - {"study"}:
        raise BenchError(f"{where}: unknown key(s) {', '.join(sorted(set(data) - {'study'}))} (expected [[study]] tables)")
    studies = data.get("study", [])
    if not isinstance(studies, list):
        raise BenchError(f"{where}: study: expected [[study]] tables")
    found = []
    for number, study in enumerate(studies, start=1):
        here = f"{where}: study {number}"
        if not isinstance(study, dict):
            raise BenchError(f"{here}: expected a table")
        if unknown := set(study) - set(FINDING_KEYS):
            raise BenchError(f"{here}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(expected {', '.join(FINDING_KEYS)})")
        for key, kind in FINDING_KEYS.items():
            if key in ("study", "finding", "pages") and key not in study:
                raise BenchError(f"{here}: {key}: missing")
            if key in study and not isinstance(study[key], kind):
                raise BenchError(f"{here}: {key}: expected a {'list of folder names' if kind is list else 'string'}")
        pages = study["pages"]
        if not all(isinstance(page, str) and page and "/" not in page and not page.startswith(".") for page in pages):
            raise BenchError(f"{here}: pages: expected names of folders beside {FINDINGS_FILE}")
        details = study.get("details", "")
        if details and (":" in details or details.startswith(("/", "\\")) or not details.endswith(".md")):
            raise BenchError(f"{here}: details: expected a relative path to a Markdown page, got {cap(details, 80)!r}")
        found.append(Finding(study=cap(study["study"], 200), finding=cap(study["finding"], 1000), pages=list(pages),
                             details=cap(details, 200)))
    return found


def order_entries(entries: list[IndexEntry], findings: list[Finding]) -> tuple[list[IndexEntry], list[str]]:
    """The index's entries in the findings' order (a page's first study), each with its findings;
    pages no study names after them, alphabetically. Also the folders the findings name that
    are not in the index (to warn about: a renamed or removed page)."""
    first = {}
    for position, finding in enumerate(findings):
        for page in finding.pages:
            first.setdefault(page, position)
    by_folder = {e.folder: e for e in entries}
    for entry in entries:
        entry.findings = [f for f in findings if entry.folder in f.pages]
    ordered = sorted(entries, key=lambda e: (e.folder not in first, first.get(e.folder, 0), e.folder))
    return ordered, [page for page in first if page not in by_folder]
