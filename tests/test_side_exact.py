"""side-exact: SIDE's exact-classifier bound by rejection from unguided samples (issue 18, item 1)."""

import pytest
import torch
from diffusers import UNet2DModel

from side_bench import BenchError
from side_bench.hookspecs import DataSplit, RunContext, TargetModel
from side_bench.sampling.diffusion import ddim_sample, sample_generator
from side_bench_builtins import extractors
from side_bench_builtins.conditions import Surrogate, SurrogateLabelledImages
from side_bench_builtins.extractors import SideExact
from side_bench_builtins.features import PixelFeatures

# The constructed model: four clusters with these shares among its samples and these copy
# rates within each. Plain sampling copies at sum(share * rate) = 0 + 0.03 + 0.03 + 0.03 = 9%;
# cluster-uniform sampling (the bound) at mean(rate) = (0 + 0.1 + 0.2 + 0.6) / 4 = 22.5%.
SHARES = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
COPY_RATES = [0.0, 0.1, 0.2, 0.6]


def fake_sample(shares):
    """A stand-in for ``ddim_sample`` with its contract: sample j depends only on (seed, purpose, j).

    Sample j of cluster c is all -1 but pixel c (+1, so its pixel embedding's nearest centroid
    is the one-hot e_c), pixel 63 (+1 for a copy, -1 otherwise) and pixels 61, 62 (per-sample
    values in [-1, -0.8], so no two samples are equal). ``calls`` counts the samples drawn.
    """
    calls = []

    def sample(target, n, *, seed, purpose="sample", num_steps, batch_size, device, progress=lambda *a: None,
               **unused):
        images = -torch.ones(n, 1, 8, 8)
        flat = images.view(n, -1)
        for j in range(n):
            generator = sample_generator(seed, purpose, j)
            c = int(torch.multinomial(shares, 1, generator=generator))
            flat[j, c] = 1.0
            flat[j, 63] = 1.0 if float(torch.rand(1, generator=generator)) < COPY_RATES[c] else -1.0
            flat[j, 61:63] = -1.0 + 0.2 * torch.rand(2, generator=generator)
        calls.append(n)
        progress("sampling", n * num_steps, n * num_steps)
        return images, None

    return sample, calls


def one_hot_condition(classes=4):
    """The surrogate's labelled images as the condition gives them, with one-hot kept centroids."""
    return SurrogateLabelledImages(images=-torch.ones(classes, 1, 8, 8), labels=torch.arange(classes),
                                   num_classes=classes, identity={"test": "one-hot"},
                                   centroids=torch.eye(64)[:classes])


def context(tmp_path, seed=0):
    return RunContext(device=torch.device("cpu"), seed=seed, cache_dir=tmp_path, features=PixelFeatures())


def copies(images):
    return images.view(len(images), -1)[:, 63] > 0


def test_its_copy_rate_is_the_mean_of_the_per_cluster_rates(tmp_path, monkeypatch):
    sample, calls = fake_sample(SHARES)
    monkeypatch.setattr(extractors, "ddim_sample", sample)
    n = 2000
    out = SideExact(SideExact.Settings(ddim_steps=3)).extract(None, one_hot_condition(), n, context(tmp_path))
    pool_calls = list(calls)
    labels = out.images.view(n, -1)[:, :4].argmax(1)
    assert torch.equal(labels, out.targets)  # every candidate is a sample of the cluster it was drawn for
    assert len({tuple(image.flatten().tolist()) for image in out.images}) == n  # no pool sample used twice
    # 22.5% by hand; binomial standard error sqrt(0.225 * 0.775 / 2000) = 0.93 points
    assert float(copies(out.images).float().mean()) == pytest.approx(0.225, abs=0.03)
    # the same model sampled plainly copies at 9%: the bound is above it because the rare cluster copies most
    plain, _ = sample(None, n, seed=0, purpose="check", num_steps=3, batch_size=256, device=None)
    assert float(copies(plain).float().mean()) == pytest.approx(0.09, abs=0.02)

    d = out.diagnostics
    assert d["cluster_candidates"] == torch.bincount(out.targets, minlength=4).tolist()
    assert sum(d["cluster_candidates"]) == n and sum(d["cluster_pool"]) == d["query_cost"] == sum(pool_calls)
    assert all(call == 256 for call in pool_calls)  # whole seeded streams
    # the rarest cluster (5%) needs about n / 4 = 500 samples: a pool of about 10,000
    assert d["pool_needed"] <= d["query_cost"] and 8000 < d["pool_needed"] < 12000
    assert d["query_cost"] <= 1.3 * d["pool_needed"]
    for c in range(4):
        assert d["cluster_pool"][c] >= d["cluster_candidates"][c]
    assert d["max_pool"] == 64 * n


