"""Every metric of one set of ``CandidateScores``: computed, checked against the contract, as rows.

Apart from ``scores.py`` so that the scoring objects the contract names (``CandidateScores``,
``Band``) import no contract check: ``hookspecs.py`` names them, ``contracts.py`` imports
``hookspecs.py``, and this module imports both, with no import circle between the three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from side_bench.contracts import check_memorized, check_metric_value
from side_bench.errors import BenchError, one_line
from side_bench.hookspecs import MetricValue
from side_bench.registry import traits_of
from side_bench.results.records import metric_row

if TYPE_CHECKING:  # annotations only
    import torch

    from side_bench.hookspecs import ModelContext
    from side_bench.scoring.scores import Band, CandidateScores, Reference

# what a model-level metric's row says where there is no model: the null baseline (held-out
# images), ``score`` (images made elsewhere), ``rescore`` (stored records)
NO_MODEL = "needs the target model (not available when rescoring stored records)"


def metric_rows(scores: CandidateScores, metrics: dict, bands: list[Band],
                who: dict[str, str] | None = None) -> list[dict]:
    """Every metric (x band) of one set of scores: the value, its count, interval and meaning.

    What ``compute`` returns is checked against the contract (``check_metric_value``);
    ``who`` names each metric's plugin in error messages. A model-level metric (``needs_model``)
    is not computed on candidates: its row says why (``NO_MODEL``); ``model_metric_rows``
    computes it.
    """
    rows = []
    for name, metric in metrics.items():
        traits = traits_of("metrics", metric)
        if traits.needs_model:
            rows.append(metric_row(name, None, MetricValue(None, reason=NO_MODEL), traits))
            continue
        for band in bands if traits.uses_bands else [None]:
            result = check_metric_value(metric.compute(scores, band), (who or {}).get(name, f"metric {name!r}"),
                                        traits.unit)
            rows.append(metric_row(name, band, result, traits))
    return rows


def copy_decisions(scores: CandidateScores, metrics: dict, bands: list[Band],
                   who: dict[str, str] | None = None) -> dict[tuple[str, str | None], object]:
    """Each metric's copy decision per candidate, where it has one (``memorized``), per band
    where it uses bands: {(metric, band name or None): a bool array (n,), or the one-line reason
    ``memorized`` refused (a ``BenchError``: e.g. carlini-l2 without its 50 neighbours)}.

    Stored in the cell's per-candidate records (``results/candidates.py``), so the page's cost
    section and ``compare`` read what the metric decided when the cell was scored, not what the
    installed plugin decides now. A model-level metric decides nothing per candidate."""
    decisions: dict[tuple[str, str | None], object] = {}
    for name, metric in metrics.items():
        traits = traits_of("metrics", metric)
        if traits.needs_model or traits.memorized is None:
            continue
        for band in bands if traits.uses_bands else [None]:
            key = (name, band.name if band is not None else None)
            try:
                decisions[key] = check_memorized(traits.memorized(scores, band), scores.n_candidates,
                                                 (who or {}).get(name, f"metric {name!r}"))
            except BenchError as error:  # as compare would have refused it: the reason is the record
                decisions[key] = one_line(error)
    return decisions


def default_copy_metric(metrics: dict) -> str | None:
    """The one metric of ``metrics`` that declares itself the default copy criterion
    (``default_copy_criterion``), or None where none or several do."""
    named = [name for name, metric in metrics.items() if traits_of("metrics", metric).default_copy_criterion]
    return named[0] if len(named) == 1 else None


def model_metric_rows(model: ModelContext, metrics: dict, who: dict[str, str] | None = None) -> list[dict]:
    """Every model-level metric's row for one target model: ``compute_model(model)``, checked
    like ``compute``'s value (``metric_rows``)."""
    rows = []
    for name, metric in metrics.items():
        traits = traits_of("metrics", metric)
        result = check_metric_value(traits.compute_model(model), (who or {}).get(name, f"metric {name!r}"),
                                    traits.unit)
        rows.append(metric_row(name, None, result, traits))
    return rows


def score_images(candidates01: torch.Tensor, reference: Reference, metrics: dict,
                 bands: list[Band]) -> list[dict]:
    """Rows for every metric (x band) of these images against the reference."""
    return metric_rows(reference.score(candidates01, bands), metrics, bands)
