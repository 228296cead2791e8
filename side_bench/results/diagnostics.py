"""The one-line summary of the guidance diagnostics, as the page shows it under each attack.

A guided extractor writes diagnostics (``Candidates.diagnostics``: its classifier's held-out
accuracy per noise band, or the exact posterior it guides by; the guidance's alignment with the
exact posterior and its strength per noise band, ``sampling/kernel_posterior.py``), and declares
``summarize_diagnostics`` (``hookspecs.ExtractorTraits``), here ``guidance_summary``: the runner
writes its lines into every row of the cell (``diagnostics_summary``), so the page reads them
from the result files and knows no extractor's keys. Rows written before the field (schema
version 5 and older) are summarized by the same function when read (``results/records.py``).
Pure Python, no import of side_bench: every stage may use it.
"""

from __future__ import annotations

from typing import Any


def _cap(text: Any, limit: int) -> str:
    """One line of at most ``limit`` characters, an ellipsis when cut (as report.leaderboard.cap)."""
    text = str(text)
    short = " ".join(text[: 4 * limit].split())
    return short[: limit - 1] + "\u2026" if len(short) > limit or len(text) > 4 * limit else short


def _by_noise(values: Any, style: str) -> str:
    """"0-100: 0.93, 100-300: 0.40": the numbers of a {band: value} diagnostic (None skipped)."""
    if not isinstance(values, dict):
        return ""
    return ", ".join(f"{_cap(k, 20)}: {v:{style}}" for k, v in list(values.items())[:8]
                     if isinstance(v, (int, float)) and not isinstance(v, bool))


def guidance_summary(diagnostics: dict) -> list[str]:
    """What a guided cell's diagnostics say, one short phrase each: the exact posterior it
    guided by (a "kernel" classifier), the classifier's held-out accuracy, the gradient's
    alignment with the exact posterior and the guidance strength, each by noise band."""
    if not isinstance(diagnostics, dict):
        return []
    said = []
    classifier = diagnostics.get("classifier")
    if isinstance(classifier, dict) and classifier.get("classifier") == "kernel":
        said.append(f"classifier: the exact posterior of {_cap(str(classifier.get('pool_images')), 12)} pool images "
                    f"(bandwidth {_cap(str(classifier.get('bandwidth')), 12)})")
    accuracy = (classifier or {}).get("heldout", {}).get("accuracy") if isinstance(classifier, dict) else None
    guide = diagnostics.get("guidance") if isinstance(diagnostics.get("guidance"), dict) else {}
    for words, values, style in (("classifier held-out accuracy", accuracy, ".2f"),
                                 ("gradient alignment with the exact posterior", guide.get("alignment"), ".2f"),
                                 ("guidance strength", guide.get("strength"), ".3g")):
        if text := _by_noise(values, style):
            said.append(f"{words} by noise {text}")
    return said
