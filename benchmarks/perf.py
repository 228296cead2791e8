"""Performance benchmarks: each a ratio measured side by side in one run on this machine.

    python benchmarks/perf.py [--quick] [--out results/perf.json] [--quickstart] [--warm-cache DIR]
    python benchmarks/perf.py --startup-only      # just the start-up times (seconds)

- sampling: our DDIM loop (side_bench.sampling.diffusion.ddim_sample) / diffusers' DDIMPipeline,
  same UNet and steps (target <= 1.05);
- guidance: SIDE's guided sampling / unguided sampling (target <= 2.0);
- k-NN: the scoring stage's search + band hits (ExactIndex.search_with_hits, both
  backends) / one bare torch matrix product of the same shapes (target <= 1.3), and the
  peak RSS of scoring many generations (a subprocess, so the peak is its own);
- growth: cost of sampling + scoring against N_G and against training-set size, three
  points each, as the fitted log-log slope;
- start-up: wall time of `side-bench --help`, `--version`, `plugins` and `suites` in a fresh
  process (best of 3, after one call that fills the plugin listing cache; target < 1 s each),
  beside `python -c "import torch"` for scale;
- hardware (issue 21): the quickstart UNet's image-steps/s against this machine's own fp32
  matmul GFLOP/s at one thread (the fraction of peak, FLOPs per image-step counted with
  torch.utils.flop_counter), bf16 autocast / fp32, two one-thread processes at once / one;
- bf16 (issue 32): the sampling loop in eager bf16 autocast and compiled bf16 (the whole UNet
  cast, inductor: ``precision = "bf16"``, ``compile = "reduce-overhead"``) / eager fp32, and the
  compiled path's fraction of the bf16 matmul peak; training (benchmarks/training_speed.py's
  step): compiled fp32, eager and compiled bf16 autocast / eager fp32, and eager fp32's
  fraction of the fp32 matmul peak; each row carries the CPU (side_bench.machine);
- 51,200 candidates (the paper's largest N_G) on the quickstart UNet, 50 DDIM steps, sampled
  and scored against 773 8x8 training images, unguided and SIDE-guided, in one process and as
  two one-thread processes of half each (targets: 6 and 10 minutes on the 2-core CPU);
  --quick times 1,024 and scales linearly (said so in the row);
- quickstart (opt-in, --quickstart): `side-bench run` cold (fresh cache, target 10 min)
  and warm (cache filled, target 30 s); --warm-cache DIR measures warm against that cache.

Timings are the minimum over interleaved repeats (the medians for bf16 and training; the machine
may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

console = Console()
BANDS = [(0.85, 0.90), (0.90, 0.95), (0.95, 1.0)]


def best_of(functions: dict, repeats: int) -> dict:
    """Minimum wall time of each function, run interleaved so load hits all alike."""
    times = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def bench_unet(image_size=8, channels=1, num_classes=0):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=image_size, in_channels=channels, out_channels=channels,
                       block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=num_classes or None).eval()


def target_of(unet, num_classes=0):
    from side_bench.hookspecs import TargetModel

    c, s = unet.config.in_channels, unet.config.sample_size
    return TargetModel(unet=unet, scheduler_config={"num_train_timesteps": 1000}, num_classes=num_classes,
                       trained_with="none", image_shape=(c, s, s), identity={})


def sampling(n, steps, repeats):
    from diffusers import DDIMPipeline, DDIMScheduler

    from side_bench.sampling.diffusion import ddim_sample

    unet = bench_unet()
    target = target_of(unet)
    pipeline = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
    pipeline.set_progress_bar_config(disable=True)
    cpu = torch.device("cpu")
    times = best_of({
        "ours": lambda: ddim_sample(target, n, seed=0, num_steps=steps, batch_size=n, device=cpu),
        "diffusers": lambda: pipeline(batch_size=n, num_inference_steps=steps, eta=0.0, output_type="np",
                                      generator=torch.Generator().manual_seed(0)),
    }, repeats)
    return {"name": "sampling: ddim_sample / diffusers DDIMPipeline", "ratio": times["ours"] / times["diffusers"],
            "target": 1.05, "seconds": times, "shape": f"N={n}, {steps} steps, bench UNet [32, 64] on 1x8x8"}


def guidance(n, steps, repeats):
    from side_bench.sampling.classifier import TimeConditionedResNet, log_prob_gradient
    from side_bench.sampling.diffusion import ddim_sample

    target = target_of(bench_unet())
    classifier = TimeConditionedResNet(in_channels=1, num_classes=10, width=32, stages=3).eval()
    guide = log_prob_gradient(classifier)
    labels = torch.arange(n) % 10
    cpu = torch.device("cpu")
    common = dict(seed=0, num_steps=steps, batch_size=n, device=cpu, class_labels=labels)
    times = best_of({
        "guided": lambda: ddim_sample(target, n, guidance=guide, guidance_scale=1.0, **common),
        "unguided": lambda: ddim_sample(target, n, **common),
    }, repeats)
    return {"name": "guidance: SIDE guided / unguided sampling", "ratio": times["guided"] / times["unguided"],
            "target": 2.0, "seconds": times,
            "shape": f"N={n}, {steps} steps, classifier width 32 x 3 stages (the side defaults)"}


def knn_data(n_queries, n_base, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(n_base, dim, generator=generator)
    copies = max(1, n_queries // 10)  # a tenth of the candidates are near-copies, as memorized ones are
    near = (base[:copies] + 0.003 * torch.randn(copies, dim, generator=generator)).clamp(0, 1)
    return base, torch.cat([near, torch.rand(n_queries - copies, dim, generator=generator)])


def knn(n_queries, n_base, dim, repeats):
    from side_bench.scoring.knn import ExactIndex, faiss_available

    base, queries = knn_data(n_queries, n_base, dim)
    backends = ("torch", "faiss") if faiss_available() else ("torch",)  # faiss: an optional extra
    indices = {backend: ExactIndex(base, "l2", backend) for backend in backends}
    times = best_of({
        "matmul": lambda: queries @ base.T,
        **{f"scoring ({b})": (lambda i=i: i.search_with_hits(queries, 1, BANDS)) for b, i in indices.items()},
    }, repeats)
    shape = f"{n_queries} x {n_base} x {dim}"
    return [{"name": f"k-NN scoring, {backend} / bare torch matmul", "ratio": times[f"scoring ({backend})"] / times["matmul"],
             "target": 1.3, "seconds": times, "shape": shape} for backend in backends]


def knn_memory_child(n_queries, n_base, dim, backend):
    """Run in a subprocess: score n_queries against n_base; print seconds and peak RSS."""
    from side_bench.scoring.knn import ExactIndex

    base, queries = knn_data(n_queries, n_base, dim)
    inputs_mb = (base.numel() + queries.numel()) * 4 / 2**20
    start = time.perf_counter()
    (sims, _), masks = ExactIndex(base, "l2", backend).search_with_hits(queries, 1, BANDS)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "inputs_mb": inputs_mb,
                      "unchunked_block_mb": n_queries * n_base * 4 / 2**20, "hits": int(masks[-1].sum())}))


def knn_memory(n_queries, n_base, dim, backend="torch"):
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import perf; " \
           f"perf.knn_memory_child({n_queries}, {n_base}, {dim}, {backend!r})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return {"name": f"k-NN peak memory ({backend})", "ratio": None, "target": None,
            "shape": f"{n_queries} x {n_base} x {dim}", **found, "seconds": {"scoring": found["seconds"]}}


def cell_cost(n_generations, n_train, steps):
    """Sampling + scoring (the part of a cell that is not cached): seconds."""
    from side_bench.registry import load_registry
    from side_bench.sampling.diffusion import ddim_sample
    from side_bench.scoring.rows import metric_rows
    from side_bench.scoring.scores import Band, Reference, to_unit

    registry = load_registry()
    features = registry.build("features", "pixel", {})
    metrics = {m: registry.build("metrics", m, {}) for m in ("ams", "ums", "p95", "gu-ratio")}
    target = target_of(bench_unet())
    train = torch.rand(n_train, 1, 8, 8) * 2 - 1
    start = time.perf_counter()
    images, _ = ddim_sample(target, n_generations, seed=0, num_steps=steps, batch_size=256, device=torch.device("cpu"))
    reference = Reference(to_unit(train), features, backend="auto")
    bands = [Band(f"b{i}", *b) for i, b in enumerate(BANDS)]
    metric_rows(reference.score(to_unit(images), bands), metrics, bands)
    return time.perf_counter() - start


def growth(points_ng, points_train, steps, repeats):
    rows = []
    for what, points, make in (("N_G", points_ng, lambda p: cell_cost(p, points_train[0], steps)),
                               ("training-set size", points_train, lambda p: cell_cost(points_ng[0], p, steps))):
        seconds = [min(make(p) for _ in range(repeats)) for p in points]
        slope = float(np.polyfit(np.log(points), np.log(seconds), 1)[0])
        rows.append({"name": f"growth of sampling + scoring against {what}", "ratio": None, "slope": slope,
                     "target": None, "seconds": dict(zip(map(str, points), seconds, strict=True)),
                     "shape": f"{what} in {points}"})
    return rows


def matmul_gflops(dtype=torch.float32, size=1024, repeats=5) -> float:
    """This thread's dense matmul GFLOP/s (square ``size``, the best of ``repeats``)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = best_of({"mm": lambda: a @ b}, repeats)["mm"]
    return 2 * size**3 / seconds / 1e9


