"""Precision: bf16 sampling of a tiny UNet stays within a stated tolerance of fp32; training
takes a precision (fp32 unchanged bit for bit); the CUDA-only paths (fused AdamW, foreach EMA)
are skipped cleanly on CPU."""

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from side_bench.errors import BenchError
from side_bench.hookspecs import TargetModel
from side_bench.sampling.diffusion import EMA, adamw, autocast_dtype, ddim_sample, train_denoiser

CPU = torch.device("cpu")
# bf16 keeps 8 bits of mantissa: one forward of the tiny UNet moves its noise prediction by
# ~1.2% (relative norm). Over 10 DDIM steps of a UNet trained 20 steps on 32 images the samples
# (in [-1, 1]) moved by 0.004 on average and 0.027 at most (measured); the tolerance leaves 5x
# and 4x. (An untrained UNet is no denoiser: DDIM amplifies its errors, up to 0.96.)
TOLERANCE_MEAN, TOLERANCE_MAX = 0.02, 0.1


def tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()


def target(unet):
    return TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                       trained_with="none", image_shape=(1, 8, 8), identity={})


def test_bf16_sampling_stays_within_tolerance_of_fp32():
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    unet = train_denoiser(tiny_unet(), DDPMScheduler(num_train_timesteps=1000), images, None, steps=20,
                          batch_size=16, learning_rate=3e-3, ema_decay=0.0, seed=0, device=CPU,
                          progress=lambda *a: None)
    model = target(unet.eval())
    common = dict(seed=3, num_steps=10, batch_size=16, device=CPU)
    fp32, _ = ddim_sample(model, 16, **common)
    bf16, _ = ddim_sample(model, 16, dtype=torch.bfloat16, **common)
    difference = (fp32 - bf16).abs()
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # it did run in bf16
    assert float(difference.mean()) < TOLERANCE_MEAN and float(difference.max()) < TOLERANCE_MAX, \
        (float(difference.mean()), float(difference.max()))


def test_training_precision():
    images = torch.rand(32, 1, 8, 8) * 2 - 1
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    common = dict(steps=6, batch_size=8, learning_rate=1e-3, ema_decay=0.9, seed=0, device=CPU,
                  progress=lambda *a: None)
    default = train_denoiser(tiny_unet(), scheduler, images, None, **common)
    fp32 = train_denoiser(tiny_unet(), scheduler, images, None, precision="fp32", **common)
    bf16 = train_denoiser(tiny_unet(), scheduler, images, None, precision="bf16", **common)
    pairs = list(zip(default.parameters(), fp32.parameters(), bf16.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b, _ in pairs)  # the default is fp32, unchanged
    assert all(c.dtype == torch.float32 for _, _, c in pairs)  # bf16 autocast keeps fp32 weights
    assert any(not torch.equal(b, c) for _, b, c in pairs)
    # six small steps from the same start: the bf16 weights stay near the fp32 ones
    assert max(float((b - c).abs().max()) for _, b, c in pairs) < 0.05
    with pytest.raises(BenchError, match="training precision: expected one of fp32, bf16, fp16, got 'fp64'"):
        train_denoiser(tiny_unet(), scheduler, images, None, precision="fp64", **common)
    assert autocast_dtype("bf16") is torch.bfloat16


def test_cpu_keeps_the_unfused_optimizer_and_the_ema_loop():
    unet = tiny_unet()
    assert not adamw(unet.parameters(), 1e-3, CPU).defaults.get("fused")
    ema = EMA(unet, 0.5)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(1.0)
    ema.update(unet)  # decay min(0.5, 2/11): each average moves 9/11 of the way
    for average, current in zip(ema.model.parameters(), unet.parameters(), strict=True):
        torch.testing.assert_close(average, current - 2 / 11, rtol=0, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only path: fused AdamW and the foreach EMA")
def test_cuda_uses_fused_adamw_and_foreach_ema():  # pragma: no cover - never runs in CI
    cuda = torch.device("cuda")
    unet = tiny_unet().to(cuda)
    assert adamw(unet.parameters(), 1e-3, cuda).defaults["fused"] is True
    ema = EMA(unet, 0.5)
    reference = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(1.0)
    ema.update(unet)
    for average, before, current in zip(ema.model.parameters(), reference, unet.parameters(), strict=True):
        torch.testing.assert_close(average, torch.lerp(before, current, 9 / 11))
