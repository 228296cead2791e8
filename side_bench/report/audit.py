"""The audit's page, ``OUT/index.html``, and its numbers, ``OUT/audit.json``.

The answer comes first: per attack, how many generations copy a training image by Gu et al.'s
test (nearest / second-nearest pixel distance below 1/3), with the count, its Wilson interval,
the null baseline (the same test on the held-out images the model never saw) and the test
against it, all read from the leaderboard's own aggregation (``leaderboard.aggregate``), so the
page says what the leaderboard would. Then the most similar generations beside their nearest
training images, each pair labelled with the training file, the similarity and whether it is a
copy; the training images copied most; membership leakage; what to try next; and every metric
and band as the leaderboard page shows them (``page.build_page``, rendered with the
leaderboard's own table macros).

The pairs are cut out of the cell's gallery PNG (``results/gallery.py``: the candidates are not
kept, the gallery is) in the order the runner drew it, and each pair's training half is checked
against the training image it names before the label is trusted.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from side_bench.errors import BenchError
from side_bench.report.leaderboard import (
    aggregate,
    cap,
    format_interval,
    format_value,
    load_rows,
    null_resolution,
)
from side_bench.report.page import Page, Table, build_page
from side_bench.results.store import atomic_write
from side_bench.scoring import stats

PAGE_FILE = "index.html"
SUMMARY_FILE = "audit.json"
PAIRS_FOLDER = "pairs"
COPY_WORDS = "Gu et al.'s test: the distance to the nearest training image is below 1/3 of the distance to the second"


@dataclass
class Answer:
    """One attack's copies by the copy test, against the null baseline."""

    attack: str
    copies: int | None
    n: int | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    null_copies: int | None
    null_n: int | None
    null_rate: float | None
    null_ci_low: float | None
    null_ci_high: float | None
    p_null: float | None
    above_null: bool
    distinct: int  # training images copied (distinct nearest images of the copies)
    showable: float | None  # the smallest rate this N_G and null could show above the null
    text: str = ""


@dataclass
class Pair:
    attack: str
    image: str  # relative to OUT
    candidate: int  # the generation's index in its cell (seeded by (seed, index))
    training_file: str
    similarity: float
    ratio: float  # nearest / second-nearest pixel distance
    copy: bool
    caption: str = ""


@dataclass
class Copied:
    training_file: str
    copies: int
    attacks: str


@dataclass
class MembershipLine:
    metric: str
    auc: str
    tpr: str
    leaks: bool | None  # the AUC's interval above 0.5; None when not computed
    note: str = ""


@dataclass
class AuditReport:
    title: str
    model: str
    train: str
    heldout: str
    n_train: int
    n_heldout: int
    n_generations: int
    suite_file: str
    run_dir: str
    verdict: str
    answers: list[Answer]
    agreement: list[str]  # the top AMS band beside the copy test, so that the two never contradict unseen
    pairs: list[Pair]
    pairs_note: str
    gallery_size: int
    copied: list[Copied]
    membership: list[MembershipLine]
    membership_text: str
    next_steps: list[str]
    notes: list[str]
    headline: Table | None = None
    details: list[Table] = field(default_factory=list)
    page: Page | None = None

    def summary(self) -> dict[str, Any]:
        """What audit.json holds: the numbers of the page, for machines."""
        return {"kind": "side-bench audit", "version": 1, "model": self.model, "train": self.train,
                "heldout": self.heldout, "n_train": self.n_train, "n_heldout": self.n_heldout,
                "n_generations": self.n_generations, "suite_file": self.suite_file, "run_dir": self.run_dir,
                "copy_test": COPY_WORDS, "verdict": self.verdict, "answers": [asdict(a) for a in self.answers],
                "agreement": self.agreement, "pairs": [asdict(p) for p in self.pairs],
                "copied": [asdict(c) for c in self.copied],
                "membership": [asdict(m) for m in self.membership], "next_steps": self.next_steps}


# ------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------


