"""The sampling loop's ``compile`` setting: "graphs" (torch.compile keeping eager's own
kernels, CUDA graphs on CUDA) gives eager's images bit for bit, here on the CPU with a real
compile; "reduce-overhead" in bf16 (the whole UNet cast, inductor's fused kernels) gives eager
bf16's and fp32's images within bf16's tolerance, compiles once for a padded last batch and
follows its UNet's weights; the setting stays out of the config hash at its default."""

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from side_bench.errors import BenchError
from side_bench.hookspecs import TargetModel
from side_bench.registry import settings_dict
from side_bench.sampling.diffusion import compiled_unet, ddim_sample, train_denoiser
from side_bench_builtins.extractors import Sample

CPU = torch.device("cpu")


def test_graphs_sample_eager_s_images_bit_for_bit():
    torch.manual_seed(0)  # class-conditional, so the labels go through the compiled UNet too
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, num_class_embeds=3).eval()
    target = TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=3,
                         trained_with="informative", image_shape=(1, 8, 8), identity={})
    common = dict(seed=5, num_steps=3, batch_size=4, device=CPU)
    eager, eager_labels = ddim_sample(target, 4, **common)
    graphs, graphs_labels = ddim_sample(target, 4, compile="graphs", **common)
    assert torch.equal(graphs_labels, eager_labels)
    assert torch.equal(graphs, eager)  # identical, not close: the same kernels in the same order
    assert not torch.equal(eager[0], eager[1])  # (and the images are images, not a constant)
    # compiled once per UNet and mode: a second run reuses the compiled module
    assert compiled_unet(unet, "graphs") is compiled_unet(unet, "graphs")
    assert compiled_unet(unet, "none") is unet


def test_compile_stays_out_of_the_config_at_its_default_and_is_checked():
    default = settings_dict(Sample(Sample.Settings()))
    assert "compile" not in default  # existing cells keep their hashes
    graphs = settings_dict(Sample(Sample.Settings(compile="graphs")))
    assert graphs == {**default, "compile": "graphs"}
    with pytest.raises(BenchError, match=r"^attacks\[0\]: compile: expected one of none, graphs, reduce-overhead, "
                                         r"got 'fast'$"):
        Sample.Settings(compile="fast").validate("attacks[0]")


def test_the_cost_meter_counts_the_compiled_loop_as_the_eager_one():
    # the meter hooks the UNet's first layer (side_bench/cost.py): a compiled UNet must still
    # reach it, or a compiled run would read as cheaper than it was. 4 images x 3 steps = 12.
    from side_bench import cost

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()
    target = TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                         trained_with="none", image_shape=(1, 8, 8), identity={})
    for mode in ("none", "graphs"):
        with cost.metering((unet, "target")) as meter, meter.stage("extraction"):
            ddim_sample(target, 4, seed=1, num_steps=3, batch_size=4, device=CPU, compile=mode)
        assert [batch.counts for batch in meter.ledger] == [{"unet_forward": 12, "sampled_images": 4}], mode


@pytest.mark.slow  # one cold inductor compile
def test_a_metered_compiled_bf16_loop_counts_its_padded_batches_and_never_recompiles():
    # the meter's hooks are traced into the compiled graph: a count they changed there would be a
    # guard failing at every step (measured: recompiles until dynamo's limit, then eager). The
    # sampler counts the compiled call instead: 6 images in batches of 4, the last padded to 4
    # (the work is done), 3 steps: 12 + 12 forward evaluations for 4 + 2 images.
    from side_bench import cost

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       add_attention=False, down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
                       norm_num_groups=4).eval()
    target = TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                         trained_with="none", image_shape=(1, 8, 8), identity={})
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True), cost.metering((unet, "target")) as meter, \
            meter.stage("extraction"):
        ddim_sample(target, 6, seed=1, num_steps=3, batch_size=4, device=CPU, compile="reduce-overhead",
                    dtype=torch.bfloat16)
    assert [batch.counts for batch in meter.ledger] == [{"unet_forward": 12, "sampled_images": 4},
                                                        {"unet_forward": 12, "sampled_images": 2}]


# As tests/test_precision.py: bf16 moves the images of a (briefly) trained tiny UNet by 0.004
# on average and 0.025 at most over 10 DDIM steps; compiled bf16 against eager bf16 measured
# 0.005 and 0.042 (two bf16 roundings apart), against fp32 0.004 and 0.025.
TOLERANCE_MEAN, TOLERANCE_MAX = 0.02, 0.1


@pytest.mark.slow  # ~25 s on the shared 2-core CPU: one cold inductor compile (gcc); seconds with its cache warm
def test_compiled_bf16_sampling_matches_eager_within_bf16_tolerance(monkeypatch):
    torch.manual_seed(0)  # one level, no attention: the smallest UNet with every kind of kernel, the fastest compile
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       add_attention=False, down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
                       norm_num_groups=4, num_class_embeds=3)
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    unet = train_denoiser(unet, DDPMScheduler(num_train_timesteps=1000), images, torch.arange(32) % 3, steps=20,
                          batch_size=16, learning_rate=3e-3, ema_decay=0.0, seed=0, device=CPU,
                          progress=lambda *a: None).eval()  # untrained, DDIM would amplify any difference
    target = TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=3,
                         trained_with="informative", image_shape=(1, 8, 8), identity={})
    common = dict(seed=3, num_steps=10, batch_size=4, device=CPU)  # 6 images: a full batch and a padded one
    fp32, labels = ddim_sample(target, 6, **common)
    bf16, _ = ddim_sample(target, 6, dtype=torch.bfloat16, **common)
    torch._dynamo.reset()  # forget other tests' compiles of UNet2DModel.forward: each would count as a recompile
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)  # the padded batch compiles nothing new
    compiled, compiled_labels = ddim_sample(target, 6, dtype=torch.bfloat16, compile="reduce-overhead", **common)
    assert torch.equal(compiled_labels, labels) and compiled.dtype == torch.float32
    assert not torch.equal(compiled, bf16)  # inductor's own kernels, not eager's
    for reference in (bf16, fp32):
        difference = (compiled - reference).abs()
        assert float(difference.mean()) < TOLERANCE_MEAN and float(difference.max()) < TOLERANCE_MAX, \
            (float(difference.mean()), float(difference.max()))
    # the target's UNet is untouched (a cast copy was compiled): fp32 eager is still the reference, bit for bit
    assert all(p.dtype == torch.float32 for p in unet.parameters())
    assert torch.equal(ddim_sample(target, 6, **common)[0], fp32)
    # weights changed in place: the compiled copy follows them (copied over, not compiled again)
    with torch.no_grad():
        unet.conv_out.bias.add_(0.5)
    moved, _ = ddim_sample(target, 6, dtype=torch.bfloat16, compile="reduce-overhead", **common)
    moved_eager, _ = ddim_sample(target, 6, dtype=torch.bfloat16, **common)
    assert float((moved - compiled).abs().mean()) > 5 * TOLERANCE_MEAN  # measured 0.17
    assert float((moved - moved_eager).abs().mean()) < TOLERANCE_MEAN
