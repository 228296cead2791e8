"""Canaries (issue 19): planted duplicates, their metrics, the suite setting and the plot.

Expectations are worked out by hand from constructed data sets and candidates: which images
are canaries, how many copies each has, and which of them the candidates copy.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from side_bench.errors import BenchError
from side_bench.hookspecs import DataSplit
from side_bench.registry import load_registry
from side_bench.run.canaries import CanarySpec, image_digest, parse_canaries, plant
from side_bench.run.suite import canonical_hash, cell_model, expand_cells, load_suite
from side_bench.scoring.scores import CandidateScores, Reference
from side_bench_builtins.canary_metrics import CanaryPrecisionAtK, CanaryRecall, CanaryShare, NonCanaryRate
from side_bench_builtins.features import PixelFeatures

TOTAL, HELDOUT = 60, 10


def _images(n: int = TOTAL) -> torch.Tensor:
    """n distinct 1x4x4 images in [-1, 1] (image i holds the value -1 + i / n in its corner)."""
    images = torch.full((n, 1, 4, 4), -1.0)
    images[:, 0, 0, 0] = -1 + torch.arange(n) / n
    return images


class Nested:
    """The built-ins' contract: scale s is the first s of a seeded permutation after the held-out."""

    max_scale = TOTAL - HELDOUT

    def __init__(self, images=None):
        self.images = _images() if images is None else images

    def load(self, scale: int, seed: int) -> DataSplit:
        order = torch.randperm(TOTAL, generator=torch.Generator().manual_seed(seed))
        train, held = order[HELDOUT : HELDOUT + scale], order[:HELDOUT]
        return DataSplit(train=self.images[train], train_labels=train % 3, heldout=self.images[held], num_classes=3,
                         identity={"dataset": "nested", "scale": scale, "seed": seed})


class Reshuffled(Nested):
    """A data set whose scales do not nest (a new permutation per scale)."""

    def load(self, scale: int, seed: int) -> DataSplit:
        return super().load(scale, seed + scale)


SPEC = CanarySpec(counts=(1, 2, 4), per_count=2)


def _rows(images: torch.Tensor) -> list[str]:
    return [image_digest(image) for image in images]


def test_planted_counts_are_exact_and_outside_the_scale_and_the_heldout():
    dataset = Nested()
    base = dataset.load(20, 0)
    split, planted = plant(dataset, base, SPEC, 20, 0, "nested")
    assert len(split.train) == 20 + 2 * (1 + 2 + 4)  # the scale's images, then 14 copies
    assert torch.equal(split.train[:20], base.train) and torch.equal(split.heldout, base.heldout)
    assert planted.count.tolist() == [1, 1, 2, 2, 4, 4]
    digests = _rows(split.train)
    for first, count, digest in zip(planted.first_index, planted.count, planted.digest, strict=True):
        assert digests.count(digest) == count  # exactly d copies, side by side from its first index
        assert digests[first : first + count] == [digest] * count
    assert not set(planted.digest) & set(_rows(base.train)) | set(_rows(base.heldout)) & set(planted.digest)
    assert len(set(planted.digest)) == 6
    # the canaries are the permutation's next images: positions 0..5 after the scale
    assert planted.pool_position == [0, 1, 2, 3, 4, 5]
    assert split.train_labels[20:].tolist() == dataset.load(26, 0).train_labels[20:].repeat_interleave(
        torch.tensor([1, 1, 2, 2, 4, 4])).tolist()


