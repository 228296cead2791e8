"""Fine-tuned targets' second reference and FineXtract's clustering: the ``base-gu`` ranker and
the ``base-copies`` metric counted by hand on constructed images, the ``finextract-clusters``
ranker's clusters and representatives on constructed groups, and a tiny suite end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from side_bench.hookspecs import RunContext
from side_bench.plugin_api import BenchError, rate
from side_bench.registry import load_registry
from side_bench_builtins.features import PixelFeatures
from side_bench_builtins.finextract import FineXtractClusters, finextract_clusters, partition, similarities
from side_bench_builtins.rankers import BaseGu
from side_bench_builtins.ranking_metrics import BaseCopies


def ctx() -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, cache_dir=".", features=PixelFeatures())


def unit(*rows) -> torch.Tensor:
    """Images (n, 1, 2, 2) from rows of 4 pixel values."""
    return torch.tensor(np.array(rows), dtype=torch.float32).reshape(len(rows), 1, 2, 2)


# The base's training images, in the model's [-1, 1]: in [0, 1] they are all 0, all 1 (twice:
# a bit-identical duplicate, which must not be its own second neighbour) and a checkerboard.
BASE = unit([0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]) * 2 - 1
# Candidates in [0, 1]: an exact copy of the first, one halfway between everything, one near
# the second (0.1 from it in every pixel).
CANDIDATES = unit([0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.9, 0.9])


def test_base_gu_scores_and_base_copies_count_by_hand():
    target = SimpleNamespace(base_images=BASE)
    scores, threshold = BaseGu().score(CANDIDATES, target, ctx())
    # normalised distances ||g - b|| / 2 (D = 4):
    #   candidate 0: 0 to the zeros -> an exact copy, ratio 0
    #   candidate 1: 0.5 to the zeros and to the ones -> ratio 1
    #   candidate 2: 0.1 to the ones, sqrt(2 * 0.81 + 2 * 0.01) / 2 to the checkerboard -> 0.1 / 0.6403
    # (with the duplicate kept, candidate 2's second neighbour would be the ones again: ratio 1)
    expected = [0.0, -1.0, -0.1 / (math.sqrt(1.64) / 2)]
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=0)  # the candidates are float32 (0.9 is not)
    assert threshold == pytest.approx(-1 / 3)
    value = BaseCopies().compute(SimpleNamespace(ranker_scores={"base-gu": scores}, n_candidates=3), None)
    reference = rate(2, 3)  # candidates 0 and 2 copy a base image: 2 of N_G = 3, Wilson interval
    assert (value.count, value.n, value.value) == (2, 3, pytest.approx(2 / 3))
    assert (value.ci_low, value.ci_high) == (reference.ci_low, reference.ci_high)


def test_base_copies_is_strict_like_gu_ratio_and_says_when_it_has_no_scores():
    ratio = 1 / 3  # exactly at the threshold: not a copy (gu-ratio's test is d1 / d2 < 1/3)
    value = BaseCopies().compute(SimpleNamespace(ranker_scores={"base-gu": np.array([-ratio, -0.3])},
                                                 n_candidates=2), None)
    assert (value.count, value.n) == (1, 2)
    missing = BaseCopies().compute(SimpleNamespace(ranker_scores={}, n_candidates=2), None)
    assert missing.value is None and "base-gu" in missing.reason


def test_base_gu_needs_base_images():
    with pytest.raises(BenchError, match="base-gu.*no base training images"):
        BaseGu().score(CANDIDATES, SimpleNamespace(base_images=None), ctx())
    with pytest.raises(BenchError, match="at least 2 distinct base"):
        BaseGu().score(CANDIDATES, SimpleNamespace(base_images=BASE[1:3]), ctx())


# Three groups of candidates around c * (1, 1, 1, 1), offsets u = (e, -e, 0, 0), v = (0, 0, e, -e)
# (orthogonal to the groups' separation, so every between-group similarity is within 3e-4 of
# 1 - |cA - cB|): A (5) at 0.1, B (3) at 0.447, C (4) at 0.805. Pixel similarity within a group
# >= 0.97; A-B 0.653, B-C 0.642, A-C 0.295 (off the 0.01 grid by > 0.001).
E = 0.01
U, V = np.array([E, -E, 0, 0]), np.array([0, 0, E, -E])
GROUPS = {"A": (0.1, [0 * U, U, -U, V, -V]), "B": (0.447, [U, 0 * U, -U]), "C": (0.805, [0 * U, U, -U, V])}
# interleaved, so that the clusters are not runs of indices
ORDER = ["B0", "A0", "C0", "A1", "B1", "A2", "C1", "A3", "B2", "A4", "C2", "C3"]


def grouped() -> torch.Tensor:
    rows = [GROUPS[name[0]][0] + GROUPS[name[0]][1][int(name[1])] for name in ORDER]
    return unit(*rows)


def index(name: str) -> int:
    return ORDER.index(name)


def test_the_clusters_are_the_groups_at_the_lowest_threshold_with_n0_cliques():
    sim = similarities(grouped().reshape(12, -1).double(), "l2")
    # the 25% quantile of the 66 pairs lies among the 20 A-C pairs (0.295): the scan starts at
    # 0.29, where every pair is linked (one clique); from 0.30 A-C is cut (A+B and C: two);
    # from 0.66 A-B and B-C are cut too: three cliques, the groups
    linked = sim >= 0.29
    np.fill_diagonal(linked, False)
    assert [sorted(c) for c in partition(linked)] == [list(range(12))]
    two = finextract_clusters(sim, 2)
    assert sorted(sorted(c) for c in two) == sorted([
        sorted(index(n) for n in ORDER if n[0] in "AB"), sorted(index(n) for n in ORDER if n[0] == "C")])
    three = finextract_clusters(sim, 3)
    assert sorted(sorted(c) for c in three) == sorted(
        sorted(index(n) for n in ORDER if n[0] == g) for g in "ABC")


def test_the_representatives_are_the_members_nearest_their_clusters_mean():
    target = SimpleNamespace(finetune_size=3)  # N0 = 3, as the attacker is assumed to know
    scores, threshold = FineXtractClusters().score(grouped(), target, ctx())
    # A's mean is its member with offset 0 (A0), B's is B1; C's mean is c + v / 4: C0 (at
    # |v| / 4) is nearer it than C1, C2, C3. Each scores its cluster's size, the rest 0.
    expected = np.zeros(12)
    expected[[index("A0"), index("B1"), index("C0")]] = [5, 3, 4]
    np.testing.assert_array_equal(scores, expected)
    assert threshold == 1.0  # the flagged candidates are exactly the representatives
    # the clusters setting overrides the target's fine-tuning set size
    one, _ = FineXtractClusters(FineXtractClusters.Settings(clusters=1)).score(grouped(), target, ctx())
    assert (one > 0).sum() == 1 and one.max() == 12


def test_more_clusters_than_candidates_falls_back_to_the_distinct_candidates():
    images = torch.cat([grouped(), grouped()[:1]])  # a bit-identical duplicate of B0
    scores, _ = FineXtractClusters(FineXtractClusters.Settings(clusters=50)).score(images, None, ctx())
    # at threshold 1 only the duplicates are linked: B0 and its copy form one clique (B0
    # represents it: the first of a tie), every other candidate is alone
    expected = np.ones(13)
    expected[0], expected[12] = 2, 0
    np.testing.assert_array_equal(scores, expected)


def test_greedy_clique_partition_by_hand():
    # a triangle 0-1-2 with a tail 2-3 and 3-4: the highest degree is node 2 (3 neighbours);
    # among its neighbours 0 and 1 have one neighbour each in the pool, 3 none... -> {2, 0, 1},
    # then {3, 4}
    adjacency = np.zeros((5, 5), dtype=bool)
    for a, b in [(0, 1), (0, 2), (1, 2), (2, 3), (3, 4)]:
        adjacency[a, b] = adjacency[b, a] = True
    assert partition(adjacency) == [[2, 0, 1], [3, 4]]
    assert partition(adjacency, stop_at=1) == [[2, 0, 1]]


def test_cluster_settings_are_checked():
    registry = load_registry()
    with pytest.raises(BenchError, match="clusters: expected 0"):
        registry.build("rankers", "finextract-clusters", {"clusters": -1}, "s.toml: rankers")
    with pytest.raises(BenchError, match="quantile: expected a value in"):
        registry.build("rankers", "finextract-clusters", {"quantile": 2.0}, "s.toml: rankers")
    with pytest.raises(BenchError, match="finetune_size"):
        FineXtractClusters().score(grouped(), SimpleNamespace(finetune_size=None), ctx())
    with pytest.raises(BenchError, match="max_candidates"):
        FineXtractClusters(FineXtractClusters.Settings(clusters=3, max_candidates=4)).score(grouped(), None, ctx())


TINY_FINETUNE = """
[[attacks]]
name = "finextract"
condition = "none"
extractor = "finextract"
extractor_settings = { ddim_steps = 4, batch_size = 8, guidance_scale = 3.0 }
"""


def test_a_tiny_finetuned_suite_reports_base_copies_and_the_representatives_precision(write_suite, tmp_path):
    from side_bench.run.runner import run_suite

    suite = write_suite(TINY_FINETUNE, replace={
        "scales = [16, 32]": "scales = [16]",
        "n_generations = 8": "n_generations = 24",
        'metrics = ["ams", "ums", "p95", "gu-ratio"]':
            'metrics = ["gu-ratio", { name = "base-copies", id = "base-copies (base-gu)" }, '
            '{ name = "precision-at-k", id = "precision (representatives)", ranker = "finextract-clusters", k = 0 }]'
            '\nrankers = ["base-gu", "finextract-clusters"]',
        "batch_size = 16": "batch_size = 16\nfinetune = { base_images = 40, base_steps = 4, steps = 4 }",
    })
    rows = run_suite(str(suite), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache")
    assert set(rows["attack"]) == {"uncond", "finextract"}
    for attack in ("uncond", "finextract"):
        mine = rows[rows["attack"] == attack].set_index("metric")
        base = mine.loc["base-copies (base-gu)"]
        assert base["n"] == 24 and 0 <= base["count"] <= 24
        precision = mine.loc["precision (representatives)"]
        # 16 fine-tuning images: at least 16 clusters, each with one representative
        assert 16 <= precision["n"] <= 24 and 0 <= precision["count"] <= precision["n"]
        # the null baseline (held-out images) has no ranker scores: no base-copies there
        assert base["null_value"] is None or np.isnan(base["null_value"])


def tiny_unet(seed: int, size: int = 8):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()


def saved(folder, unet, **schedule):
    """A flat diffusers folder: save_pretrained's config and safetensors, and a scheduler config."""
    import json

    from diffusers import DDPMScheduler

    unet.save_pretrained(folder, safe_serialization=True)
    config = dict(DDPMScheduler(num_train_timesteps=1000, **schedule).config)
    (folder / "scheduler_config.json").write_text(json.dumps(config))
    return str(folder)