def _int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _float(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _rate_text(k, n, value, low, high) -> str:
    if value is None or k is None or n is None:
        return "n/a"
    return f"{k} of {n} ({format_value('rate', value)} {format_interval('rate', low, high)})"


def _answers(table: pd.DataFrame, copies: dict[str, tuple], order: list[str]) -> list[Answer]:
    lines = table[table["metric"] == "gu-ratio"]
    lines = lines.assign(_order=[order.index(a) if a in order else len(order) for a in lines["attack"]])
    lines = lines.sort_values("_order", kind="stable")
    answers = []
    for line in lines.itertuples(index=False):
        k, n = _int(line.count), _int(line.n)
        null_k, null_n = _int(line.null_count), _int(line.null_n)
        showable = null_resolution(n, null_n) if n and null_n else None
        answer = Answer(attack=str(line.attack), copies=k, n=n, rate=_float(line.value),
                        ci_low=_float(line.ci_low), ci_high=_float(line.ci_high), null_copies=null_k, null_n=null_n,
                        null_rate=_float(line.null_value), null_ci_low=_float(line.null_ci_low),
                        null_ci_high=_float(line.null_ci_high), p_null=_float(line.p_null),
                        above_null=bool(line.above_null), distinct=copies.get(str(line.attack), (None, 0))[1],
                        showable=showable)
        verdict = ("significantly above the null baseline" if answer.above_null else
                   "not significantly above the null baseline")
        p = f"p = {answer.p_null:.3g}, " if answer.p_null is not None else ""
        answer.text = (f"{cap(answer.attack, 40)}: {_rate_text(k, n, answer.rate, answer.ci_low, answer.ci_high)} "
                       f"generations copy a training image ({answer.distinct} distinct training images); the null "
                       f"baseline, the {null_n} held-out images the model never saw: "
                       f"{_rate_text(null_k, null_n, answer.null_rate, answer.null_ci_low, answer.null_ci_high)}; "
                       f"{verdict} ({p}{stats.RATE_TEST}, {stats.CORRECTION}-corrected, alpha {stats.ALPHA}).")
        answers.append(answer)
    return answers


def _verdict(answers: list[Answer]) -> str:
    if not answers:
        return "No copy-test rows: every cell failed (see the run folder's cells/)."
    above = [a for a in answers if a.above_null and a.copies]
    if above:
        best = max(above, key=lambda a: (a.rate or 0.0))
        return (f"Yes: the model copies its training images. With {cap(best.attack, 40)}, {best.copies} of {best.n} "
                f"generations ({format_value('rate', best.rate)}) copy one of {best.distinct} training images, "
                f"against {best.null_copies} of the {best.null_n} held-out images (the null baseline).")
    most = max(answers, key=lambda a: (a.rate or 0.0))
    showable = (f" With {most.n} generations and {most.null_n} held-out images, a copy rate below "
                f"{format_value('rate', most.showable)} could not have been shown above the null."
                if most.showable is not None else
                f" With {most.n} generations and {most.null_n} held-out images, no copy rate could have been "
                "shown above the null.")
    return (f"No copying shown above the null baseline: at most {most.copies} of {most.n} generations "
            f"({format_value('rate', most.rate)}, {cap(most.attack, 40)}) copy a training image, against "
            f"{most.null_copies} of {most.null_n} held-out images.{showable}")


def _agreement(table: pd.DataFrame, answers: list[Answer]) -> list[str]:
    """AMS in its highest band beside the copy test: when one is above the null and the other
    not, the page says so (the two criteria differ: a band of similarity against a ratio)."""
    ams = table[(table["metric"] == "ams") & table["band_low"].notna()]
    if ams.empty:
        return []
    top = ams[ams["band_low"] == ams["band_low"].max()]
    said = []
    gu_above = {a.attack: a.above_null for a in answers}
    for line in top.itertuples(index=False):
        attack = str(line.attack)
        band = f"{line.band} [{line.band_low:g}, {line.band_high:g}]"
        found = _rate_text(_int(line.count), _int(line.n), _float(line.value), _float(line.ci_low), _float(line.ci_high))
        null = _rate_text(_int(line.null_count), _int(line.null_n), _float(line.null_value), _float(line.null_ci_low),
                          _float(line.null_ci_high))
        text = (f"{cap(attack, 40)}: AMS in band {band} (a generation this similar to a training image): {found}; "
                f"null baseline {null}; {'significantly above' if line.above_null else 'not significantly above'} it")
        if attack in gu_above and gu_above[attack] != bool(line.above_null):
            text += (" — unlike the copy test, which "
                     + ("is above the null" if gu_above[attack] else "is not") + ": the two criteria differ "
                     "(a similarity band counts near-copies too; the ratio test needs the nearest image far "
                     "closer than the second)")
        said.append(text + ".")
    return said


def _membership(rows: pd.DataFrame, membership: tuple[str, ...]) -> tuple[list[MembershipLine], str]:
    found = rows[rows["metric"].isin([*membership, *(f"{m} (tpr@1%)" for m in membership)])]
    if found.empty:
        return [], ("Not measured: the membership attacks score unconditional models only."
                    if not rows.empty else "")
    first = found.drop_duplicates("metric").set_index("metric")
    lines = []
    for metric in membership:
        if metric not in first.index:
            continue
        auc = first.loc[metric]
        tpr = first.loc[f"{metric} (tpr@1%)"] if f"{metric} (tpr@1%)" in first.index else None
        value = _float(auc.get("value"))
        low, high = _float(auc.get("ci_low")), _float(auc.get("ci_high"))
        leaks = None if value is None or low is None else low > 0.5
        auc_text = f"{value:.3f} [{low:.3f}, {high:.3f}]" if value is not None and low is not None and high is not None \
            else (f"{value:.3f}" if value is not None else f"n/a ({cap(auc.get('reason') or '', 100)})")
        tpr_text = ""
        if tpr is not None and _float(tpr.get("value")) is not None:
            tpr_text = (f"{format_value('rate', _float(tpr.get('value')))} "
                        f"{format_interval('rate', _float(tpr.get('ci_low')), _float(tpr.get('ci_high')))}")
        lines.append(MembershipLine(metric=metric, auc=auc_text, tpr=tpr_text, leaks=leaks,
                                    note=cap(str(auc.get("metric_description") or ""), 200)))
    known = [line for line in lines if line.leaks is not None]
    if not known:
        return lines, "Not computed (see each line's note)."
    leaking = [line for line in known if line.leaks]
    if leaking:
        names = ", ".join(line.metric for line in leaking)
        verb = "tells" if len(leaking) == 1 else "tell"
        return lines, (f"The model leaks which images it was trained on: {names} {verb} its training images from "
                       "the held-out ones better than chance (the AUC's 95% interval is above 0.5, chance).")
    return lines, ("No membership leakage shown: every AUC's 95% interval reaches 0.5 (chance), so the attacks do "
                   "not tell the training images from the held-out ones better than chance at this size.")


# ------------------------------------------------------------------------------------------
# Pairs: the cell's gallery cut into labelled pairs
# ------------------------------------------------------------------------------------------


def _gallery_order(best_similarity: np.ndarray, k: int) -> list[int]:
    """The candidates of a cell's gallery, in the order ``results/gallery.py`` drew them."""
    import torch

    return torch.argsort(torch.from_numpy(best_similarity), descending=True)[:k].tolist()


def _cut(gallery, slot: int):
    """Pair ``slot`` of a gallery image: (the pair, its training half)."""
    from side_bench.results.gallery import CAPTION, PAIRS_PER_ROW, TILE

    pair_width, pair_height = 2 * TILE + 4, TILE + CAPTION
    x = (slot % PAIRS_PER_ROW) * (pair_width + 8)
    y = (slot // PAIRS_PER_ROW) * (pair_height + 6)
    return gallery.crop((x, y, x + pair_width, y + TILE)), gallery.crop((x + TILE + 4, y, x + 2 * TILE + 4, y + TILE))


def _pairs(rows: pd.DataFrame, run_dir: Path, out: Path, train01, train_files: list[str], copy_metric,
           gallery_size: int, order: list[str]) -> tuple[list[Pair], list[Copied], dict[str, tuple], str]:
    """Labelled pairs per attack, the training images copied most, and per attack (copies mask,
    distinct images copied)."""
    from PIL import Image

    from side_bench.results.candidates import load_scores
    from side_bench.results.gallery import _tile

    pairs, counts, by_attack, notes = [], Counter(), {}, []
    who: dict[int, set[str]] = {}
    folder = out / PAIRS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # pairs of an earlier audit in this folder
    cells = rows.drop_duplicates("config_hash")
    cells = cells.assign(_order=[order.index(a) if a in order else len(order) for a in cells["attack"]])
    cells = cells.sort_values("_order", kind="stable")
    for row in cells.itertuples(index=False):
        if not isinstance(row.candidates_file, str):
            continue
        scores = load_scores(run_dir / row.candidates_file)
        copies = np.asarray(copy_metric.memorized(scores, None), dtype=bool)
        nearest = np.asarray(scores.nearest_index, dtype=np.int64)
        copied = nearest[copies]
        by_attack[str(row.attack)] = (copies, int(len(np.unique(copied))))
        for index in copied.tolist():
            counts[index] += 1
            who.setdefault(index, set()).add(str(row.attack))
        gallery_path = run_dir / row.gallery if isinstance(row.gallery, str) else None
        if gallery_size <= 0 or gallery_path is None or not gallery_path.is_file():
            continue
        d1, d2 = np.asarray(scores.pixel_d1, dtype=np.float64), np.asarray(scores.pixel_d2, dtype=np.float64)
        ratio = np.where(d1 == 0, 0.0, d1 / np.maximum(d2, 1e-12))
        with Image.open(gallery_path) as opened:
            gallery = opened.convert("RGB")
        order = _gallery_order(np.asarray(scores.best_similarity, dtype=np.float64), gallery_size)
        for slot, index in enumerate(order):
            pair, training_half = _cut(gallery, slot)
            neighbour = int(nearest[index])
            if np.asarray(training_half).tobytes() != np.asarray(_tile(train01[neighbour])).tobytes():
                notes.append(f"{cap(str(row.attack), 40)}: the gallery does not match the training images "
                             "(written by another version?): its pairs are not shown")
                break
            name = f"{PAIRS_FOLDER}/{_stem(str(row.attack))}-{slot:03d}.png"
            buffer = io.BytesIO()
            pair.resize((pair.width * 2, pair.height * 2), Image.NEAREST).save(buffer, format="PNG")
            atomic_write(out / name, buffer.getvalue())
            is_copy = bool(copies[index])
            label = train_files[neighbour] if neighbour < len(train_files) else f"training image {neighbour}"
            pairs.append(Pair(attack=str(row.attack), image=name, candidate=int(scores.sample_index[index]),
                              training_file=label, similarity=float(scores.best_similarity[index]),
                              ratio=float(ratio[index]), copy=is_copy,
                              caption=(f"{'a copy' if is_copy else 'not a copy'} (ratio {ratio[index]:.3f}, "
                                       f"similarity {scores.best_similarity[index]:.3f})")))
    copied = [Copied(training_file=train_files[i] if i < len(train_files) else f"training image {i}", copies=c,
                     attacks=", ".join(sorted(who[i]))) for i, c in counts.most_common(10)]
    return pairs, copied, by_attack, "; ".join(notes)


def _stem(text: str) -> str:
    from side_bench.report.plots import file_stem

    return file_stem(text)


# ------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------


def _next_steps(plan, answers: list[Answer], conditional: bool) -> list[str]:
    out, run_dir = plan.out, plan.run_dir
    steps = [f"Edit {plan.suite_file} (more generations, SIDE's settings or a sweep of its guidance_scale, other "
             f"features) and run it: side-bench run --suite {plan.suite_file} --results {out} (cells whose settings "
             f"did not change are reused; an edited suite gets a new run folder under {out / plan.suite.name}), then "
             f"side-bench leaderboard {out / plan.suite.name}/<that run folder> --format html --out "
             f"{out / 'leaderboard'}. Running side-bench audit again writes the default suite anew."]
    if "side" in plan.attacks:
        steps.append("SIDE ran at the settings chosen for 8x8 digits (20 clusters of 1,000 generations, lambda = 3, "
                     "240 classifier steps): tune them for this model, e.g. sweep = { \"extractor.guidance_scale\" = "
                     "[1.0, 3.0, 10.0] } in its [[attacks]] table.")
    coarse = [a for a in answers if a.showable is None or a.showable > 0.02]
    if coarse:
        steps.append(f"More generations and more held-out images resolve smaller rates: now a rate below "
                     f"{format_value('rate', coarse[0].showable) if coarse[0].showable else '100%'} cannot be shown "
                     f"above the null (--n-generations {4 * plan.suite.n_generations[plan.n_train]}, and a larger "
                     "--heldout folder).")
    if plan.model_shape[1] >= 32:
        steps.append("Pixel similarity suits small images; for photographs use image features (features = { name = "
                     "\"sscd\", path = \".../sscd_disc_mixup.torchscript.pt\" } and their bands) in the suite file.")
    if len(plan.attacks) > 1:
        steps.append(f"Which training images each attack copies, and the test between them: side-bench compare "
                     f"{run_dir} {plan.attacks[0]} {plan.attacks[1]} --gu")
    if not conditional and plan.n_heldout < 1000:
        steps.append(f"Membership: TPR at 1% FPR puts its threshold above all but {plan.n_heldout // 100} of the "
                     f"{plan.n_heldout} held-out images, so it is coarse; hold out more images for a finer one.")
    return steps


def build_audit_report(plan, rows: pd.DataFrame) -> AuditReport:
    """The page as data, from the run's rows (``leaderboard.load_rows``) and records."""
    from side_bench.registry import load_registry

    registry = load_registry()
    run_dir = Path(plan.run_dir)
    table = aggregate(rows)
    copy_metric = registry.build("metrics", "gu-ratio", {})
    data_file = run_dir / "data" / f"{plan.n_train}-{plan.suite.seeds[0]}.json"
    try:
        train_files = json.loads(data_file.read_text())["train"]
    except (OSError, ValueError, KeyError) as error:
        raise BenchError(f"{data_file}: cannot read which files were the training set ({error})") from error
    dataset = registry.build("datasets", plan.suite.dataset.name, plan.suite.dataset.settings)
    from side_bench.scoring.scores import to_unit

    train01 = to_unit(dataset.load(plan.n_train, plan.suite.seeds[0]).train)
    base = Path(plan.raw["dataset"]["train"])
    shown = [str(Path(f).relative_to(base)) if base.is_dir() and Path(f).is_relative_to(base) else f
             for f in train_files]
    pairs, copied, by_attack, pairs_note = _pairs(rows, run_dir, Path(plan.out), train01, shown, copy_metric,
                                                  int(plan.raw.get("gallery_size", 0)), list(plan.attacks))
    answers = _answers(table, by_attack, list(plan.attacks))
    membership, membership_text = _membership(rows, tuple(m for m in plan.raw["metrics"] if isinstance(m, str)
                                                         and m not in ("gu-ratio", "ams", "ums", "p95")))
    page = build_page(rows, table, headline="gu-ratio") if not table.empty else None
    setup = page.setups[0] if page is not None and page.setups else None
    return AuditReport(
        title=f"side-bench audit: {cap(str(plan.model), 120)}", model=str(plan.model), train=plan.raw["dataset"]["train"],
        heldout=plan.raw["dataset"]["heldout"], n_train=plan.n_train, n_heldout=plan.n_heldout,
        n_generations=plan.suite.n_generations[plan.n_train], suite_file=str(plan.suite_file), run_dir=str(run_dir),
        verdict=_verdict(answers), answers=answers, agreement=_agreement(table, answers) if not table.empty else [],
        pairs=pairs, pairs_note=pairs_note, gallery_size=int(plan.raw.get("gallery_size", 0)), copied=copied, membership=membership, membership_text=membership_text,
        next_steps=_next_steps(plan, answers, bool(plan.model_classes)), notes=list(plan.notes),
        headline=setup.headline if setup else None, details=setup.details if setup else [], page=page)


def write_audit_page(plan) -> AuditReport:
    """OUT/index.html and OUT/audit.json (and OUT/pairs/) from the run of ``plan``."""
    from side_bench.report.files import _environment

    rows = load_rows([plan.run_dir], warn=None)
    report = build_audit_report(plan, rows)
    html = _environment("html").get_template("audit.html.j2").render(report=report, copy_words=COPY_WORDS)
    atomic_write(Path(plan.out) / SUMMARY_FILE, json.dumps(report.summary(), indent=1, default=str) + "\n")
    atomic_write(Path(plan.out) / PAGE_FILE, html)
    return report
