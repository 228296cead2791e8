"""The cost of a suite before its data exists: celeba-scales' dry run without a data root, its
declared CelebA sizes, and the time estimate from benchmarks/throughput.json."""

import os

import pytest
from click.testing import CliRunner

from side_bench.cli import main
from side_bench.errors import BenchError
from side_bench.run.dryrun import PlannedCell, estimate, load_throughput, planning, throughput_file, unet_rate


def test_celeba_scales_dry_run_without_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("SIDE_BENCH_DATA_ROOT", raising=False)
    result = CliRunner().invoke(main, ["run", "--suite", "celeba-scales", "--dry-run", "--results", str(tmp_path / "r")])
    if result.exit_code == 2 and ("unknown condition" in result.stderr or "unknown extractor" in result.stderr):
        pytest.skip(f"attack plugins not available yet: {result.stderr.strip()}")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    # 4 scales x 5 attacks; by hand: 3 models per scale (none, informative, random labels), each
    # 100,000 steps x batch 64 = 6.4M image-steps, so 12 trainings and 76.8M image-steps
    assert "to run: 20 of 20 cells; training 76,800,000 image-steps (12 model trainings)" in text
    # k-NN of the full scale: 182,637 x 12,288 float32 = 8.4 GiB
    assert "182,637 x 12,288 in float32, is 8.4 GiB" in text
    assert "GPU-hours on one NVIDIA H200" in text and "years on this project's 2-core CPU" in text
    assert "no data root: the published sizes of dataset 'celeba' were used" in text
    assert not (tmp_path / "r").exists() and "SIDE_BENCH_PLAN_ONLY" not in os.environ
    # a real run still needs the data
    real = CliRunner().invoke(main, ["run", "--suite", "celeba-scales", "--results", str(tmp_path / "r")])
    assert real.exit_code == 2 and "no data root" in real.stderr
    assert not (tmp_path / "r").exists()


def test_declared_celeba_sizes(monkeypatch):
    from side_bench_builtins.image_datasets import CelebA

    monkeypatch.delenv("SIDE_BENCH_DATA_ROOT", raising=False)
    with pytest.raises(BenchError, match="no data root"):
        CelebA(CelebA.Settings())
    with planning():
        assert CelebA(CelebA.Settings()).max_scale == 162_770 + 19_867  # train + valid
        assert CelebA(CelebA.Settings(train_partitions=[0, 1, 2], heldout_partition=-1, heldout=99)).max_scale \
            == 202_599 - 99
        assert CelebA(CelebA.Settings(top_identities=10)).max_scale is None  # unknown without the files
        with pytest.raises(BenchError, match="20000 images asked, partition 2 of CelebA holds 19962"):
            CelebA(CelebA.Settings(heldout=20_000))
        declared = CelebA(CelebA.Settings())
    with pytest.raises(BenchError, match="no data root"):
        declared.load(10, 0)


def test_estimate_by_hand():
    constants = {"devices": {"cpu": {"label": "a CPU", "matmul_gflops": {"value": 100.0},
                                     "image_steps_per_second": {"8": {"value": 1000.0, "measured": True}}}}}

    class Suite:  # what estimate reads of a suite
        dataset = type("D", (), {"settings": {"image_size": 16}, "name": "digits"})()
        features = type("F", (), {"name": "embedding"})()

    assert unet_rate(constants, "cpu", 8) == (1000.0, "measured")
    assert unet_rate(constants, "cpu", 16) == (250.0, "scaled by pixels from 8 px")
    cells = [PlannedCell(16, "a", 0, "h1", False, 1000, "train", 500, 2000, knn_pairs=10**6),
             PlannedCell(16, "b", 0, "h2", True, 1000, "train", 0, 2000, knn_pairs=10**6)]  # done: not counted
    found = estimate(Suite, cells, "cpu", constants=constants)
    # by hand: (3 x 1000 + 500 + 2000) evals / 250 per s = 22 s; 2 x 1e6 x 512 FLOP / 100 GFLOP/s = 0.01024 s
    assert found["seconds"] == pytest.approx(22.01024)


