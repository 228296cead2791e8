"""Which training images two attacks copied from the same target model: kept, lost, gained.

A candidate is a copy when the metric named by ``by`` says so: its ``memorized(scores, band)``
(hookspecs.MetricTraits), as the cell's per-candidate records stored it when the cell was scored
(version 3), else asked of the installed metric through the registry (older records), so the
core knows no metric's criterion.
Without ``by``, the metric that declares itself the default copy criterion
(``default_copy_criterion``; of the built-ins ``ams``: a best similarity in the chosen band);
``gu-ratio`` (alias ``gu``) counts one whose pixel distance ratio NN1/NN2 is below 1/3. The training
image a copy copied is its nearest one. For attacks A and B on one model (equal ``model_key``, same scale and seed):
the distinct training images each copied, those both copied, and those only one did.

Tests (docs/method.md section 7): the share of candidates that are copies, A against B, with
Fisher's exact test; the number of distinct images copied with a z-test on their
occupancy standard errors (``stats.distinct_variance``). With several scales or
seeds, the p-values are Holm-corrected across them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from side_bench.contracts import check_memorized
from side_bench.errors import BenchError
from side_bench.registry import traits_of
from side_bench.results.candidates import StoredCopies, load_scores, stored_copies
from side_bench.results.records import find_rows_files, read_rows_file
from side_bench.scoring import stats
from side_bench.scoring.scores import Band, CandidateScores

# compare's name from before it asked metrics: "band" was the default criterion (best similarity in the band)
LEGACY_DEFAULT_BY = "band"


@dataclass
class CopyRule:
    """What counts as a copy: a metric's ``memorized`` on a band (None for a metric without bands).

    A cell's records written since version 3 hold each metric's decisions as it made them when
    the cell was scored (``results/candidates.py``): those are read, and the metric's plugin is
    built (``build``) only for records that hold none, as every record before them."""

    name: str  # the metric as the rows name it
    band: Band | None
    label: str  # what counted as one, e.g. "ams in band high [0.93, 1.0]"
    who: str  # the metric and its plugin, for error messages
    build: Callable[[], Any]  # the installed metric with the run's settings
    _metric: Any = field(default=None, repr=False)

    def copies(self, scores: CandidateScores, stored: StoredCopies | None = None) -> np.ndarray:
        """Boolean mask over candidates: which are copies (the stored decisions, else the
        installed metric's, checked against the contract)."""
        if stored is not None and (self.name, self.band.name if self.band else None) in stored.decisions:
            decided = stored.decided(self.name, self.band.name if self.band else None)
            if len(decided) != scores.n_candidates:
                raise BenchError(f"{stored.path}: {len(decided)} copy decisions of {self.name!r} for "
                                 f"{scores.n_candidates} candidates")
            return decided
        if self._metric is None:
            self._metric = self.build()
        return check_memorized(self._metric.memorized(scores, self.band), scores.n_candidates, self.who)


def default_copy_criterion(registry) -> str:
    """The installed metric that declares itself the default copy criterion
    (``MetricTraits.default_copy_criterion``): exactly one may."""
    named = [n for n in registry.names("metrics") if registry.get("metrics", n).traits.default_copy_criterion]
    if len(named) != 1:
        able = [n for n in registry.names("metrics") if registry.get("metrics", n).traits.memorized is not None]
        which = f"{len(named)} installed metrics declare it ({', '.join(named)})" if named else "no installed metric does"
        raise BenchError(f"--by: no default copy criterion ({which}; default_copy_criterion, hookspecs.MetricTraits): "
                         f"name one with --by ({', '.join(able) or 'none has a copy criterion'})")
    return named[0]


def copy_rule(by: str | None, band: str, rows: list[dict]) -> CopyRule:
    """The metric ``by`` (a name or alias; None: ``default_copy_criterion``), built with the
    settings the run computed it with (its defaults when the run did not), and the band
    ``band`` of the run when it uses bands. Where every cell of ``rows`` stored its copy
    decisions (``_stored_rule``) no plugin is asked."""
    found = _stored_rule(by, band, rows)
    if found is not None:
        return found
    from side_bench.registry import load_registry

    registry = load_registry()
    if by is None or by == LEGACY_DEFAULT_BY:
        by = default_copy_criterion(registry)
    registration = registry.get("metrics", by, "--by")
    name = registration.name
    settings = _ran_with(name, rows)
    metric = registry.build("metrics", name, settings, f"--by {name}")
    if traits_of("metrics", metric).memorized is None:
        able = [n for n in registry.names("metrics") if registry.get("metrics", n).traits.memorized is not None]
        raise BenchError(f"--by: metric {name!r} has no copy criterion (no memorized(scores, band)); "
                         f"metrics with one: {', '.join(able) or 'none'}")
    band_obj = _band_of(band, rows) if traits_of("metrics", metric).uses_bands else None
    return CopyRule(name, band_obj, _label(name, settings, band_obj), registration.describe(), lambda: metric)


def _ran_with(name: str, rows: list[dict]) -> dict:
    ran_with = {json.dumps(r.get("metric_settings") or {}, sort_keys=True) for r in rows if r["metric"] == name}
    if len(ran_with) > 1:
        raise BenchError(f"--by {name}: the runs computed it with different settings ({'; '.join(sorted(ran_with))})")
    return json.loads(ran_with.pop()) if ran_with else {}


def _band_of(band: str, rows: list[dict]) -> Band:
    edges = {(r["band_low"], r["band_high"]) for r in rows if r["band"] == band}
    if len(edges) != 1:
        known = sorted({r["band"] for r in rows if r["band"]})
        raise BenchError(f"--band: {band!r} is not a band of this run (found: {', '.join(known)})")
    return Band(band, *edges.pop())


def _label(name: str, settings: dict, band: Band | None) -> str:
    label = name + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else "")
    return label + (f" in band {band.name} [{band.low}, {band.high}]" if band is not None else "")