def test_the_diffusers_loader_takes_a_base_folder_beside_the_finetuned_one(tmp_path):
    from side_bench.hookspecs import DataSplit

    finetuned, base = tiny_unet(1), tiny_unet(2)
    settings = {"path": saved(tmp_path / "ft", finetuned), "base_path": saved(tmp_path / "base", base)}
    registry = load_registry()
    model = registry.build("models", "diffusers", settings)
    data = DataSplit(train=torch.zeros(7, 1, 8, 8), train_labels=None, heldout=torch.zeros(2, 1, 8, 8),
                     num_classes=0, identity={"dataset": "test"})
    run = RunContext(device=torch.device("cpu"), seed=0, cache_dir=tmp_path, features=PixelFeatures())
    target = model.prepare(data, None, "key", run)
    assert torch.equal(target.base_unet.conv_in.weight, base.conv_in.weight)
    assert torch.equal(target.unet.conv_in.weight, finetuned.conv_in.weight)
    assert target.finetune_size == 7 and target.base_images is None  # the base's data is not known
    assert len(target.identity["base"]["weights_sha256"]) == 64
    # finextract at w = 0 samples the loaded base: equal to sampling the base folder alone
    alone = registry.build("models", "diffusers", {"path": settings["base_path"]}).prepare(data, None, "k", run)
    common = {"ddim_steps": 2, "batch_size": 3}
    guided = registry.build("extractors", "finextract", {**common, "guidance_scale": 0.0}).extract(target, None, 3, run)
    plain = registry.build("extractors", "sample", common).extract(alone, None, 3, run)
    assert torch.equal(guided, plain if isinstance(plain, torch.Tensor) else plain.images)
    # without base_path: no base, as before (and the identity, so the cache keys, unchanged)
    single = registry.build("models", "diffusers", {"path": settings["path"]}).prepare(data, None, "key", run)
    assert single.base_unet is None and single.finetune_size is None and "base" not in single.identity


def test_a_bad_base_folder_is_refused_with_one_line(tmp_path):
    registry = load_registry()
    path = saved(tmp_path / "ft", tiny_unet(1))
    with pytest.raises(BenchError, match=r"model 'diffusers': base_path .*missing is not a folder"):
        registry.build("models", "diffusers", {"path": path, "base_path": str(tmp_path / "missing")})
    with pytest.raises(BenchError, match=r"base_path .*: makes images of shape \(1, 16, 16\)"):
        registry.build("models", "diffusers", {"path": path, "base_path": saved(tmp_path / "big", tiny_unet(2, 16))})
    with pytest.raises(BenchError, match="base_path .*: its noise schedule differs"):
        registry.build("models", "diffusers", {"path": path,
                                               "base_path": saved(tmp_path / "cos", tiny_unet(2), beta_schedule="squaredcos_cap_v2")})