def test_the_shipped_constants_have_dates_and_sources():
    assert throughput_file() is not None
    for kind, device in load_throughput()["devices"].items():
        for size, entry in device["image_steps_per_second"].items():
            assert entry["date"] and entry["source"] and "measured" in entry, (kind, size)


def test_extractors_count_their_own_cost(tmp_path):
    """planned_cost: what each built-in extractor runs, counted by hand (N_G 100, 10 DDIM steps,
    timesteps 0, 100, ..., 900): the dry run's UNet evaluations and classifier passes."""
    from side_bench.run.dryrun import plan

    suite = tmp_path / "costs.toml"
    surrogate = 'condition = "surrogate"\ncondition_settings = { clusters = 2, tau = 0.5, n_syn = 20 }'
    trained = "classifier_steps = 10, classifier_batch_size = 8"
    suite.write_text(f"""
name = "costs"
scales = [32]
n_generations = 100
metrics = ["gu-ratio"]
[dataset]
name = "digits"
image_size = 8
[model]
name = "bench-unet"
steps = 10
batch_size = 8
[[attacks]]
name = "plain"
condition = "none"
extractor = "sample"
extractor_settings = {{ ddim_steps = 10 }}
[[attacks]]
name = "side-window"
{surrogate}
extractor = "side"
extractor_settings = {{ ddim_steps = 10, guidance_scale = 1.0, guidance_t_min = 500, {trained} }}
[[attacks]]
name = "side-pgd"
{surrogate}
extractor = "side"
extractor_settings = {{ ddim_steps = 10, guidance_scale = 1.0, {trained}, classifier_adversarial_eps = 0.1 }}
[[attacks]]
name = "side-x0hat"
{surrogate}
extractor = "side"
extractor_settings = {{ ddim_steps = 10, guidance_scale = 1.0, {trained}, classifier_input = "x0_hat" }}
[[attacks]]
name = "side-kernel"
{surrogate}
extractor = "side"
extractor_settings = {{ ddim_steps = 10, guidance_scale = 1.0, classifier = "kernel" }}
[[attacks]]
name = "side-off"
{surrogate}
extractor = "side"
extractor_settings = {{ ddim_steps = 10, guidance_scale = 0.0, {trained} }}
[[attacks]]
name = "side-exact"
{surrogate}
extractor = "side-exact"
extractor_settings = {{ ddim_steps = 10 }}
""")
    _, cells, _ = plan(str(suite), results_dir=tmp_path / "r")
    by_name = {cell.attack: cell for cell in cells}
    pool = 20 * 50  # the surrogate's pool (n_syn x its 50 DDIM steps), counted with the first cell that needs it
    assert by_name["plain"].unet_evals == 100 * 10 and by_name["plain"].classifier_images == 0
    # 5 of the 10 steps (500-900) guided at 1.6 unguided steps each
    assert by_name["side-window"].unet_evals == 100 * (5 + 5 * 1.6) + pool
    assert by_name["side-window"].classifier_images == 10 * 8
    # PGD's 3 steps: 1 + 3 x 0.46 plain steps per training step; guidance on x_t at every step
    assert by_name["side-pgd"].unet_evals == 100 * 10 * 1.6
    assert by_name["side-pgd"].classifier_images == int(10 * 8 * (1 + 3 * 0.46))
    assert by_name["side-x0hat"].unet_evals == 100 * 10 * 3.5
    assert by_name["side-x0hat"].classifier_images == int(10 * 8 * 1.83)
    assert (by_name["side-kernel"].unet_evals, by_name["side-kernel"].classifier_images) == (100 * 10, 0)
    assert (by_name["side-off"].unet_evals, by_name["side-off"].classifier_images) == (100 * 10, 0)
    assert by_name["side-exact"].unet_evals == 100 * 4 * 10  # the rejection pool: 4 per candidate