def _stored_rule(by: str | None, band: str, rows: list[dict]) -> CopyRule | None:
    """The copy rule from the files alone, where every cell of ``rows`` with per-candidate
    records stored its copy decisions (version 3): ``by`` as the rows name it (None: the metric
    the records say was the default copy criterion), its settings and bands from the rows, and
    whether it has a copy criterion from the records. None where the registry must decide as
    before: a record without stored decisions, a name the rows do not hold (an alias), records
    that disagree."""
    held = []
    for row in rows:
        folder, relative = row.get("run_dir") or row.get("_run_dir"), row.get("candidates_file")
        if folder is None or not relative:
            continue
        try:
            held.append(stored_copies(Path(folder) / relative, read=False))
        except (BenchError, OSError, ValueError, KeyError):
            return None  # unreadable here: the registry path says so where it matters, as before
    if not held or any(s is None for s in held):
        return None
    if by is None or by == LEGACY_DEFAULT_BY:
        defaults = {s.default for s in held}
        if len(defaults) != 1 or None in defaults:
            return None
        by = defaults.pop()
    if by not in {r["metric"] for r in rows}:
        return None
    having = [by in s.metrics() for s in held]
    if not any(having):
        able = sorted(set().union(*(s.metrics() for s in held)))
        raise BenchError(f"--by: metric {by!r} has no copy criterion (no memorized(scores, band)); "
                         f"metrics with one: {', '.join(able) or 'none'}")
    if not all(having):
        return None
    settings = _ran_with(by, rows)
    band_obj = _band_of(band, rows) if any(isinstance(r.get("band"), str) and r["band"] for r in rows if r["metric"] == by) else None

    def build():
        from side_bench.registry import load_registry

        return load_registry().build("metrics", by, settings, f"--by {by}")

    return CopyRule(by, band_obj, _label(by, settings, band_obj), f"metric {by!r}", build)


