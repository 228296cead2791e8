"""The diffusers model: local checkpoints in the flat and the pipeline layout, loaded offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from side_bench import BenchError
from side_bench.cli import main
from side_bench.hookspecs import DataSplit, Labels, RunContext
from side_bench.sampling.diffusion import ddim_sample
from side_bench_builtins.diffusers_model import DiffusersModel
from side_bench_builtins.features import PixelFeatures

# google/ddpm-cifar10-32's UNet2DModel config, written out by hand (weights here are random).
CIFAR10_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
)
# its scheduler_config.json
CIFAR10_SCHEDULER = {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
                     "beta_schedule": "linear", "num_train_timesteps": 1000, "clip_sample": True,
                     "variance_type": "fixed_large", "trained_betas": None}
NARROW = {**CIFAR10_UNET, "block_out_channels": (32, 32, 32, 32)}  # same architecture, fast


class NotATensor:
    """Something a weights-only unpickler must refuse."""


@pytest.fixture(scope="module")
def cifar_unet():
    torch.manual_seed(0)
    return UNet2DModel(**CIFAR10_UNET)


def flat_folder(path, unet, safe=True):
    unet.save_pretrained(path, safe_serialization=safe)
    (path / "scheduler_config.json").write_text(json.dumps(CIFAR10_SCHEDULER))
    return path


def model(path, **settings) -> DiffusersModel:
    return DiffusersModel(DiffusersModel.Settings(path=str(path), **settings))


def data(shape=(3, 32, 32), n=4) -> DataSplit:
    return DataSplit(train=torch.zeros(n, *shape), train_labels=None, heldout=torch.zeros(2, *shape),
                     num_classes=0, identity={"dataset": "test"})


def ctx(tmp_path) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, cache_dir=tmp_path, features=PixelFeatures())


def test_real_architecture_in_both_layouts(cifar_unet, tmp_path):
    assert 35.6e6 < sum(p.numel() for p in cifar_unet.parameters()) < 35.8e6  # 35.7M, as the hub model
    flat = model(flat_folder(tmp_path / "flat", cifar_unet))
    DDPMPipeline(unet=cifar_unet, scheduler=DDPMScheduler.from_config(CIFAR10_SCHEDULER)).save_pretrained(
        tmp_path / "pipeline")
    pipeline = model(tmp_path / "pipeline")
    assert (flat.layout, pipeline.layout) == ("flat", "pipeline")
    assert flat.weights.name == "diffusion_pytorch_model.safetensors"
    samples = []
    for loaded in (flat, pipeline):
        target = loaded.prepare(data(), None, "key", ctx(tmp_path))
        assert target.num_classes == 0 and target.trained_with == "none" and target.image_shape == (3, 32, 32)
        assert target.scheduler_config["num_train_timesteps"] == 1000
        assert len(target.identity["weights_sha256"]) == 64
        assert torch.equal(target.unet.conv_in.weight, cifar_unet.conv_in.weight)
        images, labels = ddim_sample(target, 2, seed=0, num_steps=2, batch_size=2, device=torch.device("cpu"))
        assert images.shape == (2, 3, 32, 32) and labels is None and torch.isfinite(images).all()
        samples.append(images)
    assert torch.equal(samples[0], samples[1])
    declared = flat.declared_target()
    if declared is not None:  # hookspecs.TargetDeclaration, where the core has it
        assert (declared.trained_with, declared.num_classes) == ("none", 0)


def test_bin_weights_only(tmp_path):
    torch.manual_seed(1)
    unet = UNet2DModel(**NARROW)
    folder = flat_folder(tmp_path / "bin", unet, safe=False)
    loaded = model(folder)
    assert loaded.weights.name == "diffusion_pytorch_model.bin"
    assert torch.equal(loaded.prepare(data(), None, "k", ctx(tmp_path)).unet.conv_in.weight, unet.conv_in.weight)
    torch.save({"conv_in.weight": NotATensor()}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(BenchError, match="not loadable with weights_only=True"):
        loaded.prepare(data(), None, "k", ctx(tmp_path))


def test_conditional_checkpoint_and_refusals(tmp_path):
    torch.manual_seed(2)
    folder = flat_folder(tmp_path / "cond", UNet2DModel(**NARROW, num_class_embeds=3))
    conditional = model(folder, trained_with="random")
    labels = Labels(labels=torch.tensor([0, 1, 2, 0]), num_classes=3, kind="random")
    target = conditional.prepare(data(), labels, "k", ctx(tmp_path))
    assert (target.num_classes, target.trained_with) == (3, "random")
    images, drawn = ddim_sample(target, 2, seed=0, num_steps=2, batch_size=2, device=torch.device("cpu"))
    assert images.shape == (2, 3, 32, 32) and drawn.tolist() != [] and drawn.max() < 3
    with pytest.raises(BenchError, match="the model has 3 classes, the condition's random labels 4"):
        conditional.prepare(data(), Labels(torch.tensor([3, 0, 1, 2]), 4, "random"), "k", ctx(tmp_path))
    with pytest.raises(BenchError, match="trained with random labels .* gives informative labels"):
        conditional.prepare(data(), Labels(labels.labels, 3, "informative"), "k", ctx(tmp_path))
    with pytest.raises(BenchError, match=r"makes images of shape \(3, 32, 32\), .* gives \(3, 16, 16\)"):
        conditional.prepare(data((3, 16, 16)), labels, "k", ctx(tmp_path))
    unconditional = model(flat_folder(tmp_path / "uncond", UNet2DModel(**NARROW)))
    with pytest.raises(BenchError, match="the model is unconditional .* gives random training labels"):
        unconditional.prepare(data(), labels, "k", ctx(tmp_path))


def test_bad_folders_are_named(tmp_path):
    folder = flat_folder(tmp_path / "m", UNet2DModel(**NARROW))
    (folder / "scheduler_config.json").unlink()
    with pytest.raises(BenchError, match=r"m/scheduler_config.json: file not found"):
        model(folder)
    (folder / "scheduler_config.json").write_text("{not json")
    with pytest.raises(BenchError, match="scheduler_config.json: not readable JSON"):
        model(folder)
    (folder / "scheduler_config.json").write_text(json.dumps(CIFAR10_SCHEDULER))
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(BenchError, match="no weights"):
        model(folder)
    with pytest.raises(BenchError, match="not a diffusers model folder"):
        model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class_embed_type": "timestep"}))
    with pytest.raises(BenchError, match="class_embed_type 'timestep'"):
        model(folder)


SUITE = """
name = "loaded"
scales = [6]
n_generations = 3
metrics = ["ams", "p95"]

[dataset]
name = "image-folder"
image_size = 32
heldout = 2

[model]
name = "diffusers"
path = "{path}"

[[attacks]]
name = "uncond"
condition = "none"
extractor = "sample"
extractor_settings = {{ ddim_steps = 2, batch_size = 3 }}
"""


def test_run_a_suite_on_a_loaded_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDE_BENCH_DATA_ROOT", "")
    torch.manual_seed(3)
    folder = flat_folder(tmp_path / "model", UNet2DModel(**NARROW))
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    suite = tmp_path / "loaded.toml"
    suite.write_text(SUITE.format(path=folder))
    args = ["run", "--suite", str(suite), "--data-root", str(images), "--results", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in next((tmp_path / "results" / "loaded").iterdir()).joinpath(
        "rows.jsonl").read_text().splitlines()]
    assert {row["metric"] for row in rows} == {"ams", "p95"} and all(row["n_generations"] == 3 for row in rows)
    assert not (tmp_path / "cache" / "models").exists()  # a loaded model is not copied into the cache
