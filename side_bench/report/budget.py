"""Extraction against cost, and attacks set against UnCond at equal cost (issue 29).

Every cell run since row schema 5 carries the cost its attack spent, measured by the runner
(``side_bench/cost.py``): a fixed part (the condition's pool, a classifier's training, cached
entries loaded) and the draws of its sampler, in the order drawn. Candidate i depends only on
(seed, i), so the first k candidates of a cell are what a run at N_G = k would have made,
and the cost of that prefix is the fixed part plus the draws up to the last one the first k
candidates came from (the per-candidate records' ``draw``; without it candidate i is draw
i + 1). For an attack whose every candidate is a draw of its own (UnCond, the guided
attacks) that is exactly the cost of a run at N_G = k; for a filter over a pool (side-exact),
the fewest draws that hold the first k candidates (a run at N_G = k draws whole streams of
256, so it spends up to that much more).

``extraction_curves``: per cell, against that cumulative cost (UNet-evaluation equivalents,
``cost.EQUIVALENTS``), the copies among the first k candidates and the distinct training
images they copied, by one copy criterion: the headline metric's ``memorized`` (the suite's
``headline``; gu-ratio where the headline metric decides nothing per candidate), as the cell's
records stored it when it was scored (version 3), else the installed metric's (older records;
``compare.CopyRule``).

``equal_cost``: each attack's cell against the reference (Carlini et al.'s UnCond: condition
``none``, extractor ``sample``) on the same target model (model key, scale, seed) at the
attack's own total cost: the reference's prefix of that cost, from its smallest cell that
reaches it (a larger N_G of the same seed is the same candidates, more of them). Two
questions, each with its test and Holm's correction over every line of the view:

- distinct training images obtained at equal cost: the attack's over all its candidates
  against the reference prefix's, z-test on the occupancy standard errors (as ``compare``);
  the headline of the view, because it is the attacker's question (Carlini et al. count
  extractions per generation): what a budget of model evaluations buys;
- precision of K claims at equal cost (K = the attack's N_G): its copy rate against the
  reference's first K (UnCond cannot choose among more without a ranker: the same as at equal
  N_G), and against UnCond + a ranker choosing its top K from what the budget buys (Carlini's
  generate-and-filter, where the reference ran a ranker), Fisher's exact test. A ranker whose
  score of a candidate does not depend on the others (``prefix_invariant``) ranks the prefix;
  any other (the clique's count of near-duplicates among all generations) only ranks a whole
  reference cell, the largest within the budget, and only when it spends at least
  ``SPEND_SHARE`` of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from side_bench.cost import EQUIVALENTS, SPEND_SHARE, equivalents
from side_bench.errors import BenchError
from side_bench.scoring import stats

REFERENCE = {"condition": "none", "extractor": "sample"}  # Carlini et al.'s UnCond
CURVE_POINTS = 160
FALLBACK_CRITERION = "gu-ratio"
DISTINCT_TEST = f"z-test on occupancy standard errors, {stats.CORRECTION}-corrected"
PRECISION_TEST = f"{stats.RATE_TEST}, {stats.CORRECTION}-corrected"
HEADLINE_QUESTION = ("ranked by distinct training images obtained at equal cost: the attacker's question (what a "
                     "budget of model evaluations buys; Carlini et al. count extractions per generation); the "
                     "precision of K claims is shown beside it")


def measured(row: dict) -> bool:
    spent = row.get("cost")
    return isinstance(spent, dict) and bool(spent.get("measured"))


def total_cost(spent: dict) -> float:
    """Everything the attack spent, in UNet-evaluation equivalents."""
    return equivalents({kind: spent.get(kind, 0) for kind in EQUIVALENTS})


def prefix_costs(spent: dict, draws: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) the cost of the first k candidates, k = 1..n: the fixed part and every draw up to
    the last one they came from (module docstring)."""
    sizes = [int(size) for size, _ in spent.get("segments") or []]
    per = [equivalents(counts) for _, counts in spent.get("segments") or []]
    total_draws = sum(sizes)
    cumulative = np.concatenate([[0.0], np.cumsum(np.repeat(per, sizes))]) if total_draws else np.zeros(1)
    last = np.arange(1, n + 1) if draws is None else np.maximum.accumulate(np.asarray(draws, dtype=np.int64))
    if len(last) and last.max() >= len(cumulative):
        raise BenchError(f"cost: candidate draws reach {int(last.max())} but the cost records {total_draws} draws")
    return equivalents(spent.get("fixed")) + cumulative[last]


