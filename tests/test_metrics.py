"""Metric values on hand-made arrays, counted by hand.

Images are single pixels (shape (N, 1, 1, 1)), so the pixel similarity is 1 - |g - x|, and
all values are multiples of 1/8 so every comparison at a band edge is exact.

train = [0, 0.5, 1];  candidates = [0.125, 0.25, 1.0, 0.75]
similarities (to 0, 0.5, 1):
  0.125 -> 0.875, 0.625, 0.125   best 0.875 (high)
  0.25  -> 0.75,  0.75,  0.25    best 0.75  (mid, on its low edge)
  1.0   -> 0,     0.5,   1.0     best 1.0   (high, on its closed top edge)
  0.75  -> 0.25,  0.75,  0.75    best 0.75  (mid)
bands: empty [0.3, 0.5), low [0.5, 0.75), mid [0.75, 0.875), high [0.875, 1.0]
"""

import numpy as np
import pytest
from optional_packages import FAISS

from side_bench import BenchError, score_arrays

BANDS = {"empty": [0.3, 0.5], "low": [0.5, 0.75], "mid": [0.75, 0.875], "high": [0.875, 1.0]}
TRAIN = np.array([0.0, 0.5, 1.0], dtype=np.float32).reshape(-1, 1, 1, 1)
CANDIDATES = np.array([0.125, 0.25, 1.0, 0.75], dtype=np.float32).reshape(-1, 1, 1, 1)


def values(frame):
    return {(r["metric"], r["band"] if isinstance(r["band"], str) else None): r["value"]
            for r in frame.to_dict("records")}


@pytest.fixture(params=[FAISS, "torch"])
def scored(request):
    frame = score_arrays(CANDIDATES, TRAIN, features="pixel", bands=BANDS, knn=request.param,
                         metrics=("ams", "ums", "p95", "gu-ratio", "carlini-l2"))
    return values(frame)


def test_ams_counts_best_similarity_per_band_with_edges(scored):
    assert scored[("ams", "high")] == 0.5  # 0.125 (0.875, low edge of high) and 1.0 (closed top edge)
    assert scored[("ams", "mid")] == 0.5  # 0.25 and 0.75, both exactly on mid's low edge
    assert scored[("ams", "low")] == 0.0
    assert scored[("ams", "empty")] == 0.0


def test_ums_counts_every_training_image_in_band(scored):
    assert scored[("ums", "high")] == 0.5  # train 0 (from 0.125) and train 1.0 (from 1.0): 2 / 4
    # mid holds train 0 and 0.5 (from 0.25) and 0.5 and 1 (from 0.75): 3 distinct / 4 > AMS 0.5
    assert scored[("ums", "mid")] == 0.75
    assert scored[("ums", "mid")] > scored[("ams", "mid")]
    # low: train 0.5 is at 0.625 from 0.125 and at 0.5 (the low edge) from 1.0: 1 / 4
    assert scored[("ums", "low")] == 0.25
    assert scored[("ums", "empty")] == 0.0


def test_p95_interpolates_best_similarities(scored):
    # sorted best = [0.75, 0.75, 0.875, 1.0]; rank 0.95 * 3 = 2.85 -> 0.875 + 0.85 * 0.125
    assert scored[("p95", None)] == pytest.approx(0.98125)


def test_gu_ratio_is_strictly_below_one_third(scored):
    # 0.125: 0.125 / 0.375 = 1/3 exactly: not memorized; 1.0: distance 0: memorized;
    # 0.25 and 0.75: equidistant (ratio 1).
    assert scored[("gu-ratio", None)] == 0.25


