"""Which training images two attacks copied from the same target model: kept, lost, gained.

A candidate is a copy when the metric named by ``by`` says so: its ``memorized(scores, band)``
(hookspecs.MetricTraits), asked through the registry, so the core knows no metric's criterion.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from side_bench.contracts import check_memorized
from side_bench.errors import BenchError
from side_bench.registry import traits_of
from side_bench.results.candidates import load_scores
from side_bench.results.records import find_rows_files, read_rows_file
from side_bench.scoring import stats
from side_bench.scoring.scores import Band, CandidateScores

# compare's name from before it asked metrics: "band" was the default criterion (best similarity in the band)
LEGACY_DEFAULT_BY = "band"


@dataclass
class CopyRule:
    """What counts as a copy: a metric's ``memorized`` on a band (None for a metric without bands)."""

    metric: Any
    band: Band | None
    label: str  # what counted as one, e.g. "ams in band high [0.93, 1.0]"
    who: str  # the metric and its plugin, for error messages

    def copies(self, scores: CandidateScores) -> np.ndarray:
        """Boolean mask over candidates: which are copies (checked against the contract)."""
        return check_memorized(self.metric.memorized(scores, self.band), scores.n_candidates, self.who)


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
    ``band`` of the run when it uses bands."""
    from side_bench.registry import load_registry

    registry = load_registry()
    if by is None or by == LEGACY_DEFAULT_BY:
        by = default_copy_criterion(registry)
    registration = registry.get("metrics", by, "--by")
    name = registration.name
    ran_with = {json.dumps(r.get("metric_settings") or {}, sort_keys=True) for r in rows if r["metric"] == name}
    if len(ran_with) > 1:
        raise BenchError(f"--by {name}: the runs computed it with different settings ({'; '.join(sorted(ran_with))})")
    settings = json.loads(ran_with.pop()) if ran_with else {}
    metric = registry.build("metrics", name, settings, f"--by {name}")
    if traits_of("metrics", metric).memorized is None:
        able = [n for n in registry.names("metrics") if registry.get("metrics", n).traits.memorized is not None]
        raise BenchError(f"--by: metric {name!r} has no copy criterion (no memorized(scores, band)); "
                         f"metrics with one: {', '.join(able) or 'none'}")
    label = name + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else "")
    band_obj = None
    if traits_of("metrics", metric).uses_bands:
        edges = {(r["band_low"], r["band_high"]) for r in rows if r["band"] == band}
        if len(edges) != 1:
            known = sorted({r["band"] for r in rows if r["band"]})
            raise BenchError(f"--band: {band!r} is not a band of this run (found: {', '.join(known)})")
        band_obj = Band(band, *edges.pop())
        label += f" in band {band} [{band_obj.low}, {band_obj.high}]"
    return CopyRule(metric, band_obj, label, registration.describe())


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
        mask = rule.copies(scores)
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