@dataclass
class CellRecord:
    """One cell's candidates, as the copy criterion sees them, and what each prefix cost."""

    row: dict
    copies: np.ndarray  # (n,) bool: the candidate is a copy
    nearest: np.ndarray  # (n,) its nearest training image
    n_train: int
    prefix: np.ndarray | None  # (n,) cost of the first k candidates; None: cost not measured
    total: float | None
    ranker_scores: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.copies)

    def copies_within(self, k: int) -> int:
        return int(self.copies[:k].sum())

    def distinct_within(self, k: int) -> int:
        return len(np.unique(self.nearest[:k][self.copies[:k]]))

    def distinct_se(self, k: int) -> float:
        rows = np.flatnonzero(self.copies[:k])
        return math.sqrt(stats.distinct_variance(rows, self.nearest[rows], k, self.n_train))

    def within_budget(self, budget: float) -> int:
        """The most candidates whose prefix costs no more than ``budget``."""
        return int(np.searchsorted(self.prefix, budget * (1 + 1e-12), side="right"))


def _first_rows(rows) -> list[dict]:
    """One row per cell (config hash and run folder), each with its ``run_dir``."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    cells: dict[tuple, dict] = {}
    for row in records:
        cells.setdefault((str(row.get("run_dir")), row["config_hash"]), row)
    return list(cells.values())


class Records:
    """Cells' records, loaded once each, with one copy criterion."""

    def __init__(self, rule):
        self.rule = rule
        self._loaded: dict[tuple, CellRecord] = {}

    def get(self, row: dict) -> CellRecord:
        key = (str(row.get("run_dir")), row["config_hash"])
        if key not in self._loaded:
            from side_bench.results.candidates import load_scores, stored_copies

            if not row.get("candidates_file"):
                raise BenchError(f"{row.get('run_dir')}: {row['attack']} @ {row['scale']} has no per-candidate records")
            path = Path(row["run_dir"]) / row["candidates_file"]
            scores = load_scores(path)
            mask = self.rule.copies(scores, stored_copies(path))  # as decided when scored, where stored
            prefix = total = None
            if measured(row):
                prefix = prefix_costs(row["cost"], scores.draws, scores.n_candidates)
                total = total_cost(row["cost"])
            self._loaded[key] = CellRecord(row, np.asarray(mask, dtype=bool), np.asarray(scores.nearest_index),
                                           int(scores.n_train), prefix, total, dict(scores.ranker_scores))
        return self._loaded[key]


def headline_rule(rows: list[dict], spec: str | None = None):
    """The copy criterion of the curves and the equal-cost view: the headline metric's
    ``memorized`` (``spec``, "METRIC[:BAND]", else the suite's ``headline``; its highest band
    when it has bands and none is named), else ``FALLBACK_CRITERION``; None when neither decides
    per candidate."""
    from side_bench.report.compare import copy_rule

    named = [str(r["headline"]) for r in rows if isinstance(r.get("headline"), str) and r.get("headline")]
    metric, _, band = (spec or (named[0] if named else FALLBACK_CRITERION)).partition(":")
    metric_rows = [r for r in rows if r["metric"] == metric]
    for candidate in (metric, FALLBACK_CRITERION):
        try:
            chosen = band or _top_band(metric_rows if candidate == metric else
                                       [r for r in rows if r["metric"] == candidate])
            return copy_rule(candidate, chosen or "high", rows)
        except BenchError:
            continue
    return None


def _top_band(rows: list[dict]) -> str | None:
    banded = [r for r in rows if r.get("band")]
    return max(banded, key=lambda r: r.get("band_low") or 0)["band"] if banded else None


def is_reference(row: dict, reference: str | None = None) -> bool:
    if reference is not None:
        return row["attack"] == reference
    return all(row.get(key) == value for key, value in REFERENCE.items())


def _target(row: dict) -> tuple:
    """The target model an attack's cell attacked, and what its copies are judged against."""
    return (row.get("model_key"), row["scale"], row["seed"], row.get("features"))


