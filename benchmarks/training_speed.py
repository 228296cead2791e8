"""Training's fraction of this CPU's peak, and what compile, a fused AdamW, a foreach EMA and
bf16 autocast change (issue 32 part 2). Measures only: the training defaults stay as they
are (a bf16-training decision is benchmarks/bf16_training_check.py's).

    OMP_NUM_THREADS=1 nice python benchmarks/training_speed.py [--batch 64] [--steps 10]
        [--repeats 5] [--out results/training-speed.json]

One thread, the quickstart UNet and its training batch (bench-unet [32, 64], 8x8, batch 64),
random images. Each variant is ``train_denoiser``'s step written out with its parts
switchable (the same operations in the same order: checked against ``train_denoiser`` bit
for bit at the defaults before anything is timed):

- ``eager fp32``: the default (AdamW's for-loop implementation, the EMA a loop of lerps);
- ``+ fused AdamW``: ``torch.optim.AdamW(fused=True)``, one kernel for all parameters;
- ``+ foreach EMA``: ``torch._foreach_lerp_`` over all parameters (whether it is bit-identical
  to the loop on this CPU is printed);
- ``bf16 autocast``: the forward under bf16 autocast (weights, optimizer, loss and EMA fp32);
- ``compiled``: the UNet through ``torch.compile`` (inductor: forward and backward fused),
  fp32 and bf16 autocast, each with the fused AdamW and the foreach EMA.

Each timing is ``--steps`` steps, the variants interleaved, the median of ``--repeats``.
FLOPs per image of a step (forward + backward) are counted with FlopCounterMode; the
fraction of peak is against this thread's square matmul in the variant's precision, measured
in the same run. The eager fp32 step is also split into its parts (data and noise, forward,
backward, optimizer, EMA) to show where its time goes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf  # noqa: E402  (machine, matmul_gflops)
from bf16_sampling import quickstart_unet  # noqa: E402

VARIANTS = {  # name: (precision, compile, fused AdamW, foreach EMA)
    "eager fp32": ("fp32", False, False, False),
    "eager fp32 + fused AdamW": ("fp32", False, True, False),
    "eager fp32 + foreach EMA": ("fp32", False, False, True),
    "eager fp32 + fused AdamW + foreach EMA": ("fp32", False, True, True),
    "eager bf16 autocast": ("bf16", False, False, False),
    "eager bf16 autocast + fused AdamW + foreach EMA": ("bf16", False, True, True),
    "compiled fp32 + fused AdamW + foreach EMA": ("fp32", True, True, True),
    "compiled bf16 autocast + fused AdamW + foreach EMA": ("bf16", True, True, True),
}


class Trainer:
    """train_denoiser's loop, one step at a time, with its parts switchable (see VARIANTS)."""

    def __init__(self, unet, images, *, batch: int, precision: str, compile: bool, fused: bool, foreach: bool,
                 seed: int = 0, learning_rate: float = 1e-3, ema_decay: float = 0.999):
        from diffusers import DDPMScheduler

        from side_bench.sampling.diffusion import EMA, autocast_dtype, derive_seed

        self.unet = unet.train()
        self.network = torch.compile(unet) if compile else unet
        self.ema = EMA(unet, ema_decay)
        self.foreach = foreach
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=learning_rate, weight_decay=0.0,
                                           **({"fused": True} if fused else {}))
        self.images, self.batch = images, batch
        self.dtype = autocast_dtype(precision)
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "train"))
        self.parts = {"data and noise": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "EMA": 0.0}

    def step(self, timed: bool = False) -> None:
        clock = time.perf_counter
        start = clock()
        batch = torch.randint(len(self.images), (self.batch,), generator=self.generator)
        clean = self.images[batch]
        noise = torch.randn(clean.shape, generator=self.generator)
        timesteps = torch.randint(1000, (self.batch,), generator=self.generator)
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        marks = [clock()]
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            predicted = self.network(noisy, timesteps).sample
        loss = torch.nn.functional.mse_loss(predicted.float(), noise)
        marks.append(clock())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(clock())
        self.optimizer.step()
        marks.append(clock())
        self.update_ema()
        marks.append(clock())
        if timed:
            for part, begin, end in zip(self.parts, [start, *marks[:-1]], marks, strict=True):
                self.parts[part] += end - begin

    @torch.no_grad()
    def update_ema(self) -> None:
        ema = self.ema
        if not self.foreach:
            ema.update(self.unet)  # the library's own (the loop of lerps on a CPU)
            return
        ema.updates += 1
        decay = min(ema.decay, (1 + ema.updates) / (10 + ema.updates))
        torch._foreach_lerp_(list(ema.model.parameters()), [p.detach() for p in self.unet.parameters()], 1 - decay)
        for average, current in zip(ema.model.buffers(), self.unet.buffers(), strict=False):
            average.copy_(current)