def unet_flops(unet, batch=1) -> float:
    """FLOPs of one forward of ``unet`` per image (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    c, s = unet.config.in_channels, unet.config.sample_size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(torch.zeros(batch, c, s, s), torch.tensor([500]))
    return counter.get_total_flops() / batch


def unet_rate(batch: int, seconds: float, precision: str = "fp32") -> float:
    """Image-steps per second of the quickstart UNet forward at ``batch`` (one thread)."""
    from side_bench.sampling.diffusion import autocast_dtype

    unet = bench_unet()
    x, t = torch.randn(batch, 1, 8, 8), torch.tensor([500])
    dtype = autocast_dtype(precision)

    def forward():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            unet(x, t)

    forward()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forward()
        done += batch
    return done / (time.perf_counter() - start)


def unet_rate_child(batch: int, seconds: float, precision: str) -> None:
    torch.set_num_threads(1)
    print(json.dumps({"rate": unet_rate(batch, seconds, precision)}))


def _children(code: str, processes: int) -> list[dict]:
    """Run ``code`` (which prints one JSON line) in ``processes`` fresh processes at once."""
    prefix = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import perf; "
    running = [subprocess.Popen([sys.executable, "-c", prefix + code], stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in running]


def hardware(batch: int, seconds: float) -> list[dict]:
    """Fraction of peak, bf16 / fp32 and two processes / one, for the quickstart UNet."""
    torch.set_num_threads(1)
    flops = unet_flops(bench_unet())
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(torch.bfloat16)
    fp32 = unet_rate(batch, seconds)
    bf16 = unet_rate(batch, seconds, "bf16")
    code = f"perf.unet_rate_child({batch}, {seconds}, 'fp32')"
    one = _children(code, 1)[0]["rate"]
    two = [r["rate"] for r in _children(code, 2)]
    shape = f"quickstart UNet [32, 64], 1x8x8, batch {batch}, one thread, {flops / 1e9:.4f} GFLOP per image-step"
    return [
        {"name": "UNet fp32 / this thread's fp32 matmul peak (fraction of peak)", "ratio": None, "target": None,
         "fraction_of_peak": fp32 * flops / 1e9 / peak, "shape": shape,
         "seconds": {"image-steps/s": fp32, "matmul GFLOP/s": peak, "bf16 matmul GFLOP/s": peak_bf16}},
        {"name": "UNet bf16 autocast / fp32 (speed-up)", "ratio": None, "target": None, "speedup": bf16 / fp32,
         "shape": f"{shape}; bf16 {native_bf16_note()}",
         "seconds": {"fp32 image-steps/s": fp32, "bf16 image-steps/s": bf16}},
        {"name": "UNet: two one-thread processes at once / one (speed-up)", "ratio": None, "target": None,
         "speedup": sum(two) / one, "shape": shape,
         "seconds": {"one": one, **{f"two: process {i + 1}": r for i, r in enumerate(two)}}},
    ]


def native_bf16_note() -> str:
    from side_bench.machine import cpu

    flag = cpu()["native_bf16"]
    return f"native on this CPU ({flag})" if flag else "emulated on this CPU (no avx512_bf16, AMX or Arm bf16)"


def candidates_child(n: int, guided: bool, seed: int, precision: str = "fp32") -> None:
    """Sample ``n`` candidates (50 DDIM steps, quickstart UNet, the UNet forward in ``precision``;
    guidance gradients stay fp32) and score them: print seconds."""
    torch.set_num_threads(1)
    from side_bench.registry import load_registry
    from side_bench.sampling.classifier import TimeConditionedResNet, log_prob_gradient
    from side_bench.sampling.diffusion import autocast_dtype, ddim_sample
    from side_bench.scoring.rows import metric_rows
    from side_bench.scoring.scores import Band, Reference, to_unit

    registry = load_registry()
    features = registry.build("features", "pixel", {})
    metrics = {m: registry.build("metrics", m, {}) for m in ("ams", "ums", "p95", "gu-ratio")}
    target = target_of(bench_unet())
    train = torch.rand(773, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # digits-power's 773
    options = {}
    if guided:
        classifier = TimeConditionedResNet(in_channels=1, num_classes=10, width=32, stages=3).eval()
        options = dict(guidance=log_prob_gradient(classifier), guidance_scale=0.3, class_labels=torch.arange(n) % 10)
    start = time.perf_counter()
    images, _ = ddim_sample(target, n, seed=seed, num_steps=50, batch_size=256, device=torch.device("cpu"),
                            dtype=autocast_dtype(precision), **options)
    sampled = time.perf_counter() - start
    bands = [Band(f"b{i}", *b) for i, b in enumerate(BANDS)]
    metric_rows(Reference(to_unit(train), features).score(to_unit(images), bands), metrics, bands)
    print(json.dumps({"seconds": time.perf_counter() - start, "sampling": sampled}))


def candidates(n: int, full: int = 51_200) -> list[dict]:
    """N_G candidates sampled and scored, unguided and guided, as two one-thread processes of
    half each (the run's ``--workers 2``): timed at ``full`` with the UNet in this CPU's fast
    precision (bf16 where it is native, the sampling precision benchmarks/precision_check.py
    showed moves no copy count; fp32 on a CPU without native bf16, where bf16 is emulated and
    slower), and in fp32 at an eighth of ``full`` (both steps grow linearly in N_G, so the
    seconds are scaled and said so), plus one process at an eighth for the two-process
    speed-up. ``n`` below ``full`` (--quick) times everything at ``n`` and scales. About 25
    minutes in full on the idle 2-core CPU."""
    from side_bench.machine import fast_precision

    rows = []
    part = max(2, min(n, full // 8))
    fast = fast_precision("cpu")
    timings = ((fast, n), ("fp32", part)) if fast != "fp32" else (("fp32", n),)
    for guided, target in ((False, 360.0), (True, 600.0)):
        kind = "guided (SIDE, lambda 0.3)" if guided else "unguided"
        one = _children(f"perf.candidates_child({part}, {guided}, 0, 'fp32')", 1)[0]["seconds"] * full / part
        for precision, timed in timings:
            halves = [r["seconds"] for r in _children(f"perf.candidates_child({timed // 2}, {guided}, 1, {precision!r})", 2)]
            scale = full / timed
            two = max(halves) * scale
            rows.append({"name": f"{full:,} candidates {kind}, UNet {precision}: sampled + scored, two processes",
                         "ratio": two / target, "target": 1.0,
                         "shape": f"timed {timed:,}" + (f", x{scale:g} (linear)" if scale != 1 else "")
                         + f"; target {target / 60:.0f} min",
                         "seconds": {"two processes": two, "one process (fp32, scaled)": one,
                                     "speed-up of two": one / two if precision == "fp32" else float("nan")}})
    return rows


def bf16_sampling(n: int, steps: int, compiled_batch: int, repeats: int) -> list[dict]:
    """The sampling loop (``ddim_sample``) on the quickstart UNet at one thread: eager bf16
    autocast and compiled bf16 (``precision = "bf16"``, ``compile = "reduce-overhead"``: the whole
    UNet cast once, inductor) against eager fp32, medians of interleaved repeats, in one run;
    eager at the suites' batch 256, compiled at ``compiled_batch`` (the fastest measured by
    benchmarks/bf16_sampling.py), and the compiled path's fraction of this thread's bf16
    matmul peak, measured here. The first compile is outside the timing (tens of seconds)."""
    import statistics

    from bf16_sampling import quickstart_unet

    from side_bench.machine import describe
    from side_bench.sampling.diffusion import ddim_sample

    torch.set_num_threads(1)
    unet = quickstart_unet()
    flops = unet_flops(unet)
    target = target_of(unet)
    common = dict(seed=0, num_steps=steps, device=torch.device("cpu"))
    variants = {
        "eager fp32 @ 256": lambda: ddim_sample(target, n, batch_size=256, **common),
        "eager bf16 autocast @ 256": lambda: ddim_sample(target, n, batch_size=256, dtype=torch.bfloat16, **common),
        f"compiled bf16 @ {compiled_batch}": lambda: ddim_sample(target, n, batch_size=compiled_batch, dtype=torch.bfloat16,
                                                                compile="reduce-overhead", **common),
    }
    for function in variants.values():
        function()  # warm-up and compile
    samples = {name: [] for name in variants}
    for _ in range(repeats):
        for name, function in variants.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    rates = {name: n * steps / statistics.median(values) for name, values in samples.items()}
    fp32, eager16, compiled16 = rates.values()
    peak = matmul_gflops(torch.bfloat16, 2048, repeats)
    shape = (f"quickstart UNet (bench-unet [32, 64], 8 groups), 1x8x8, N={n}, {steps} DDIM steps, one thread, "
             f"{flops / 1e9:.4f} GFLOP per image-step; bf16 {native_bf16_note()}; medians of {repeats}")
    seconds = {f"{name} image-steps/s": rate for name, rate in rates.items()}
    device = describe("cpu")
    return [
        {"name": "sampling: eager bf16 autocast / eager fp32 (speed-up)", "ratio": None, "target": None,
         "speedup": eager16 / fp32, "shape": shape, "seconds": seconds, "device": device},
        {"name": "sampling: compiled bf16 (whole UNet bf16, inductor) / eager fp32 (speed-up)", "ratio": None,
         "target": None, "speedup": compiled16 / fp32, "shape": shape, "seconds": seconds, "device": device},
        {"name": "sampling: compiled bf16 / this thread's bf16 matmul peak (fraction of peak)", "ratio": None,
         "target": None, "fraction_of_peak": compiled16 * flops / 1e9 / peak, "shape": shape,
         "seconds": {"compiled bf16 image-steps/s": compiled16, "bf16 matmul GFLOP/s (2048^3)": peak},
         "device": device},
    ]


def training_speed(steps: int, repeats: int) -> list[dict]:
    """Training steps of the quickstart UNet (batch 64, one thread; benchmarks/training_speed.py's
    step, checked bit-identical to train_denoiser's at the defaults): compiled fp32 and eager
    and compiled bf16 autocast (with a fused AdamW and a foreach EMA) against eager fp32, in one
    run, and eager fp32's fraction of this thread's fp32 matmul peak (forward + backward FLOPs
    counted). Measures only: the training defaults stay fp32 eager."""
    import statistics

    from bf16_sampling import quickstart_unet
    from training_speed import VARIANTS, Trainer, step_flops

    from side_bench.machine import describe

    torch.set_num_threads(1)
    batch = 64
    images = torch.rand(773, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    names = ["eager fp32", "compiled fp32 + fused AdamW + foreach EMA", "eager bf16 autocast",
             "compiled bf16 autocast + fused AdamW + foreach EMA"]
    trainers = {name: Trainer(quickstart_unet(), images, batch=batch, precision=VARIANTS[name][0],
                              compile=VARIANTS[name][1], fused=VARIANTS[name][2], foreach=VARIANTS[name][3])
                for name in names}
    for trainer in trainers.values():
        for _ in range(3):  # warm-up: compiles forward and backward
            trainer.step()
    samples = {name: [] for name in names}
    for _ in range(repeats):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step()
            samples[name].append((time.perf_counter() - start) / steps)
    rates = {name: batch / statistics.median(values) for name, values in samples.items()}
    flops = step_flops(images, batch)
    peak = matmul_gflops(torch.float32, 1024, repeats)
    shape = (f"quickstart UNet, batch {batch}, one thread, {flops / 1e9:.4f} GFLOP per image-step (forward + "
             f"backward); {steps} steps a timing, medians of {repeats}")
    seconds = {f"{name} image-steps/s": rate for name, rate in rates.items()}
    fp32 = rates["eager fp32"]
    device = describe("cpu")
    rows = [{"name": f"training: {name} / eager fp32 (speed-up)", "ratio": None, "target": None,
             "speedup": rates[name] / fp32, "shape": shape, "seconds": seconds, "device": device}
            for name in names[1:]]
    rows.append({"name": "training: eager fp32 / this thread's fp32 matmul peak (fraction of peak)", "ratio": None,
                 "target": None, "fraction_of_peak": fp32 * flops / 1e9 / peak, "shape": shape,
                 "seconds": {"eager fp32 image-steps/s": fp32, "fp32 matmul GFLOP/s (1024^3)": peak},
                 "device": device})
    return rows


STARTUP_COMMANDS = (["--help"], ["--version"], ["plugins"], ["suites"])


def startup(repeats: int = 3) -> list[dict]:
    """Seconds from process start to exit for the commands that must answer at once."""

    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "COLUMNS": "200"})
        return time.perf_counter() - start

    side_bench = [sys.executable, "-m", "side_bench"]
    timed([*side_bench, "plugins"])  # fills the listing cache, as any earlier use would
    rows = []
    for command in STARTUP_COMMANDS:
        seconds = min(timed([*side_bench, *command]) for _ in range(repeats))
        rows.append({"name": f"start-up: side-bench {' '.join(command)}", "ratio": seconds / 1.0, "target": 1.0,
                     "seconds": {"wall": seconds}, "shape": "fresh process, target 1 s"})
    seconds = min(timed([sys.executable, "-c", "import torch"]) for _ in range(repeats))
    rows.append({"name": "start-up: python -c 'import torch' (reference)", "ratio": None, "target": None,
                 "seconds": {"wall": seconds}, "shape": "what every command cost before"})
    return rows


def quickstart(warm_cache: str | None):
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cache = warm_cache or str(Path(scratch) / "cache")
        runs = ["warm"] if warm_cache else ["cold", "warm"]
        for kind in runs:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "side_bench", "run", "--results", str(Path(scratch) / kind),
                            "--cache-dir", cache], check=True, capture_output=True)
            seconds = time.perf_counter() - start
            target = 600.0 if kind == "cold" else 30.0
            rows.append({"name": f"quickstart {kind} (side-bench run)", "ratio": seconds / target, "target": 1.0,
                         "seconds": {kind: seconds}, "shape": f"target {target:.0f} s"})
    return rows


def machine() -> dict:
    """The machine the numbers hold for: its CPU's model and speed flags (native bf16 or not,
    side_bench/machine.py) beside the platform, torch and the load while it ran."""
    from side_bench.machine import cpu

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu": cpu(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()}


def write_measured(found: dict, out: str, script: str, argv: list[str] | None) -> None:
    """A benchmark's JSON with the machine it ran on and the command that gives it again."""
    from pathlib import Path

    found["machine"] = machine()
    found["command"] = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, indent=2, default=str))
    print("written:", path)


