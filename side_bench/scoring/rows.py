"""Every metric of one set of ``CandidateScores``: computed, checked against the contract, as rows.

Apart from ``scores.py`` so that the scoring objects the contract names (``CandidateScores``,
``Band``) import no contract check: ``hookspecs.py`` names them, ``contracts.py`` imports
``hookspecs.py``, and this module imports both, with no import circle between the three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from side_bench.contracts import check_metric_value
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