def test_planting_is_seeded_and_enters_the_identity():
    dataset = Nested()
    first, planted = plant(dataset, dataset.load(20, 0), SPEC, 20, 0, "nested")
    again, planted_again = plant(dataset, dataset.load(20, 0), SPEC, 20, 0, "nested")
    other, planted_other = plant(dataset, dataset.load(20, 1), SPEC, 20, 1, "nested")
    assert torch.equal(first.train, again.train) and planted.digest == planted_again.digest
    assert planted.digest != planted_other.digest
    assert first.identity["canaries"]["counts"] == [1, 2, 4]
    assert [image[2] for image in first.identity["canaries"]["images"]] == planted.digest
    # the model cache key and the reference are hashes of data.identity: canaries change both
    plain = dataset.load(20, 0).identity
    assert canonical_hash(first.identity) != canonical_hash(plain)
    fewer, _ = plant(dataset, dataset.load(20, 0), CanarySpec((1, 2), 2), 20, 0, "nested")
    assert canonical_hash(fewer.identity) != canonical_hash(first.identity)


def test_an_image_already_in_the_data_is_never_a_canary():
    images = _images()
    order = torch.randperm(TOTAL, generator=torch.Generator().manual_seed(0))
    images[order[HELDOUT + 20]] = images[order[0]]  # the first pool image equals a held-out image
    dataset = Nested(images)
    base = dataset.load(20, 0)
    _, planted = plant(dataset, base, SPEC, 20, 0, "nested")
    assert planted.pool_position == [1, 2, 3, 4, 5, 6]  # position 0 skipped
    assert image_digest(base.heldout[0]) not in planted.digest


def test_a_dataset_that_cannot_supply_canaries_is_one_line():
    dataset = Reshuffled()
    with pytest.raises(BenchError, match="does not nest its scales.*canary_pool"):
        plant(dataset, dataset.load(20, 0), SPEC, 20, 0, "reshuffled")
    with pytest.raises(BenchError, match="only 4 distinct images outside scale 46"):
        plant(Nested(), Nested().load(46, 0), SPEC, 46, 0, "nested")


def test_a_dataset_may_give_its_own_pool():
    class Pooled(Reshuffled):
        def canary_pool(self, scale, seed, n):
            return _images(TOTAL + n)[TOTAL:], torch.zeros(n, dtype=torch.long)

    dataset = Pooled()
    split, planted = plant(dataset, dataset.load(20, 0), SPEC, 20, 0, "pooled")
    assert planted.source == "canary_pool" and len(split.train) == 34
    assert split.identity["canaries"]["source"] == "canary_pool"


@pytest.mark.parametrize("value, message", [
    ({"counts": []}, "counts: expected a non-empty list"),
    ({"counts": [1, 1]}, "1 is listed twice"),
    ({"counts": [0]}, "expected integers 1.."),
    ({"counts": [2], "per_count": 0}, "per_count: expected a positive integer"),
    ({"counts": [2], "copies": 3}, "unknown key 'copies'"),
])
def test_bad_canaries_settings_name_the_key(value, message):
    with pytest.raises(BenchError, match=f"suite.toml: canaries: .*{message}"):
        parse_canaries(value, "suite.toml")


# --------------------------------------------------------------------------------------------
# Metrics, on hand-made scores
# --------------------------------------------------------------------------------------------


def _scores(nearest, d1, canaries, ranker=None) -> CandidateScores:
    """Candidates with their nearest training image and Gu distances: d2 is 1 for all, so a
    candidate is a Gu copy exactly when d1 < 1/3. Training: 4 canaries of d = 8 (indices 0, 8,
    16, 24: their first copies) and 8 distinct others (32..39)."""
    n_train = 40
    distinct_of = np.concatenate([np.repeat(np.arange(4), 8), np.arange(4, 12)])
    n = len(nearest)
    return CandidateScores(
        best_similarity=np.full(n, 0.9), nearest_index=np.array(nearest), second_similarity=np.full(n, 0.8),
        pixel_d1=np.array(d1, dtype=float), pixel_d2=np.ones(n), pixel_knn_mean=np.ones(n), knn_neighbours=12,
        hit_rows=np.empty(0), hit_index=np.empty(0), hit_similarity=np.empty(0), hits_floor=None,
        hits_truncated=0, n_train=n_train, sample_index=np.arange(n), distinct_of=distinct_of,
        multiplicity=np.bincount(distinct_of), canaries=canaries,
        ranker_scores={} if ranker is None else {"clique": np.array(ranker, dtype=float)},
    )


