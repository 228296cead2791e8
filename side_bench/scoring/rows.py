"""Every metric of one set of ``CandidateScores``: computed, checked against the contract, as rows.

Apart from ``scores.py`` so that the scoring objects the contract names (``CandidateScores``,
``Band``) import no contract check: ``hookspecs.py`` names them, ``contracts.py`` imports
``hookspecs.py``, and this module imports both, with no import circle between the three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from side_bench.contracts import check_metric_value
from side_bench.registry import traits_of
from side_bench.results.records import metric_row

if TYPE_CHECKING:  # annotations only
    import torch

    from side_bench.scoring.scores import Band, CandidateScores, Reference


def metric_rows(scores: CandidateScores, metrics: dict, bands: list[Band],
                who: dict[str, str] | None = None) -> list[dict]:
    """Every metric (x band) of one set of scores: the value, its count, interval and meaning.

    What ``compute`` returns is checked against the contract (``check_metric_value``);
    ``who`` names each metric's plugin in error messages.
    """
    rows = []
    for name, metric in metrics.items():
        traits = traits_of("metrics", metric)
        for band in bands if traits.uses_bands else [None]:
            result = check_metric_value(metric.compute(scores, band), (who or {}).get(name, f"metric {name!r}"),
                                        traits.unit)
            rows.append(metric_row(name, band, result, traits))
    return rows


def score_images(candidates01: torch.Tensor, reference: Reference, metrics: dict,
                 bands: list[Band]) -> list[dict]:
    """Rows for every metric (x band) of these images against the reference."""
    return metric_rows(reference.score(candidates01, bands), metrics, bands)