def check_against_train_denoiser(images, batch: int) -> dict:
    """The default variant is train_denoiser's computation: the same EMA weights after a few
    steps, bit for bit; and how far the fused AdamW and the foreach EMA move them."""
    from diffusers import DDPMScheduler

    from side_bench.sampling.diffusion import train_denoiser

    steps = 3
    reference = train_denoiser(quickstart_unet(), DDPMScheduler(num_train_timesteps=1000), images, None,
                               steps=steps, batch_size=batch, learning_rate=1e-3, ema_decay=0.999, seed=0,
                               device=torch.device("cpu"), progress=lambda *a: None)
    found = {}
    for name, fused, foreach in (("default", False, False), ("fused AdamW", True, False), ("foreach EMA", False, True)):
        trainer = Trainer(quickstart_unet(), images, batch=batch, precision="fp32", compile=False,
                          fused=fused, foreach=foreach)
        for _ in range(steps):
            trainer.step()
        pairs = list(zip(reference.parameters(), trainer.ema.model.parameters(), strict=True))
        found[name] = {"bit_identical": all(torch.equal(a, b) for a, b in pairs),
                       "max_abs_difference": max(float((a - b).abs().max()) for a, b in pairs)}
    if not found["default"]["bit_identical"]:
        raise SystemExit(f"the benchmark's step is not train_denoiser's: {found['default']}")
    return found


def step_flops(images, batch: int) -> float:
    """FLOPs of one training step's forward and backward, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer = Trainer(quickstart_unet(), images, batch=batch, precision="fp32", compile=False, fused=False,
                      foreach=False)
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    return counter.get_total_flops() / batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="training batch (the quickstart's: 64)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/training-speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = 64
    images = torch.rand(773, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # digits-power's 773
    found = {"identity": check_against_train_denoiser(images, args.batch)}
    print(json.dumps(found, indent=1), flush=True)
    flops = step_flops(images, args.batch)
    forward_flops = perf.unet_flops(quickstart_unet())
    found["gflop_per_image_step"] = {"forward + backward": flops / 1e9, "forward (sampling)": forward_flops / 1e9}
    found["peaks"] = {"fp32": perf.matmul_gflops(torch.float32, 1024, args.repeats),
                      "bf16": perf.matmul_gflops(torch.bfloat16, 2048, args.repeats)}
    trainers = {name: Trainer(quickstart_unet(), images, batch=args.batch, precision=precision, compile=compiled,
                              fused=fused, foreach=foreach)
                for name, (precision, compiled, fused, foreach) in VARIANTS.items()}
    for trainer in trainers.values():  # warm-up: compiles forward and backward
        for _ in range(3):
            trainer.step()
    samples = {name: [] for name in trainers}
    for _ in range(args.repeats):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step(timed=name == "eager fp32")
            samples[name].append((time.perf_counter() - start) / args.steps)
    rows = []
    reference = statistics.median(samples["eager fp32"])
    for name, seconds in samples.items():
        step = statistics.median(seconds)
        rate = args.batch / step
        precision = VARIANTS[name][0]
        rows.append({"variant": name, "image_steps_per_s": rate, "vs_eager_fp32": reference / step,
                     "gflops": rate * flops / 1e9, "of_matmul_peak": rate * flops / 1e9 / found["peaks"][precision],
                     "peak": f"{precision} square matmul"})
        print(f"{name:52s} {rate:7.0f} image-steps/s  x{reference / step:.2f}  "
              f"{100 * rows[-1]['of_matmul_peak']:.1f}% of the {precision} matmul peak", flush=True)
    found["variants"] = rows
    parts = trainers["eager fp32"].parts
    total = sum(parts.values())
    found["eager_fp32_parts"] = {part: seconds / total for part, seconds in parts.items()}
    print("eager fp32 step:", ", ".join(f"{k} {100 * v:.0f}%" for k, v in found["eager_fp32_parts"].items()))
    perf.write_measured(found, args.out, "training_speed.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
