"""The sampling loop's ``compile`` setting: "graphs" (torch.compile keeping eager's own
kernels, CUDA graphs on CUDA) gives eager's images bit for bit, here on the CPU with a real
compile; the setting stays out of the config hash at its default."""

import pytest
import torch
from diffusers import UNet2DModel

from side_bench.errors import BenchError
from side_bench.hookspecs import TargetModel
from side_bench.registry import settings_dict
from side_bench.sampling.diffusion import compiled_unet, ddim_sample
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