def curve_points(record: CellRecord, points: int = CURVE_POINTS) -> list[dict]:
    """About ``points`` points (k, cost, copies, distinct) of the cell's prefix curve, k on a
    log grid with every k up to 16, ending at all its candidates and, when it drew more than the
    candidates needed (a pool), at everything it spent."""
    n = record.n
    if n == 0 or record.prefix is None:
        return []
    grid = np.unique(np.concatenate([np.arange(1, min(n, 16) + 1),
                                     np.round(np.geomspace(1, n, points)).astype(np.int64), [n]]))
    firsts = np.zeros(n, dtype=np.int64)
    copied = np.flatnonzero(record.copies)
    if len(copied):
        _, first = np.unique(record.nearest[copied], return_index=True)
        firsts[copied[first]] = 1
    copies, distinct = np.cumsum(record.copies), np.cumsum(firsts)
    found = [{"candidates": int(k), "cost": float(record.prefix[k - 1]), "copies": int(copies[k - 1]),
              "distinct": int(distinct[k - 1])} for k in grid]
    if record.total is not None and record.total > found[-1]["cost"] * (1 + 1e-9):
        found.append({**found[-1], "cost": float(record.total)})
    return found


def extraction_curves(rows, records: Records | None = None) -> dict:
    """{"criterion", "curves": [one per cell with measured cost], "unmeasured": [cells without]}."""
    cells = _first_rows(rows)
    unmeasured = [_who(r) for r in cells if not measured(r)]
    rule = records.rule if records is not None else headline_rule(_all_rows(rows))
    if rule is None:
        return {"criterion": None, "curves": [], "unmeasured": unmeasured,
                "reason": "no metric of these runs has a copy criterion (memorized)"}
    records = records or Records(rule)
    curves = []
    for row in cells:
        if not measured(row) or not row.get("candidates_file"):
            continue
        record = records.get(row)
        curves.append({**_who(row), "setup": row.get("setup"), "model_key": row.get("model_key"),
                       "n_generations": record.n, "total_cost": record.total, "reference": is_reference(row),
                       "attribution": row["cost"].get("attribution"), "complete": bool(row["cost"].get("complete")),
                       "points": curve_points(record)})
    return {"criterion": rule.label, "unit": "UNet-evaluation equivalents", "curves": curves,
            "unmeasured": unmeasured}


def _who(row: dict) -> dict:
    return {"suite": row.get("suite"), "run_id": row.get("run_id"), "attack": row["attack"], "scale": row["scale"],
            "seed": row["seed"], "config_hash": row["config_hash"]}


def _all_rows(rows) -> list[dict]:
    return rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)


# ------------------------------------------------------------------------------------------
# Equal cost
# ------------------------------------------------------------------------------------------


def needed_generations(record: CellRecord, budget: float) -> int:
    """The N_G a reference cell like ``record`` needs for its prefix to reach ``budget``: its
    cost per candidate past the fixed part, extrapolated."""
    fixed = equivalents(record.row["cost"].get("fixed"))
    per = (float(record.prefix[-1]) - fixed) / record.n
    return max(int(math.ceil((budget - fixed) / per - 1e-9)), 1) if per > 0 else record.n


def _ranker_says(records: list[CellRecord], name: str, attribute: str) -> bool:
    """What ranker ``name`` declared when these cells ran (their rows' ``rankers``:
    hookspecs.RankerTraits): ``prefix_invariant`` (its score of a candidate does not depend on
    the others, so a prefix is ranked by its stored scores) or ``attacker`` (an attacker has
    what it reads); a ranker the rows do not describe: False."""
    said = [(r.row.get("rankers") or {}).get(name) for r in records]
    return any(isinstance(traits, dict) and traits.get(attribute) is True for traits in said)


def _top_copies(record: CellRecord, scores: np.ndarray, k: int, claims: int) -> int:
    """Copies among the ``claims`` best-scored of the first ``k`` candidates (ties: lower index)."""
    order = np.argsort(-np.asarray(scores[:k], dtype=np.float64), kind="stable")[:claims]
    return int(record.copies[order].sum())