CANARIES_D8 = np.array([8, 8, 8, 8] + [0] * 8)
# 8 candidates: two copies of canary 0 and one of canary 2 (two of four canaries copied), a near
# miss of canary 3 (d1 0.5: no copy), one copy of non-canary 33 and three far from everything
NEAREST = [0, 0, 16, 24, 33, 34, 35, 36]
D1 = [0.0, 0.1, 0.2, 0.5, 0.0, 0.9, 0.9, 0.9]


def test_canary_recall_counts_canaries_copied_at_least_once():
    recall = CanaryRecall(CanaryRecall.Settings(count=8)).compute(_scores(NEAREST, D1, CANARIES_D8), None)
    assert (recall.count, recall.n, recall.value) == (2, 4, 0.5)
    assert recall.interval == "wilson" and recall.ci_low < 0.5 < recall.ci_high
    everything = CanaryRecall().compute(_scores(NEAREST, D1, CANARIES_D8), None)  # count 0: every canary
    assert (everything.count, everything.n) == (2, 4)
    none_at_4 = CanaryRecall(CanaryRecall.Settings(count=4)).compute(_scores(NEAREST, D1, CANARIES_D8), None)
    assert none_at_4.value is None and "no canary planted 4 times" in none_at_4.reason
    copies = CanaryRecall(CanaryRecall.Settings(count=8)).memorized(_scores(NEAREST, D1, CANARIES_D8), None)
    assert copies.tolist() == [True, True, True, False, False, False, False, False]


def test_canary_share_and_the_non_canary_rate():
    scores = _scores(NEAREST, D1, CANARIES_D8)
    share = CanaryShare().compute(scores, None)  # 4 copies (0, 0, 16, 33), 3 of canaries
    assert (share.count, share.n) == (3, 4)
    rate = NonCanaryRate().compute(scores, None)  # the copy of 33, of 8 candidates
    assert (rate.count, rate.n) == (1, 8)
    nothing = CanaryShare().compute(_scores([33], [0.9], CANARIES_D8), None)
    assert nothing.value is None and nothing.reason == "no candidate is a copy"


def test_canary_precision_among_a_rankers_top_k():
    ranker = [0.1, 5.0, 4.0, 3.0, 2.0, 0.0, 0.0, 0.0]  # top 4: candidates 1, 2, 3, 4
    value = CanaryPrecisionAtK(CanaryPrecisionAtK.Settings(k=4)).compute(
        _scores(NEAREST, D1, CANARIES_D8, ranker), None)
    assert (value.count, value.n) == (2, 4)  # 1 and 2 copy canaries; 3 is no copy, 4 a non-canary


def test_the_band_criterion_makes_rows_per_band():
    metric = CanaryRecall(CanaryRecall.Settings(count=8, criterion="band"))
    assert metric.uses_bands and not CanaryRecall().uses_bands
    from side_bench.scoring.scores import Band

    scores = _scores(NEAREST, D1, CANARIES_D8)
    scores.best_similarity = np.array([0.99, 0.5, 0.5, 0.97, 0.5, 0.5, 0.5, 0.5])
    assert metric.compute(scores, Band("high", 0.95, 1.0)).count == 2  # canaries 0 and 3


def test_without_canaries_the_metrics_say_why():
    for metric in (CanaryRecall(), CanaryShare(), NonCanaryRate()):
        value = metric.compute(_scores(NEAREST, D1, None), None)
        assert value.value is None and "no canaries" in value.reason