def test_candidates_depend_on_seed_index_and_pool_seed_only(tmp_path, monkeypatch):
    sample, _ = fake_sample(SHARES)
    monkeypatch.setattr(extractors, "ddim_sample", sample)
    condition = one_hot_condition()

    def run(n, seed=0, **settings):
        return SideExact(SideExact.Settings(ddim_steps=3, **settings)).extract(None, condition, n,
                                                                               context(tmp_path, seed))

    small, large = run(300, batch_size=256), run(700, batch_size=7)
    # a larger N_G grows the pool further but leaves the first candidates as they were
    assert torch.equal(small.targets, large.targets[:300]) and torch.equal(small.images, large.images[:300])
    assert large.diagnostics["query_cost"] > small.diagnostics["query_cost"]
    # the pool seed moves the images, not the clusters drawn; the cell seed moves the clusters
    other_pool = run(300, pool_seed=5)
    assert torch.equal(other_pool.targets, small.targets) and not torch.equal(other_pool.images, small.images)
    assert run(300, pool_seed=0).images.equal(small.images)  # -1 is the cell's seed
    assert not torch.equal(run(300, seed=1).targets, small.targets)


def test_a_cluster_too_rare_for_the_cap_is_a_one_line_error(tmp_path, monkeypatch):
    sample, calls = fake_sample(torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64))
    monkeypatch.setattr(extractors, "ddim_sample", sample)
    with pytest.raises(BenchError, match=r"extractor 'side-exact': cluster [23] holds 0 of the 512 unguided samples "
                                         r"\(the cap, max_pool_factor 2 x N_G 200\).*2 clusters short.*max_pool_factor"):
        SideExact(SideExact.Settings(max_pool_factor=2)).extract(None, one_hot_condition(), 200, context(tmp_path))
    assert sum(calls) == 512  # it stopped at the cap: 2 x 200 in whole streams of 256
    with pytest.raises(BenchError, match="extractor 'side-exact' needs condition 'surrogate'"):
        SideExact(SideExact.Settings()).extract(None, None, 10, context(tmp_path))
    for bad in ({"max_pool_factor": 0.5}, {"pool_seed": -2}, {"class_draw": "often"}):
        with pytest.raises(BenchError, match=f"side-exact: {next(iter(bad))}"):
            SideExact.Settings(**bad).validate("side-exact")


def tiny_target():
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    return TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                       trained_with="none", image_shape=(1, 8, 8), identity={"test": "side-exact"})


def test_on_a_real_unet_and_surrogate_the_candidates_are_its_unguided_samples(tmp_path):
    target, ctx = tiny_target(), context(tmp_path)
    data = DataSplit(train=torch.rand(10, 1, 8, 8) * 2 - 1, train_labels=None, heldout=torch.rand(4, 1, 8, 8) * 2 - 1,
                     num_classes=0, identity={"test": "side-exact"})
    labelled = Surrogate(Surrogate.Settings(clusters=2, tau=-1.0, n_syn=40, ddim_steps=2)).attack_labels(target, data,
                                                                                                       ctx)
    assert labelled.centroids.shape == (2, 64)
    # the condition labels new images as it labelled its pool (and the training images)
    assert torch.equal(labelled.nearest_kept(labelled.images, ctx.features, ctx.device), labelled.labels)
    out = SideExact(SideExact.Settings(ddim_steps=2, batch_size=256)).extract(target, labelled, 12, ctx)
    assert torch.equal(labelled.nearest_kept(out.images, ctx.features, ctx.device), out.targets)
    # each candidate is a sample of the pool's first stream (12 candidates in 2 clusters fit in it)
    assert out.diagnostics["query_cost"] == 256
    pool, _ = ddim_sample(target, 256, seed=0, purpose="side-exact-pool/0", num_steps=2, batch_size=256,
                          device=ctx.device)
    matches = torch.cdist(out.images.flatten(1), pool.flatten(1)).argmin(1)
    assert torch.equal(out.images, pool[matches]) and len(set(matches.tolist())) == 12
    # another sampling batch size changes the samples by float rounding only
    again = SideExact(SideExact.Settings(ddim_steps=2, batch_size=100)).extract(target, labelled, 12, ctx)
    assert torch.equal(again.targets, out.targets) and torch.allclose(again.images, out.images, atol=1e-4)
