"""UNet throughput on one device, as benchmarks/gpu/run.sh writes it into throughput.json:
training and DDIM sampling image-steps per second of the quickstart UNet (8 px) and
celeba-scales' UNet (64 and 128 px), in fp32, bf16 and compiled, each with its fraction of
the device's own matmul peak in that precision.

    python benchmarks/gpu/unet_throughput.py --device cuda --out FILE [--deadline SECONDS]
    python benchmarks/gpu/unet_throughput.py --device cpu --tiny --out FILE     # toy sizes (CI)

Untrained weights: throughput does not depend on them. The items run in order of importance
(eager before compiled, 64 px before 128) and each is skipped when it would not end before
``--deadline`` (seconds from the start); FILE is rewritten after every item, so a run stopped
from outside keeps what finished. On the 8 px UNet the "graphs" mode (CUDA graphs of eager's
kernels, the launch-bound case) is checked to give eager's images bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: sampling_throughput

# BenchUNet settings per UNet (full, tiny) and the image channels
QUICKSTART = dict(block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8)  # quickstart.toml's
CELEBA = dict(block_out_channels=[128, 256, 256, 256], layers_per_block=2, attention=True, norm_num_groups=32)
UNETS = {"quickstart": (QUICKSTART, dict(block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4), 1),
         "celeba-64": (CELEBA, dict(block_out_channels=[8, 16], layers_per_block=1, attention=True, norm_num_groups=4), 3)}
UNETS["celeba-128"] = UNETS["celeba-64"]
# (image size, sampling batch, DDIM steps timed, training batch, training steps timed)
FULL_SIZES = {"quickstart": (8, 256, 50, 64, 50), "celeba-64": (64, 128, 10, 64, 10),
              "celeba-128": (128, 32, 10, 64, 5)}
TINY_SIZES = {"quickstart": (8, 16, 4, 8, 3), "celeba-64": (16, 4, 2, 4, 2), "celeba-128": (32, 2, 2, 2, 2)}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """The device's dense matmul TFLOP/s in ``dtype`` (square ``size``, the best of 5 after a warm-up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e12