def test_canaries_reach_the_scores_through_the_reference_and_the_records(tmp_path):
    dataset = Nested()
    split, planted = plant(dataset, dataset.load(20, 0), CanarySpec((2, 8), 2), 20, 0, "nested")
    reference = Reference((split.train + 1) / 2, PixelFeatures(), backend="torch",
                          canaries=planted.by_training_index())
    # candidates: an exact copy of each d = 8 canary and of one base image, and one mid-grey image
    chosen = [int(planted.first_index[2]), int(planted.first_index[3]), 5]
    candidates = torch.cat([(split.train[chosen] + 1) / 2, torch.full((1, 1, 4, 4), 0.5)])
    scores = reference.score(candidates, [])
    assert sorted(scores.canaries.tolist()) == [0] * 20 + [2, 2, 8, 8]
    recall = CanaryRecall(CanaryRecall.Settings(count=8)).compute(scores, None)
    assert (recall.count, recall.n) == (2, 2)  # an exact copy of a duplicated image is a Gu copy
    assert CanaryRecall(CanaryRecall.Settings(count=2)).compute(scores, None).count == 0
    assert (NonCanaryRate().compute(scores, None).count, NonCanaryRate().compute(scores, None).n) == (1, 4)
    from side_bench.results.candidates import load_scores, write_scores

    path = tmp_path / "c.parquet"
    write_scores(path, scores, seed=0, kind="candidates", config_hash="x")
    back = load_scores(path)
    assert back.canaries.tolist() == scores.canaries.tolist()
    assert CanaryRecall(CanaryRecall.Settings(count=8)).compute(back, None) == recall


# --------------------------------------------------------------------------------------------
# The suite setting, the shipped suite, the plot
# --------------------------------------------------------------------------------------------


def test_the_suite_setting_enters_every_cell_hash(write_suite):
    registry = load_registry()
    plain = load_suite(str(write_suite()), registry)
    planted = load_suite(str(write_suite(replace={'metrics = ["ams", "ums", "p95", "gu-ratio"]':
        'metrics = ["gu-ratio", "canary-recall"]\ncanaries = { counts = [1, 4], per_count = 2 }'})), registry)
    plain_cells, planted_cells = (expand_cells(s, versions={}, device="cpu", features_identity={})
                                  for s in (plain, planted))
    assert all("canaries" not in c.config for c in plain_cells)  # a suite without canaries keeps its hashes
    assert all(c.config["canaries"] == {"counts": [1, 4], "per_count": 2} for c in planted_cells)


def test_canary_metrics_without_canaries_and_bad_per_scale_are_refused(write_suite):
    registry = load_registry()
    with pytest.raises(BenchError, match="metrics.canary-share: needs planted canaries"):
        load_suite(str(write_suite(replace={'"gu-ratio"]': '"gu-ratio", "canary-share"]'})), registry)
    with pytest.raises(BenchError, match=r"\[model\] per_scale: '48' is not one of the scales"):
        load_suite(str(write_suite(replace={"batch_size = 16": 'batch_size = 16\nper_scale = { "48" = { steps = 3 } }'})),
                   registry)
    with pytest.raises(BenchError, match=r"canaries: scale 32 and 40 canaries need 72 images"):
        load_suite(str(write_suite(replace={"heldout = 32": "heldout = 1740",
                                            'metrics = [': 'canaries = { counts = [1, 2, 3, 4], per_count = 10 }\nmetrics = ['})),
                   registry)


def test_per_scale_model_settings_reach_only_their_scale(write_suite):
    suite = load_suite(str(write_suite(replace={"batch_size = 16": 'batch_size = 16\nper_scale = { "32" = { steps = 24 } }'})),
                       load_registry())
    cells = expand_cells(suite, versions={}, device="cpu", features_identity={})
    assert {c.scale: cell_model(c.config)["settings"]["steps"] for c in cells} == {16: 12, 32: 24}
    # the same model entry in every cell's config (so the leaderboard keeps one setup) ...
    assert cells[0].config["model"] == cells[1].config["model"]
    # ... and a suite without per_scale keeps the model's config, and so its hashes, as before
    plain = expand_cells(load_suite(str(write_suite()), load_registry()), versions={}, device="cpu",
                         features_identity={})
    assert "per_scale" not in plain[0].config["model"] and cell_model(plain[0].config) == plain[0].config["model"]


