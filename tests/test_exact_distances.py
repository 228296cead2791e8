"""Exact neighbour distances, and scoring against the distinct images of a training set.

Issue 23 items 2-3, issue 19 item 2: a bit-identical copy of a training image is at distance
exactly 0 on both backends (float32 in expanded form put it at ~1e-4), band edges are decided
on exact distances, and duplicated training images are collapsed so an exact copy of one is a
Gu copy (d1 = 0, d2 > 0) and UMS counts distinct images.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from optional_packages import FAISS
from PIL import Image

from side_bench.results.candidates import load_scores, write_scores
from side_bench.scoring.images import read_images
from side_bench.scoring.knn import ExactIndex
from side_bench.scoring.scores import Band, CandidateScores, Reference, distinct_images
from side_bench_builtins.metrics import UMS, GuRatio

PIXEL = SimpleNamespace(similarity="l2", embed=lambda images: images.reshape(len(images), -1).float())
BACKENDS = (FAISS, "torch")


def eight_bit_images(n: int, seed: int, shape=(3, 16, 16)) -> torch.Tensor:
    """Images as an 8-bit PNG holds them: v / 255 in float32, as read_images makes them."""
    values = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return torch.from_numpy(values.astype(np.float32) / 255.0)


def png_round_trip(images01: torch.Tensor, folder) -> torch.Tensor:
    folder.mkdir()
    for i, image in enumerate(images01):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:03d}.png")
    return read_images(folder, "generated")


def expanded_float32_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What the fast pass computes (and the scores were before): ||a||^2 + ||b||^2 - 2 a.b, float32."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    raw = torch.addmm((b * b).sum(1)[None, :], a, b.T, alpha=-2.0) + (a * a).sum(1)[:, None]
    return torch.sqrt(raw.clamp_min(0) / a.shape[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_png_copies_of_training_images_are_at_distance_exactly_zero(tmp_path, backend):
    train = eight_bit_images(60, seed=0)
    copies = png_round_trip(train[:40], tmp_path / "copies")
    assert torch.equal(copies, train[:40])  # bit-identical: the PNG holds the same 8-bit values
    # the expanded form does not put them at 0 (so this test would have caught it)
    assert (expanded_float32_distance(copies, train[:40]).diagonal() > 0).any()
    scores = Reference(train, PIXEL, backend=backend).score(copies, [Band("high", 0.95, 1.0)])
    assert np.all(scores.pixel_d1 == 0.0) and np.all(scores.best_similarity == 1.0)
    assert np.array_equal(scores.nearest_index, np.arange(40))
    assert np.all(scores.pixel_d2 > 0) and GuRatio.memorized(scores).all()
    assert scores.candidates_in_band(Band("high", 0.95, 1.0)) == 40
    # cosine features: an exact copy's similarity is exactly 1 too
    sims, idx = ExactIndex(train * 3 + 0.1, "cosine", backend).search(copies * 3 + 0.1, 2)
    assert torch.all(sims[:, 0] == 1.0) and torch.equal(idx[:, 0], torch.arange(40))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_band_edge_is_decided_by_the_exact_distance(backend):
    # Candidates a few 8-bit steps from training images; pick the pair whose float32 expanded
    # distance is furthest from the exact one, and put a band edge between the two.
    train = eight_bit_images(30, seed=1)
    noise = torch.from_numpy(np.random.default_rng(2).integers(-6, 7, size=train.shape).astype(np.float32))
    candidates = ((train * 255 + noise).clamp(0, 255) / 255).float()
    exact = 1 - torch.sqrt(((candidates.double() - train.double()) ** 2).reshape(30, -1).mean(1))
    fast = 1 - expanded_float32_distance(candidates, train).diagonal().double()
    worst = int((exact - fast).abs().argmax())
    assert abs(exact[worst] - fast[worst]) > 1e-8  # float32 rounding that could flip an edge
    edge = float((exact[worst] + fast[worst]) / 2)
    above = exact[worst] > edge  # the exact side of the edge; float32 would put it on the other
    band = Band("at-edge", edge, 1.0)
    scores = Reference(train, PIXEL, backend=backend).score(candidates[worst : worst + 1], [band])
    assert scores.best_similarity[0] == pytest.approx(float(exact[worst]), abs=1e-15)
    assert bool(scores.in_band(band)[0]) == bool(above)
    # the range search proposes with a margin and filters exactly: the pair is kept iff above
    assert (worst in scores.hit_index.tolist()) == bool(above)
    assert UMS().compute(scores, band).count == int(above)
    # stored and read back, the edge is decided the same way (float64 records)
    assert scores.best_similarity.dtype == np.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_nearest_and_the_band_pairs_agree_to_the_bit(backend):
    # AMS reads the nearest, UMS the pairs: at an edge they must decide the same candidate alike
    train = eight_bit_images(50, seed=7, shape=(1, 8, 8))
    noise = torch.from_numpy(np.random.default_rng(8).integers(-20, 21, size=train.shape).astype(np.float32))
    candidates = ((train * 255 + noise).clamp(0, 255) / 255).float()
    scores = Reference(train, PIXEL, backend=backend).score(candidates, [Band("low", 0.8, 1.0)])
    first = np.searchsorted(scores.hit_rows, np.arange(50))
    assert np.all(scores.hit_rows[first] == np.arange(50))  # every candidate has its nearest in the band
    assert np.array_equal(scores.hit_similarity[first], scores.best_similarity)
    assert np.array_equal(scores.hit_index[first], scores.nearest_index)
    np.testing.assert_allclose(1 - scores.pixel_d1, scores.best_similarity, rtol=0, atol=1e-15)  # same space


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_search_equals_an_exhaustive_float64_search(backend, monkeypatch):
    # Near-ties (duplicated base rows, tiny offsets) and no extra neighbours fetched: the rows
    # the fast pass cannot settle are searched again, and ties go to the lower index.
    monkeypatch.setattr("side_bench.scoring.knn.EXTRA_NEIGHBOURS", 0)
    generator = torch.Generator().manual_seed(3)
    base = torch.rand(200, 48, generator=generator)
    base[100:150] = base[:50] + 1e-7 * torch.randn(50, 48, generator=generator)
    base[150:160] = base[:10]  # exact ties
    queries = torch.cat([base[:20] + 1e-4 * torch.randn(20, 48, generator=generator),
                         torch.rand(30, 48, generator=generator)])
    index = ExactIndex(base, "l2", backend, chunk_bytes=4 * 200 * 17)  # several chunks
    distances, idx = index.nearest_distances(queries, 5)
    exact = ((queries.double()[:, None] - base.double()[None]) ** 2).mean(2).sqrt()  # from the differences
    expected = torch.from_numpy(np.stack([np.lexsort((np.arange(200), row)) for row in exact.numpy()])[:, :5])
    assert torch.equal(idx, expected)
    torch.testing.assert_close(distances, exact.gather(1, expected), atol=1e-15, rtol=0)


def test_duplicates_are_collapsed_with_their_counts():
    train = eight_bit_images(8, seed=4, shape=(1, 4, 4))
    train = train[[0, 1, 2, 1, 3, 1, 4, 2, 5]]  # image 1 three times, image 2 twice
    train[4] = -0.0 * train[4]  # -0.0 is the value 0.0: the same image as 0.0 would be
    train = torch.cat([train, torch.zeros(1, 1, 4, 4)])
    distinct_of, representatives, multiplicity = distinct_images(train.reshape(10, -1))
    # training index: 0 1 2 3 4 5 6 7 8 9; rows 1, 3, 5 equal, 2 and 7 equal, 4 and 9 both zeros
    assert representatives.tolist() == [0, 1, 2, 4, 6, 8]
    assert distinct_of.tolist() == [0, 1, 2, 1, 3, 1, 4, 2, 5, 3]
    assert multiplicity.tolist() == [1, 3, 2, 2, 1, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exact_copy_of_a_duplicated_image_is_a_copy(tmp_path, backend):
    # The convention (docs/user-guide.md, Metrics and bands): candidates are scored against the
    # distinct training images, so an exact copy of an image the training set holds 4 times
    # has d1 = 0 and d2 > 0 and is a Gu copy. DiffMemorize scores every copy: d1 = d2 = 0 and
    # its ratio 0/0 is not < 1/3, so it does not count it.
    images = eight_bit_images(20, seed=5)
    train = torch.cat([images, images[3:4].repeat(3, 1, 1, 1), images[7:8]])  # 3 x4, 7 x2
    candidates = png_round_trip(torch.stack([images[3], images[7], images[3], images[11]]), tmp_path / "c")
    reference = Reference(train, PIXEL, backend=backend)
    assert reference.multiplicity[reference.distinct_of[[3, 7, 11]]].tolist() == [4, 2, 1]
    high = Band("high", 0.95, 1.0)
    scores = reference.score(candidates, [high])
    assert np.all(scores.pixel_d1 == 0.0) and np.all(scores.pixel_d2 > 0)
    assert scores.nearest_index.tolist() == [3, 7, 3, 11]  # the first copy of each
    assert GuRatio().compute(scores, None).count == 4
    assert scores.n_train == 24 and scores.n_distinct == 20
    assert scores.multiplicity[scores.distinct_of[20:24]].tolist() == [4, 4, 4, 2]
    # UMS counts distinct images: 3, 7 and 11, not the 4 + 2 + 1 training rows equal to them
    assert scores.train_images_in_band(high) == 3
    # the peer convention, scoring every copy: 0/0 is not a copy there
    every_copy = ExactIndex(train, "l2", backend).nearest_distances(candidates[:2], 2)[0].numpy()
    assert every_copy.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with np.errstate(invalid="ignore"):
        assert not np.any(every_copy[:, 0] / every_copy[:, 1] < 1 / 3)
    # the per-candidate records keep the duplicates, so rescoring sees the same
    path = tmp_path / "scores.parquet"
    write_scores(path, scores, seed=0, kind="candidates", config_hash="h")
    back = load_scores(path)
    assert np.array_equal(back.distinct_of, scores.distinct_of)
    assert np.array_equal(back.multiplicity, scores.multiplicity)
    for name in ("best_similarity", "pixel_d1", "pixel_d2", "pixel_knn_mean", "hit_similarity"):
        assert np.array_equal(getattr(back, name), getattr(scores, name)), name
    assert GuRatio().compute(back, None).count == 4 and back.train_images_in_band(high) == 3


def test_old_scores_read_as_every_image_distinct():
    scores = CandidateScores(best_similarity=[0.9], nearest_index=[2], second_similarity=[0.8], pixel_d1=[0.1],
                             pixel_d2=[0.2], pixel_knn_mean=[0.3], knn_neighbours=3, hit_rows=[], hit_index=[],
                             hit_similarity=[], hits_floor=None, hits_truncated=0, n_train=3, sample_index=[0])
    assert scores.distinct_of.tolist() == [0, 1, 2] and scores.multiplicity.tolist() == [1, 1, 1]
    assert scores.representatives.tolist() == [0, 1, 2]


def test_score_arrays_scores_against_distinct_images(tmp_path):
    from side_bench import score_arrays

    images = eight_bit_images(30, seed=6, shape=(1, 8, 8))
    train = torch.cat([images, images[:5]])  # five images twice
    generated = png_round_trip(images[:10].repeat(1, 3, 1, 1), tmp_path / "g")[:, :1]
    rows = score_arrays(generated.numpy(), train.numpy(), metrics=("gu-ratio", "ums"), knn="torch",
                        bands={"high": [0.95, 1.0]}).set_index("metric")
    assert rows.loc["gu-ratio", "count"] == 10  # the five duplicated images included
    assert rows.loc["ums", "count"] == 10