PARTS = ["sampling", "guidance", "knn", "memory", "growth", "hardware", "bf16", "training", "candidates", "startup"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--out", default="results/perf.json")
    parser.add_argument("--quickstart", action="store_true", help="also time the quickstart cold and warm (~10 min)")
    parser.add_argument("--warm-cache", default=None, help="time only a warm quickstart against this cache")
    parser.add_argument("--startup-only", action="store_true", help="only the start-up times (a few seconds)")
    parser.add_argument("--only", default=None, metavar="PARTS",
                        help=f"comma-separated, some of: {', '.join(PARTS)} (default: all)")
    args = parser.parse_args(argv)
    parts = PARTS if args.only is None else [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: {', '.join(unknown)}: expected some of {', '.join(PARTS)}")
    torch.set_grad_enabled(True)
    if args.startup_only:
        return report(startup(), args, "python benchmarks/perf.py --startup-only")
    if args.quick:
        sizes = dict(sample=(64, 20), knn=(2000, 10000, 512), memory=(50_000, 10_000, 512),
                     ng=[64, 128, 256], train=[1024, 4096, 16384], steps=10, repeats=3,
                     unet=(64, 1.0), candidates=512, bf16=(1024, 5, 1024, 3), training=(5, 3))
    else:
        sizes = dict(sample=(256, 50), knn=(5000, 50_000, 512), memory=(200_000, 50_000, 512),
                     ng=[128, 256, 512], train=[4096, 16384, 65536], steps=25, repeats=5,
                     unet=(256, 5.0), candidates=51_200, bf16=(4096, 10, 1024, 5), training=(10, 5))
    benchmarks = {
        "sampling": lambda: [sampling(*sizes["sample"], sizes["repeats"])],
        "guidance": lambda: [guidance(*sizes["sample"], sizes["repeats"])],
        "knn": lambda: knn(*sizes["knn"], sizes["repeats"]),
        "memory": lambda: [knn_memory(*sizes["memory"])],
        "growth": lambda: growth(sizes["ng"], sizes["train"], sizes["steps"], 2 if args.quick else 3),
        "hardware": lambda: hardware(*sizes["unet"]),
        "bf16": lambda: bf16_sampling(*sizes["bf16"]),
        "training": lambda: training_speed(*sizes["training"]),
        "candidates": lambda: candidates(sizes["candidates"]),
        "startup": startup,
    }
    assert list(benchmarks) == PARTS
    results = [row for part in PARTS if part in parts for row in benchmarks[part]()]
    if args.quickstart or args.warm_cache:
        results += quickstart(args.warm_cache)
    command = ("python benchmarks/perf.py" + (" --quick" if args.quick else "") + (" --quickstart" if args.quickstart else "")
               + (f" --only {','.join(parts)}" if args.only is not None else ""))
    return report(results, args, command)


def report(results: list[dict], args, command: str) -> int:
    table = Table(title="side-bench performance (lower is better; ratio = ours / reference)")
    for column in ("benchmark", "shape", "seconds", "ratio", "target", "ok"):
        table.add_column(column)
    for row in results:
        ratio = row.get("ratio")
        if "slope" in row:
            shown, target, ok = f"slope {row['slope']:.2f}", "", ""
        elif "fraction_of_peak" in row:
            shown, target, ok = f"{100 * row['fraction_of_peak']:.0f}% of peak", "", ""
        elif "speedup" in row:
            shown, target, ok = f"{row['speedup']:.2f}x faster", "", ""
        elif "peak_rss_mb" in row:
            shown = f"peak RSS {row['peak_rss_mb']:.0f} MB"
            target = f"inputs {row['inputs_mb']:.0f} MB; unchunked block {row['unchunked_block_mb']:.0f} MB"
            ok = "yes" if row["peak_rss_mb"] < row["inputs_mb"] + 1024 else "NO"
        elif ratio is not None:
            shown, target = f"{ratio:.2f}x", f"<= {row['target']}x"
            ok = "yes" if ratio <= row["target"] else "NO"
            if row["name"].startswith("quickstart"):
                secs = next(iter(row["seconds"].values()))
                shown, target = f"{secs:.1f} s", row["shape"]
        if row["name"].startswith("start-up"):
            secs = row["seconds"]["wall"]
            shown, target = f"{secs:.2f} s", "< 1 s" if row["target"] else ""
            ok = ("yes" if secs < 1.0 else "NO") if row["target"] else ""
        seconds = ", ".join(f"{k} {v:.3f}" for k, v in row["seconds"].items())
        table.add_row(row["name"], row["shape"], seconds, shown, target, ok)
    console.print(table)
    console.print(f"machine: {machine()}\ncommand: {command}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "command": command, "results": results}, indent=2, default=str))
    console.print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