def equal_cost(rows, *, attacks: list[str] | None = None, reference: str | None = None,
               records: Records | None = None) -> pd.DataFrame:
    """One line per attack cell and arm (the reference alone, then the reference + each ranker
    it ran) at the attack's own total cost; see the module docstring. Columns: attack, scale,
    seed, arm, n (the attack's N_G, its K claims), cost (its total), reference, reference_n_g
    (the reference cell used), reference_k (candidates its budget buys), reference_cost (what
    they cost), enough (the reference cell reaches the budget), needed_n_g (the N_G that would),
    distinct, reference_distinct, p_distinct; copies, precision, reference_claims,
    reference_copies, reference_precision, p_precision (both Holm-corrected over the lines),
    verdict_distinct and verdict_precision ('more', 'fewer', 'n.s.', '' where untested), note."""
    all_rows = _all_rows(rows)
    cells = _first_rows(all_rows)
    rule = records.rule if records is not None else headline_rule(all_rows)
    if rule is None:
        return pd.DataFrame()
    records = records or Records(rule)
    references: dict[tuple, list[dict]] = {}
    for row in cells:
        if is_reference(row, reference) and measured(row):
            references.setdefault(_target(row), []).append(row)
    lines = []
    for row in cells:
        if is_reference(row, reference) or (attacks is not None and row["attack"] not in attacks):
            continue
        base = {**_who(row), "setup": row.get("setup"), "n": int(row["n_generations"]), "criterion": rule.label}
        candidates = sorted(references.get(_target(row), []), key=lambda r: int(r["n_generations"]))
        if not measured(row) or not candidates:
            base.update(arm="reference", note="no measured cost" if not measured(row) else
                        "no reference cell with measured cost on this target model")
            lines.append(base)
            continue
        attack = records.get(row)
        lines.extend(at_equal_cost(base, attack, [records.get(r) for r in candidates]))
    return corrected(lines)


def corrected(lines: list[dict]) -> pd.DataFrame:
    """The lines as a frame, each question's p-values Holm-corrected over the lines that have
    one, and each line's verdict: 'more' / 'fewer' (the attack against the reference,
    significant at alpha), 'n.s.', or '' where untested."""
    frame = pd.DataFrame(lines)
    if frame.empty:
        return frame
    for question in ("distinct", "precision"):
        column = f"p_{question}"
        if column not in frame:
            frame[column] = np.nan
        known = frame[column].notna()
        if known.any():
            frame.loc[known, column] = stats.holm(list(frame.loc[known, column]))
        frame[f"verdict_{question}"] = [_verdict(line, question) for line in frame.to_dict("records")]
    return frame


def at_equal_cost(base: dict, attack: CellRecord, references: list[CellRecord]) -> list[dict]:
    """The lines of one attack cell (``base``: what names it) against the reference's cells on
    its target (``references``, smallest N_G first): the reference alone, then with each
    ranker; raw p-values (``corrected`` applies Holm's correction over a view)."""
    budget = attack.total
    reaching = [r for r in references if r.total is not None and r.total >= budget * (1 - 1e-12)]
    chosen = reaching[0] if reaching else references[-1]
    k = chosen.within_budget(budget)
    claims = min(attack.n, k)
    line = {**base, "arm": "reference", "cost": budget, "reference": chosen.row["attack"],
            "reference_n_g": chosen.n, "reference_k": k, "reference_cost": float(chosen.prefix[k - 1]) if k else 0.0,
            "enough": bool(reaching), "needed_n_g": needed_generations(chosen, budget),
            "distinct": attack.distinct_within(attack.n), "reference_distinct": chosen.distinct_within(k),
            "copies": attack.copies_within(attack.n), "precision": attack.copies_within(attack.n) / attack.n,
            "reference_claims": claims, "reference_copies": chosen.copies_within(claims),
            "note": "" if reaching else (f"the reference's largest cell (N_G {chosen.n:,}) reaches only "
                                         f"{chosen.total:,.0f} of the budget: needs N_G >= "
                                         f"{needed_generations(chosen, budget):,}")}
    line["reference_precision"] = line["reference_copies"] / claims if claims else None
    if reaching and k:
        line["p_distinct"] = stats.z_test(line["distinct"], attack.distinct_se(attack.n),
                                          line["reference_distinct"], chosen.distinct_se(k))
        line["p_precision"] = stats.rate_test(line["copies"], attack.n, line["reference_copies"], claims)
    lines = [line]
    names = sorted({name for r in references for name in r.ranker_scores if _ranker_says(references, name, "attacker")})
    for name in names:
        lines.append(_ranker_arm(base, attack, references, name, budget))
    return lines