def unet_for(name: str, tiny: bool):
    """(TargetModel, a builder of a fresh copy of its UNet, GFLOP per image-step at batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    from side_bench.hookspecs import TargetModel
    from side_bench_builtins.models import BenchUNet

    full, toy, channels = UNETS[name]
    size = (TINY_SIZES if tiny else FULL_SIZES)[name][0]
    shape = (channels, size, size)

    def build():
        torch.manual_seed(0)
        return BenchUNet(BenchUNet.Settings(**(toy if tiny else full))).build_unet(shape, 0).eval()

    if name == "quickstart" and not tiny:
        from sampling_throughput import target as quickstart_target  # the same bench-unet [32, 64] at 1x8x8

        target = quickstart_target()
    else:
        target = TargetModel(unet=build(), scheduler_config={"num_train_timesteps": 1000}, num_classes=0,
                             trained_with="none", image_shape=shape, identity={})
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        target.unet(torch.zeros(1, *shape), torch.tensor([500]))
    return target, build, counter.get_total_flops() / 1e9


def time_sampling(target, device, batch: int, steps: int, precision: str, compile: str, seconds: float):
    """(image-steps per second, the images of one timed call) of ddim_sample at ``batch``."""
    from side_bench.sampling.diffusion import ddim_sample

    options = dict(seed=0, batch_size=batch, device=device, dtype=PRECISIONS[precision], compile=compile)
    ddim_sample(target, batch, num_steps=3, **options)  # warm-up: compiles, records the CUDA graphs
    calls, start = 0, time.perf_counter()
    while True:
        images, _ = ddim_sample(target, batch, num_steps=steps, **options)
        synchronize(device)
        calls += 1
        if time.perf_counter() - start >= seconds:
            break
    return calls * batch * steps / (time.perf_counter() - start), images


def time_training(build, shape, device, batch: int, steps: int, precision: str, compile: str,
                  seconds: float) -> float:
    """Training image-steps per second of a fresh UNet from ``build()``: ``train_denoiser``
    (AdamW, EMA) for eager; for "reduce-overhead" the same objective through torch.compile'd
    forward and backward (train_denoiser has no compile option yet: an upper bound on what it
    would gain)."""
    from diffusers import DDPMScheduler

    from side_bench.sampling.diffusion import adamw, train_denoiser

    images = torch.rand(max(4 * batch, 64), *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    unet = build().to(device).train()
    if compile == "none":
        common = dict(batch_size=batch, learning_rate=1e-4, ema_decay=0.9999, seed=0, device=device,
                      progress=lambda *a: None, precision=precision)
        train_denoiser(unet, scheduler, images, None, steps=2, **common)  # warm-up (cuDNN's choices)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or not done:
            train_denoiser(unet, scheduler, images, None, steps=steps, **common)
            synchronize(device)
            done += steps
        return done * batch / (time.perf_counter() - start)
    compiled = torch.compile(unet, mode=compile)
    optimizer = adamw(unet.parameters(), 1e-4, device)
    dtype = PRECISIONS[precision]
    clean = images[:batch].to(device)

    def step():
        noise = torch.randn_like(clean)
        t = torch.randint(1000, (batch,), device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            predicted = compiled(scheduler.add_noise(clean, noise, t), t).sample
        loss = torch.nn.functional.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: compiles forward and backward
        step()
    synchronize(device)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or not done:
        for _ in range(steps):
            step()
        synchronize(device)
        done += steps
    return done * batch / (time.perf_counter() - start)


def plan(device: torch.device, tiny: bool) -> list[tuple]:
    """(what, UNet, precision, compile) in order of importance. "reduce-overhead" compiles with
    inductor (tens of seconds a shape on a GPU, minutes on a CPU), so --tiny keeps "graphs" only."""
    items = [("sample", "quickstart", "fp32", "none"), ("sample", "quickstart", "fp32", "graphs"),
             ("train", "quickstart", "fp32", "none")]
    for name in ("celeba-64", "celeba-128"):
        items += [("sample", name, "fp32", "none"), ("sample", name, "bf16", "none"),
                  ("train", name, "fp32", "none"), ("train", name, "bf16", "none")]
    if not tiny:
        items += [("sample", "quickstart", "bf16", "none"), ("sample", "quickstart", "fp32", "reduce-overhead"),
                  ("sample", "celeba-64", "bf16", "reduce-overhead"), ("sample", "celeba-128", "bf16", "reduce-overhead"),
                  ("train", "celeba-64", "bf16", "reduce-overhead")]
    return items


# What an item is expected to take beyond its timed seconds, for the deadline (compiling the
# celeba UNet with inductor: about a minute a shape on a GPU, forward and backward two)
EXTRA_SECONDS = {"none": 10.0, "graphs": 20.0, "reduce-overhead": 90.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=200.0, help="seconds from the start; later items are skipped")
    parser.add_argument("--tiny", action="store_true", help="toy sizes and short timings (the CPU dry mode)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    from side_bench.errors import use_deterministic_kernels

    use_deterministic_kernels(device)  # as a run does: the same kernels a cell would use
    seconds = 0.2 if args.tiny else 2.0
    size = 256 if args.tiny else 8192
    found = {"device": args.device, "tiny": args.tiny,
             "peak_tflops": {p: matmul_tflops(device, d, size) for p, d in PRECISIONS.items()},
             "items": [], "skipped": []}
    out = Path(args.out)
    targets, eager_images = {}, {}
    for what, name, precision, compile in plan(device, args.tiny):
        elapsed = time.perf_counter() - started
        if elapsed + seconds + EXTRA_SECONDS[compile] > args.deadline:
            found["skipped"].append(f"{what} {name} {precision} {compile}: would pass the deadline "
                                    f"({elapsed:.0f} of {args.deadline:.0f} s used)")
            continue
        if name not in targets:
            targets[name] = unet_for(name, args.tiny)
        target, build, gflop = targets[name]
        size_px, sample_batch, sample_steps, train_batch, train_steps = (TINY_SIZES if args.tiny else FULL_SIZES)[name]
        item = {"what": what, "unet": name, "size": size_px, "precision": precision, "compile": compile,
                "gflop_per_image_step": round(gflop, 4)}
        begun = time.perf_counter()
        try:
            if what == "sample":
                rate, images = time_sampling(target, device, sample_batch, sample_steps, precision, compile, seconds)
                item.update(batch=sample_batch, ddim_steps=sample_steps)
                key = (name, precision)
                if compile == "none":
                    eager_images[key] = images
                elif key in eager_images:  # the same seed and batch: the same noise
                    item["identical_to_eager"] = bool(torch.equal(images, eager_images[key]))
                    item["max_abs_difference"] = float((images - eager_images[key]).abs().max())
            else:  # a training image-step is a forward and a backward: about 3 forwards' flops
                rate = time_training(build, target.image_shape, device, train_batch, train_steps, precision,
                                     compile, seconds)
                item.update(batch=train_batch, flop_factor=3)
        except Exception as error:  # noqa: BLE001 - one failed item is reported, the others still run
            item["error"] = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            print(json.dumps(item), flush=True)
            found["items"].append(item)
            continue
        tflops = rate * gflop * item.get("flop_factor", 1) / 1e3
        item.update(image_steps_per_second=round(rate, 2), tflops=round(tflops, 3),
                    fraction_of_peak=round(tflops / found["peak_tflops"][precision], 4),
                    seconds=round(time.perf_counter() - begun, 1))
        found["items"].append(item)
        print(json.dumps(item), flush=True)
        out.write_text(json.dumps(found, indent=1) + "\n")
    out.write_text(json.dumps(found, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
