"""Fine-tuned targets and FineXtract: w = 1 is plain sampling of the fine-tuned model and w = 0 of
the base, bit for bit; the base is trained on images outside the scales and the held-out set, once
per seed (its key names no scale), and the fine-tuned model's cache key includes the base's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from side_bench.hookspecs import RunContext, TargetModel
from side_bench.plugin_api import BenchError
from side_bench.registry import load_registry
from side_bench_builtins.models import finetuned_key


def tiny_unet(seed: int) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8).eval()


def ctx(tmp_path=Path(".")) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=3, cache_dir=Path(tmp_path), features=None)


def target(unet, base=None) -> TargetModel:
    return TargetModel(unet=unet, scheduler_config=dict(DDPMScheduler(num_train_timesteps=1000).config),
                       num_classes=0, trained_with="none", image_shape=(1, 8, 8), identity={}, base_unet=base)


def extract(name: str, settings: dict, model: TargetModel, n: int = 5) -> torch.Tensor:
    found = load_registry().build("extractors", name, settings).extract(model, None, n, ctx())
    return found if isinstance(found, torch.Tensor) else found.images


def test_w1_is_plain_sampling_of_the_finetuned_model_and_w0_of_the_base():
    finetuned, base = tiny_unet(1), tiny_unet(2)
    common = {"ddim_steps": 4, "batch_size": 2}
    plain_ft = extract("sample", common, target(finetuned))
    plain_base = extract("sample", common, target(base))
    assert torch.equal(extract("finextract", {**common, "guidance_scale": 1.0}, target(finetuned, base)), plain_ft)
    assert torch.equal(extract("finextract", {**common, "guidance_scale": 0.0}, target(finetuned, base)), plain_base)
    guided = extract("finextract", {**common, "guidance_scale": 3.0}, target(finetuned, base))
    assert not torch.equal(guided, plain_ft) and guided.abs().max() <= 1
    # candidate i depends on (seed, i) only, not on the batch size (up to the kernels' rounding)
    torch.testing.assert_close(extract("finextract", {**common, "batch_size": 5, "guidance_scale": 3.0},
                                       target(finetuned, base)), guided, atol=1e-4, rtol=0)


def test_finextract_needs_a_base_model():
    with pytest.raises(BenchError, match="finextract.*no base model"):
        extract("finextract", {"ddim_steps": 2}, target(tiny_unet(1)))


def test_every_builtin_extractor_declares_its_threat_model():
    registry = load_registry()
    declared = {name: getattr(registry.get("extractors", name).component, "threat_model", None)
                for name in ("sample", "classifier-guidance", "side", "side-exact", "finextract")}
    assert declared == {"sample": "black-box", "classifier-guidance": "white-box", "side": "white-box",
                        "side-exact": "black-box", "finextract": "white-box + base model"}


TINY = {"block_out_channels": [8, 16], "steps": 2, "batch_size": 8}


def prepare(tmp_path, scale: int, finetune: dict, key: str = "runner-key"):
    registry = load_registry()
    data = registry.build("datasets", "digits", {"heldout": 600}).load(scale, 3)
    model = registry.build("models", "bench-unet", {**TINY, "finetune": finetune})
    return data, model.prepare(data, None, key, ctx(tmp_path))


def test_the_finetuned_targets_key_includes_its_base_and_the_base_is_shared_across_scales(tmp_path):
    data, fine = prepare(tmp_path, 16, {"base_images": 1000, "base_steps": 2, "steps": 2})
    assert fine.base_unet is not None and fine.unet is not fine.base_unet
    base_key = fine.identity["base_key"]
    assert fine.identity["cache_key"] == finetuned_key("runner-key", base_key)
    assert (tmp_path / "models" / base_key).is_dir() and (tmp_path / "models" / fine.identity["cache_key"]).is_dir()
    # another scale: another fine-tuned model, the same base (its key names no scale)
    _, other = prepare(tmp_path, 32, {"base_images": 1000, "base_steps": 2, "steps": 2}, key="runner-key-32")
    assert other.identity["base_key"] == base_key and other.identity["cache_key"] != fine.identity["cache_key"]
    # another base: the same runner key gives another fine-tuned model
    _, rebased = prepare(tmp_path, 16, {"base_images": 1000, "base_steps": 3, "steps": 2})
    assert rebased.identity["base_key"] != base_key
    assert rebased.identity["cache_key"] == finetuned_key("runner-key", rebased.identity["base_key"])
    assert rebased.identity["cache_key"] != fine.identity["cache_key"]
    # cached: a second prepare loads both, bit for bit
    _, again = prepare(tmp_path, 16, {"base_images": 1000, "base_steps": 2, "steps": 2})
    for a, b in zip(again.unet.parameters(), fine.unet.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_reserve_is_outside_every_scale_and_the_heldout_set():
    digits = load_registry().build("datasets", "digits", {"heldout": 600})
    largest = digits.load(digits.total - 600 - 1000, 3)
    reserve = largest.reserve(1000)
    assert len(reserve.train) == 1000 and "scale" not in reserve.identity
    flat = {tuple(x.flatten().tolist()) for x in reserve.train}
    others = {tuple(x.flatten().tolist()) for x in torch.cat([largest.train, largest.heldout])}
    # digits holds a few bit-identical images; the indices are disjoint, so allow only those
    assert len(flat & others) <= 5
    assert torch.equal(digits.load(16, 3).reserve(1000).train, reserve.train)  # the same for every scale
    with pytest.raises(BenchError, match="reserve of 1000 images leaves 197"):
        digits.load(200, 3).reserve(1000)


def test_finetune_settings_are_checked():
    registry = load_registry()
    with pytest.raises(BenchError, match="finetune: unknown key 'base'"):
        registry.build("models", "bench-unet", {"finetune": {"base": 3}}, "s.toml: [model]")
    with pytest.raises(BenchError, match=r"finetune.steps: expected a positive int"):
        registry.build("models", "bench-unet", {"finetune": {"steps": 0}}, "s.toml: [model]")
    plan = registry.build("models", "bench-unet", {"steps": 7, "finetune": {"base_steps": 9}}).settings.finetune_plan()
    assert plan == {"base_images": 1000, "base_steps": 9, "steps": 7, "learning_rate": 1e-3}
    assert dataclasses.asdict(registry.build("models", "bench-unet", {}).settings)["finetune"] == {}