def test_digits_canaries_validates_and_dry_runs(tmp_path):
    from side_bench.run.dryrun import plan

    suite, planned, _ = plan("digits-canaries", results_dir=tmp_path)
    assert suite.canaries == CanarySpec((1, 2, 4, 8, 16, 32), 4)
    assert {p.attack for p in planned} == {"uncond", "cond", "side", "side-exact"} and len(planned) == 8
    # 750 views of every training image: steps x 64 / (scale + 252 canary copies)
    trained = {p.scale: p.train_images for p in planned if p.model_note == "train"}
    assert {scale: round(images / (scale + 252)) for scale, images in trained.items()} == {256: 750, 512: 750}
    recall_ids = [m for m in suite.metrics if m.startswith("canary-recall-d")]
    assert [suite.metric_settings[m]["count"] for m in recall_ids] == [1, 2, 4, 8, 16, 32]


def test_recall_against_count_is_a_curve_and_is_drawn(tmp_path):
    from side_bench.report.plots import plot_setting_curve, setting_curves

    description = CanaryRecall.description
    rows = pd.DataFrame([{"metric": f"canary-recall-d{d}", "metric_settings": {"count": d, "criterion": "gu"},
                          "metric_description": description, "unit": "rate"} for d in (1, 2, 4, 8)]
                        + [{"metric": "gu-ratio", "metric_settings": {}, "metric_description": "gu", "unit": "rate"}])
    assert setting_curves(rows) == [("count", {f"canary-recall-d{d}": float(d) for d in (1, 2, 4, 8)})]
    part = pd.DataFrame([{"attack": a, "scale": 256, "x": float(d), "value": v, "ci_low": 0.0, "ci_high": 1.0,
                          "null_value": 0.0, "rank": 1} for a in ("uncond", "side")
                         for d, v in ((1, 0.0), (2, 0.25), (4, 0.5), (8, 1.0))])
    figures = plot_setting_curve(part, key="count", title="canary-recall-d", band="", setup="digits",
                                 out=tmp_path, colours={})
    assert len(figures) == 1 and (tmp_path / figures[0].png).stat().st_size > 0
    assert "count" in json.dumps(vars(figures[0]))


def test_a_run_plants_records_and_rescores_its_canaries(write_suite, tmp_path):
    from side_bench import rescore_run, run_suite

    suite = write_suite(replace={
        'metrics = ["ams", "ums", "p95", "gu-ratio"]':
            'metrics = ["gu-ratio", "canary-share", { id = "canary-recall-d3", name = "canary-recall", count = 3 }]\n'
            'canaries = { counts = [1, 3], per_count = 2 }',
        "scales = [16, 32]": "scales = [16]"})
    rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    run_dir = next((tmp_path / "results" / "tiny").iterdir())
    record = json.loads((run_dir / "canaries" / "16-0.json").read_text())
    assert [c["count"] for c in record["canaries"]] == [1, 1, 3, 3]
    assert [c["train_index"] for c in record["canaries"]] == [16, 17, 18, 21]
    assert set(rows["n_train"]) == {16 + 8}
    recall = rows[rows["metric"] == "canary-recall-d3"].iloc[0]
    assert recall["n"] == 2 and recall["null_n"] == 2  # the held-out images are scored against them too
    rescored = [json.loads(line) for line in (rescore_run(run_dir, out=tmp_path / "rescored") / "rows.jsonl")
                .read_text().splitlines()]
    again = next(r for r in rescored if r["metric"] == "canary-recall-d3")
    assert (again["count"], again["null_count"]) == (recall["count"], recall["null_count"])
