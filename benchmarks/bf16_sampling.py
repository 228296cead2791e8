"""How close bf16 sampling comes to this CPU's peak, and where the rest of the time goes
(issue 32 part 1).

    OMP_NUM_THREADS=1 nice python benchmarks/bf16_sampling.py [--batches 256,1024,4096]
        [--repeats 7] [--n 2048] [--steps 10] [--out results/bf16-sampling.json]

All at one thread (``--workers auto`` runs one single-thread process per core), the quickstart
UNet (bench-unet [32, 64], one layer per block, 8 groups, 1x8x8; untrained weights: the speed
does not depend on them), in one process, the variants interleaved and each timing the median
of ``--repeats`` (the machine may be shared):

1. peaks, measured here in the same run: a large square matmul in fp32 and bf16, and the
   UNet's own convolutions alone at each batch (fp32 NCHW and bf16 channels-last: oneDNN's
   best layouts), which do 98% of its FLOPs: what the UNet could reach if nothing else cost;
2. the UNet forward at each batch size: eager fp32, eager bf16 autocast, eager bf16 with the
   weights cast, inductor-compiled fp32, compiled bf16 under autocast (what
   ``compile = "reduce-overhead"`` did before), and compiled bf16 as
   ``side_bench.sampling.diffusion.compiled_unet`` builds it now (the whole UNet cast once,
   channels-last): image-steps/s, the ratio to eager fp32 at the same batch and at 256 (the
   suites' batch), and the fraction of each peak;
3. the whole sampling loop (``ddim_sample``, the code a run executes) at ``--n`` images:
   eager fp32 and eager bf16 at batch 256, compiled bf16 at the fastest batch of 2., and the
   DDIM update's share of a step (timed alone: why it stays fp32);
4. a profile (torch.profiler, inductor's kernels named) of the compiled bf16 UNet at the
   fastest batch: the share of convolutions, GroupNorm (fused with SiLU, the residual adds and
   the concatenations by inductor), attention, the linear layers and the rest.

Writes everything to ``--out`` (JSON) and prints it. Compiling takes tens of seconds a variant
and batch on the shared CPU the first time, seconds from inductor's on-disk cache after.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import perf  # noqa: E402  (machine(), unet_flops)


def quickstart_unet():
    from side_bench_builtins.models import BenchUNet

    torch.manual_seed(0)
    return BenchUNet(BenchUNet.Settings()).build_unet((1, 8, 8), 0).eval()  # the quickstart's settings


def medians(functions: dict, repeats: int, least: float = 0.2) -> dict:
    """Median seconds per call of each function, interleaved; each timing at least ``least`` s."""
    for function in functions.values():
        function()  # warm-up (and compile)
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            calls, start = 0, time.perf_counter()
            while True:
                function()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= least:
                    break
            samples[name].append(elapsed / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def conv_shapes(unet, batch: int) -> list[tuple]:
    """(conv module, input shape) of every convolution of one forward at ``batch``."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, tuple(i[0].shape))))
             for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        unet(torch.zeros(batch, 1, 8, 8), torch.tensor(500))
    for hook in hooks:
        hook.remove()
    return shapes