def _ranker_arm(base: dict, attack: CellRecord, references: list[CellRecord], name: str, budget: float) -> dict:
    """UnCond + ranker ``name``: its top K claims from what the budget buys (the ranker's own
    cost, per candidate as its cell measured it, paid from the same budget)."""
    line = {**base, "arm": f"reference + {name}", "cost": budget, "copies": attack.copies_within(attack.n),
            "precision": attack.copies_within(attack.n) / attack.n}
    having = [r for r in references if name in r.ranker_scores]
    invariant = _ranker_says(having, name, "prefix_invariant")

    def ranker_cost(record: CellRecord, k: int) -> float:
        spent = (record.row["cost"].get("rankers") or {}).get(name) or {}
        return equivalents(spent) * k / max(record.n, 1)

    chosen, k = None, 0
    if invariant:
        for record in having:  # the smallest cell whose prefix with the ranker's cost reaches the budget
            fits = np.flatnonzero(record.prefix + ranker_cost(record, 1) * np.arange(1, record.n + 1)
                                  <= budget * (1 + 1e-12))
            k = int(fits[-1]) + 1 if len(fits) else 0
            chosen = record
            if k < record.n:
                break
        line["note"] = f"{name} is prefix-invariant: it ranks the prefix the budget buys"
    else:
        whole = [r for r in having if r.total + ranker_cost(r, r.n) <= budget * (1 + 1e-12)]
        if whole and whole[-1].total + ranker_cost(whole[-1], whole[-1].n) >= SPEND_SHARE * budget:
            chosen, k = whole[-1], whole[-1].n
            line["note"] = (f"{name} scores a candidate against all of its cell's: the whole reference cell "
                            f"(N_G {chosen.n:,}) within the budget is ranked")
        else:
            line["note"] = (f"{name} scores a candidate against all of its cell's, and no reference cell with it "
                            f"spends {SPEND_SHARE:.0%} to 100% of the budget")
    if chosen is None or not k:
        return line
    claims = min(attack.n, k)
    copies = _top_copies(chosen, chosen.ranker_scores[name], k, claims)
    line.update(reference=chosen.row["attack"], reference_n_g=chosen.n, reference_k=k,
                reference_cost=float(chosen.prefix[k - 1]) + ranker_cost(chosen, k), enough=True,
                reference_claims=claims, reference_copies=copies, reference_precision=copies / claims,
                p_precision=stats.rate_test(line["copies"], attack.n, copies, claims))
    return line


def _verdict(line: dict, question: str) -> str:
    p = line.get(f"p_{question}")
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    if p >= stats.ALPHA:
        return "n.s."
    if question == "distinct":
        ahead = line["distinct"] > line["reference_distinct"]
    else:
        ahead = line["precision"] > line["reference_precision"]
    return "more" if ahead else "fewer"


def compare_equal_cost(run_dir: str | Path | list[str | Path], attack: str, reference: str, *,
                       scale: int | None = None, seed: int | None = None, band: str = "high",
                       by: str | None = None) -> pd.DataFrame:
    """``attack`` against ``reference``'s prefix of the attack's own total cost, on each target
    model both ran on (report/budget.py ``equal_cost``): one line per scale and seed and arm
    (the reference alone, then with each ranker it ran). The copy criterion is ``by``'s
    ``memorized`` (``band`` for a metric with bands; None: the default copy criterion), as in
    ``compare_attacks``. The reference
    may be in another run folder (a companion suite at a larger N_G: a larger N_G of one seed
    holds the same first candidates). Both need a measured cost (row schema 5)."""
    from side_bench.report.compare import copy_rule
    from side_bench.results.records import find_rows_files, read_rows_file

    run_dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    where = ", ".join(map(str, run_dirs))
    rows = [{**r, "run_dir": str(f.parent)} for f in find_rows_files(run_dirs) for r in read_rows_file(f)]
    attacks = {r["attack"] for r in rows}
    for name in (attack, reference):
        if name not in attacks:
            raise BenchError(f"{where}: no attack {name!r} (found: {', '.join(sorted(attacks))})")
    if attack == reference:
        raise BenchError("--equal-cost: expected two different attacks (the second is the reference whose prefix is taken)")
    chosen = [r for r in rows if (scale is None or r["scale"] == scale) and (seed is None or r["seed"] == seed)]
    for name in (attack, reference):
        mine = [r for r in chosen if r["attack"] == name]
        if mine and not any(measured(r) for r in mine):
            raise BenchError(f"--equal-cost: {name!r} has no measured cost in {where} (rows written before row "
                             f"schema 5); run its cells again to measure it")
    rule = copy_rule(by, band, rows)
    frame = equal_cost(chosen, attacks=[attack], reference=reference, records=Records(rule))
    if frame.empty or "reference_k" not in frame:
        raise BenchError(f"{where}: {attack!r} and {reference!r} never ran on the same target model "
                         "(model key, scale and seed)" + (f" at scale {scale}" if scale is not None else ""))
    return frame.reset_index(drop=True)