def test_carlini_l2_over_the_three_nearest():
    import torch

    from side_bench.scoring.scores import Band, Reference
    from side_bench_builtins.features import PixelFeatures
    from side_bench_builtins.metrics import CarliniL2

    reference = Reference(torch.from_numpy(TRAIN), PixelFeatures(), backend="torch")
    scores = reference.score(torch.from_numpy(CANDIDATES), [Band("high", 0.875, 1.0)])
    # 1.0: l = 0; 0.125: 0.125 / (0.5 * mean(0.125, 0.375, 0.875)) = 0.545 >= 0.5; others > 1
    value = CarliniL2(CarliniL2.Settings(neighbours=3)).compute(scores, None)
    assert (value.value, value.count, value.n) == (0.25, 1, 4)


def test_carlini_l2_with_fewer_training_images_than_neighbours_says_so(scored):
    # the default needs the 50 nearest; 3 training images: no value, and a reason
    assert np.isnan(scored[("carlini-l2", None)])
    frame = score_arrays(CANDIDATES, TRAIN, metrics=("carlini-l2",))
    assert "needs the 50 nearest training images" in frame["reason"][0]


def test_null_baseline_is_scored_the_same_way():
    heldout = np.array([0.5, 0.375], dtype=np.float32).reshape(-1, 1, 1, 1)
    frame = score_arrays(CANDIDATES, TRAIN, heldout, bands=BANDS, metrics=("ams", "gu-ratio"))
    by_key = {(r["metric"], r["band"] if isinstance(r["band"], str) else None): r for r in frame.to_dict("records")}
    # held-out 0.5 is a copy of train 0.5 (high); 0.375 is at 0.875 from 0.5 (high): 2 / 2
    assert by_key[("ams", "high")]["null_value"] == 1.0
    # 0.5: distance 0 -> memorized; 0.375: 0.125 / 0.375 = 1/3 -> not: 1 / 2
    assert by_key[("gu-ratio", None)]["null_value"] == 0.5
    assert by_key[("ams", "high")]["value"] == 0.5


def test_gu_ratio_counts_a_clear_nearest_neighbour():
    train = np.array([0.0, 0.5], dtype=np.float32).reshape(-1, 1, 1, 1)
    candidates = np.array([0.0625, 0.125], dtype=np.float32).reshape(-1, 1, 1, 1)
    # 0.0625: 0.0625 / 0.4375 = 1/7 < 1/3; 0.125: 0.125 / 0.375 = 1/3, not below
    frame = score_arrays(candidates, train, metrics=("gu-ratio",))
    assert values(frame)[("gu-ratio", None)] == 0.5


@pytest.mark.parametrize(
    "bands, message",
    [({"low": [0.9, 0.85]}, "low edge 0.9 must be below high edge 0.85"),
     ({"a": [0.5, 0.7], "b": [0.6, 0.8]}, "overlap")],
)
def test_bad_bands_are_refused(bands, message):
    with pytest.raises(BenchError, match=message):
        score_arrays(CANDIDATES, TRAIN, bands=bands)


def test_ums_interval_counts_distinct_training_images_only():
    # the same three images twice: every distinct image is hit in mid (3 of 3), so nothing is
    # left unseen and the interval ends at the value, as without the duplicates; counted
    # against 6 training images it spread to [0.26, 1.24], past the 3 / 4 any run could reach.
    # Its width is what another 4 candidates would miss: train 0 and 1 hit once (by 0.25 and
    # 0.75), 0.5 twice, q = (3/4)^4 = 0.31640625 twice and (1/2)^4 = 0.0625, sum q (1 - q) =
    # 2 x 0.21629333 + 0.05859375 = 0.49118042; cross terms 3/4 (0 - 2 x 1 / 4) = -0.375:
    # se = sqrt(0.11618042) / 4 = 0.0852133, low 0.75 - 1.96 se = 0.582985
    doubled = np.concatenate([TRAIN, TRAIN])
    for train in (TRAIN, doubled):
        row = score_arrays(CANDIDATES, train, features="pixel", bands={"mid": [0.75, 0.875]}, knn="torch",
                           metrics=("ums",)).iloc[0]
        assert (row["value"], row["ci_high"]) == (0.75, 0.75)
        assert row["ci_low"] == pytest.approx(0.582985, abs=1e-6)