def peak_functions(unet, batches: list[int]) -> dict:
    """name -> (function, FLOPs per call): a square matmul in fp32 (1024) and bf16 (2048),
    each at its best size here, and all the UNet's convolutions of one forward, alone, at
    each batch, fp32 (NCHW) and bf16 (channels-last): oneDNN's best layout for each."""
    from torch.utils.flop_counter import FlopCounterMode

    found = {}
    for name, dtype, size in (("fp32", torch.float32, 1024), ("bf16", torch.bfloat16, 2048)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        found[f"matmul {name} {size}^3"] = (lambda a=a, b=b: a @ b, 2 * size**3)
    for batch in batches:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            layout = torch.channels_last if dtype == torch.bfloat16 else torch.contiguous_format
            convs = []
            for module, shape in conv_shapes(unet, batch):
                convs.append((torch.randn(shape).to(dtype).contiguous(memory_format=layout),
                              module.weight.detach().to(dtype).contiguous(memory_format=layout),
                              module.bias.detach().to(dtype), module.stride, module.padding))

            def all_convs(convs=convs):
                with torch.inference_mode():
                    for x, weight, bias, stride, padding in convs:
                        torch.nn.functional.conv2d(x, weight, bias, stride, padding)

            with FlopCounterMode(display=False) as counter:
                all_convs()
            found[f"UNet convolutions {name} @ {batch}"] = (all_convs, counter.get_total_flops())
    return found


def forward_variants(base, batch: int, all_variants: bool) -> dict:
    """name -> a function running one forward of the quickstart UNet at ``batch``: eager
    fp32, eager bf16 autocast and ours (compiled_unet's bf16 path) always; with
    ``all_variants`` also eager bf16 with the weights cast, compiled fp32, compiled under bf16
    autocast (what compile = "reduce-overhead" did with bf16 before) and ours with inductor's
    freezing (weights folded into the graph as constants, convolutions prepacked)."""
    from side_bench.sampling.diffusion import compiled_unet

    x32, t = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor(500)
    x16 = x32.to(torch.bfloat16)

    def run(network, x, autocast=False):
        def forward():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return network(x, t).sample
        return forward

    # inductor's options make another backend, so dynamo does not reuse the unfrozen compile
    frozen = torch.compile(copy.deepcopy(base).to(torch.bfloat16).to(memory_format=torch.channels_last),
                           options={"freezing": True}, dynamic=False)

    # separate copies: compiled_unet caches by module
    variants = {"eager fp32": run(base, x32), "eager bf16 autocast": run(base, x32, True),
                "compiled bf16 cast (ours)": run(compiled_unet(copy.deepcopy(base), "reduce-overhead", torch.bfloat16), x16)}
    if all_variants:
        variants.update({
            "eager bf16 cast": run(copy.deepcopy(base).to(torch.bfloat16), x16),
            "compiled fp32": run(compiled_unet(copy.deepcopy(base), "reduce-overhead"), x32),
            "compiled bf16 autocast": run(compiled_unet(copy.deepcopy(base), "reduce-overhead"), x32, True),
            "compiled bf16 cast, frozen": run(frozen, x16),
        })
    return variants


def forwards_and_peaks(base, batches: list[int], repeats: int, flops: float) -> tuple[dict, list[dict]]:
    """Every peak and forward variant at every batch, interleaved in each of ``repeats`` rounds
    (so a change of load hits all alike): the peaks' GFLOP/s, and per batch and variant the
    image-steps/s, the ratio to eager fp32 at the same batch and at 256, the fraction of the
    square matmul peak and of the UNet's own convolutions' peak in its precision."""
    peaks = peak_functions(base, batches)
    functions = {name: function for name, (function, _) in peaks.items()}
    for batch in batches:
        for name, function in forward_variants(base, batch, all_variants=batch == 256).items():
            functions[(batch, name)] = function
    seconds = medians(functions, repeats)
    found_peaks = {name: {"gflops": peak_flops / seconds[name] / 1e9} for name, (_, peak_flops) in peaks.items()}
    square = {p: next(v["gflops"] for k, v in found_peaks.items() if k.startswith(f"matmul {p}")) for p in ("fp32", "bf16")}
    rates = {key: key[0] / s for key, s in seconds.items() if isinstance(key, tuple)}
    rows = []
    for (batch, name), rate in rates.items():
        precision = "bf16" if "bf16" in name else "fp32"
        gflops = rate * flops / 1e9
        rows.append({"batch": batch, "variant": name, "image_steps_per_s": rate,
                     "vs_eager_fp32_same_batch": rate / rates[(batch, "eager fp32")],
                     "vs_eager_fp32_batch_256": rate / rates[(256, "eager fp32")] if (256, "eager fp32") in rates else None,
                     "gflops": gflops, "of_square_matmul_peak": gflops / square[precision],
                     "of_own_conv_peak": gflops / found_peaks[f"UNet convolutions {precision} @ {batch}"]["gflops"]})
    return found_peaks, rows


def sampling_loop(base, n: int, steps: int, batch: int, repeats: int) -> dict:
    """``ddim_sample`` as a run calls it: eager fp32 and bf16 at batch 256, compiled bf16 at
    ``batch``; and one DDIM update of a batch of 256 against one eager fp32 forward."""
    from diffusers import DDIMScheduler

    from side_bench.sampling.diffusion import ddim_sample

    target = perf.target_of(base)
    cpu = torch.device("cpu")
    common = dict(seed=0, num_steps=steps, device=cpu)
    seconds = medians({
        "eager fp32 @ 256": lambda: ddim_sample(target, n, batch_size=256, **common),
        "eager bf16 autocast @ 256": lambda: ddim_sample(target, n, batch_size=256, dtype=torch.bfloat16, **common),
        f"compiled bf16 @ {batch}": lambda: ddim_sample(target, n, batch_size=batch, dtype=torch.bfloat16,
                                                       compile="reduce-overhead", **common),
    }, max(3, repeats // 2), least=0.0)
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    x, eps, t = torch.randn(256, 1, 8, 8), torch.randn(256, 1, 8, 8), scheduler.timesteps[steps // 2]
    with torch.inference_mode():
        update = medians({"update": lambda: scheduler.step(eps, t, x, eta=0.0),
                          "forward": lambda: base(x, t)}, repeats, least=0.1)
    rates = {name: n * steps / s for name, s in seconds.items()}
    return {"n": n, "steps": steps, "image_steps_per_s": rates,
            "vs_eager_fp32": {name: rate / rates["eager fp32 @ 256"] for name, rate in rates.items()},
            "ddim_update_seconds_per_batch_256": update["update"],
            "ddim_update_vs_eager_fp32_forward": update["update"] / update["forward"]}


CATEGORIES = (  # (category, does a profiler event's name belong to it)
    ("convolution", lambda n: "convolution" in n and n.startswith(("aten::", "mkldnn::"))),
    ("attention (scaled dot product)", lambda n: "scaled_dot_product" in n and n.startswith("aten::")),
    ("linear and matmul", lambda n: n in ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::linear")
     or n.startswith("mkldnn::_linear")),
    ("GroupNorm (fused with SiLU, adds, cat)", lambda n: n.startswith("graph_") and "group_norm" in n),
    ("other fused elementwise", lambda n: n.startswith("graph_")),
    ("copies (layout, contiguity)", lambda n: n in ("aten::copy_", "aten::clone", "aten::contiguous")),
)


def profile(base, batch: int) -> dict:
    """Shares of the compiled bf16 forward's time (self CPU time of the profiler's events)."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from side_bench.sampling.diffusion import compiled_unet

    inductor_config.cpp.enable_kernel_profile = True  # inductor's C++ kernels appear by name
    torch._dynamo.reset()  # compile again (dynamo would reuse the same shape's entry, built without the names)
    network = compiled_unet(copy.deepcopy(base), "reduce-overhead", torch.bfloat16)
    x, t = torch.randn(batch, 1, 8, 8).to(torch.bfloat16), torch.tensor(500)

    def forward():
        with torch.inference_mode():
            network(x, t)

    for _ in range(2):
        forward()
    with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(5):
            forward()
    shares, kernels = collections.Counter(), collections.Counter()
    for event in profiler.key_averages():
        name = event.key
        if "CompiledFxGraph" in name or "Compiled Region" in name:  # wrappers: their children are counted
            continue
        category = next((c for c, belongs in CATEGORIES if belongs(name)), "framework (dispatch, dynamo guards, allocation)")
        shares[category] += event.self_cpu_time_total
        kernels[name] += event.self_cpu_time_total
    total = sum(shares.values())
    return {"batch": batch, "shares": {k: v / total for k, v in shares.most_common()},
            "top_kernels": {k: v / total for k, v in kernels.most_common(12)}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="256,1024,4096")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=2048, help="images of the sampling loop")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the sampling loop")
    parser.add_argument("--out", default="results/bf16-sampling.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # every variant x batch is another entry of UNet2DModel.forward in dynamo's cache (8 by default,
    # past which it would run eager without a word)
    torch._dynamo.config.recompile_limit = 64
    batches = [int(b) for b in args.batches.split(",")]
    base = quickstart_unet()
    flops = perf.unet_flops(base)
    found = {"unet_gflop_per_image_step": flops / 1e9}
    found["peaks"], found["forward"] = forwards_and_peaks(base, batches, args.repeats, flops)
    print(json.dumps(found["peaks"], indent=1), flush=True)
    for row in found["forward"]:
        print(f"batch {row['batch']:5d}  {row['variant']:28s} {row['image_steps_per_s']:8.0f} image-steps/s  "
              f"x{row['vs_eager_fp32_same_batch']:.2f} (same batch)  x{row['vs_eager_fp32_batch_256'] or 0:.2f} (fp32 @ 256)  "
              f"{100 * row['of_square_matmul_peak']:5.1f}% of matmul peak  {100 * row['of_own_conv_peak']:5.1f}% of its convs' peak",
              flush=True)
    ours = [r for r in found["forward"] if r["variant"] == "compiled bf16 cast (ours)"]
    best = max(ours, key=lambda r: r["image_steps_per_s"])["batch"]
    found["sampling_loop"] = sampling_loop(base, max(args.n, best), args.steps, best, args.repeats)
    print(json.dumps(found["sampling_loop"], indent=1), flush=True)
    found["profile"] = profile(base, best)
    print(json.dumps(found["profile"], indent=1), flush=True)
    perf.write_measured(found, args.out, "bf16_sampling.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