def compare_attacks(run_dir: str | Path | list[str | Path], attack_a: str, attack_b: str, *,
                    scale: int | None = None, seed: int | None = None, band: str = "high",
                    by: str | None = None) -> pd.DataFrame:
    """One line per (scale, seed) where both attacks ran on the same target model.

    ``run_dir``: a run folder, or several (e.g. two companion suites on the same models, one
    holding the bound at a large N_G and one the realized attacks); each cell's candidates are
    read from its own folder. An attack that ran at one scale and seed in two of them is
    ambiguous and refused.

    Columns: scale, seed, n_a, n_b (N_G), copies_a, copies_b (candidates that are copies),
    distinct_a, distinct_b (training images copied), both, only_a, only_b, p_copies (Fisher,
    Holm-corrected), p_distinct (z-test on occupancy standard errors, Holm-corrected), copy (what counted as one).

    ``by``: the metric whose ``memorized`` decides what a copy is (``band``: the band it uses);
    None: the metric that declares itself the default copy criterion (``default_copy_criterion``).
    """
    run_dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    where = ", ".join(map(str, run_dirs))
    rows = [{**r, "_run_dir": f.parent} for f in find_rows_files(run_dirs) for r in read_rows_file(f)]
    cells = {}
    for row in rows:
        key = (row["attack"], row["scale"], row["seed"])
        first = cells.setdefault(key, row)
        if first["_run_dir"] != row["_run_dir"] and row["attack"] in (attack_a, attack_b):
            raise BenchError(f"{row['attack']!r} at scale {row['scale']}, seed {row['seed']} is in two runs "
                             f"({first['_run_dir']} and {row['_run_dir']}): name only the run folders to compare")
    attacks = {a for a, _, _ in cells}
    for name in (attack_a, attack_b):
        if name not in attacks:
            raise BenchError(f"{where}: no attack {name!r} (found: {', '.join(sorted(attacks))})")
    pairs = sorted({(s, d) for a, s, d in cells if a == attack_a and (attack_b, s, d) in cells
                    and (scale is None or s == scale) and (seed is None or d == seed)})
    if not pairs:
        raise BenchError(f"{where}: {attack_a!r} and {attack_b!r} never ran at the same scale and seed"
                         + (f" (scale {scale})" if scale is not None else ""))
    rule = copy_rule(by, band, rows)
    lines = []
    for scale_, seed_ in pairs:
        row_a, row_b = cells[(attack_a, scale_, seed_)], cells[(attack_b, scale_, seed_)]
        if row_a.get("model_key") is None or row_a.get("model_key") != row_b.get("model_key"):
            raise BenchError(f"{attack_a!r} and {attack_b!r} at scale {scale_} attacked different target models "
                             "(their model_key differs): kept/lost/gained compares attacks on one model")
        lines.append(_compare_cell(row_a, row_b, rule) | {"scale": scale_, "seed": seed_})
    frame = pd.DataFrame(lines)
    frame["p_copies"] = stats.holm(list(frame["p_copies"]))
    frame["p_distinct"] = stats.holm(list(frame["p_distinct"]))
    frame["copy"] = rule.label
    columns = ["scale", "seed", "n_a", "n_b", "copies_a", "copies_b", "distinct_a", "distinct_b", "both",
               "only_a", "only_b", "p_copies", "p_distinct", "copy"]
    return frame[columns]


def _compare_cell(row_a: dict, row_b: dict, rule: CopyRule) -> dict:
    found = []
    for row in (row_a, row_b):
        run_dir = row["_run_dir"]  # each cell's own run folder: the two may be in different runs
        if not row.get("candidates_file"):
            raise BenchError(f"{run_dir}: {row['attack']} @ {row['scale']} has no per-candidate records; run it again")
        scores = load_scores(run_dir / row["candidates_file"])
        mask = rule.copies(scores, stored_copies(run_dir / row["candidates_file"]))
        copied = scores.nearest_index[mask]
        found.append((scores.n_candidates, int(mask.sum()), set(copied.tolist()), mask, scores.nearest_index,
                      scores.n_distinct))  # what can be copied: the distinct images
    (n_a, k_a, set_a, mask_a, near_a, n_distinct_a), (n_b, k_b, set_b, mask_b, near_b, n_distinct_b) = found
    se_a = _distinct_se(mask_a, near_a, n_distinct_a)
    se_b = _distinct_se(mask_b, near_b, n_distinct_b)
    return {
        "n_a": n_a, "n_b": n_b, "copies_a": k_a, "copies_b": k_b,
        "distinct_a": len(set_a), "distinct_b": len(set_b), "both": len(set_a & set_b),
        "only_a": len(set_a - set_b), "only_b": len(set_b - set_a),
        "p_copies": stats.rate_test(k_a, n_a, k_b, n_b),
        "p_distinct": stats.z_test(len(set_a), se_a, len(set_b), se_b),
    }


def _distinct_se(mask: np.ndarray, nearest: np.ndarray, n_distinct: int) -> float:
    """Standard error of the number of distinct training images copied: the occupancy variance
    of ``stats.distinct_variance`` (a bootstrap's would be too small: a resample of the
    candidates holds ~63% of them)."""
    rows = np.flatnonzero(mask)
    return math.sqrt(stats.distinct_variance(rows, nearest[rows], len(mask), n_distinct))
