"""Issue 10: the SIDE classifier's plateau and an ablation at one transition scale.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/side_ablation.py --stage plateau
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/side_ablation.py --stage ablation

Scale 96, seed 1 (digits-power uses seed 0), the quickstart's model and budget (bench-unet
[32, 64], 1,500 steps at batch 64), pixel features, N_G 1,024. Every attack goes through the
bench's own plugins (``Surrogate``, ``Side``, ``ClassifierGuidance``, ``Sample``) with the
settings shown; only the surrogate pool is shared: one pool of 20,000 generations
(``--pool``) is sampled once and each arm takes its first n_syn images (sample i depends only
on (seed, i)). Scores: pixel similarity gamma = 1 - RMS difference (images in [0, 1]) to the
nearest of the 96 training images; Gu = share with d(NN1) / d(NN2) < 1/3; AMS high = share with
gamma >= 0.95; target hit = share of guided candidates whose nearest training image carries
the candidate's class/cluster. Rows go to ``--out`` (JSON lines), one per arm.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from side_bench.hookspecs import Candidates, LabelledImages, RunContext  # noqa: E402
from side_bench.run.suite import canonical_hash  # noqa: E402
from side_bench.sampling.classifier import target_hit_rate  # noqa: E402
from side_bench.sampling.diffusion import ddim_sample  # noqa: E402
from side_bench_builtins.conditions import Informative, Surrogate  # noqa: E402
from side_bench_builtins.datasets import Digits  # noqa: E402
from side_bench_builtins.extractors import ClassifierGuidance, Sample, Side  # noqa: E402
from side_bench_builtins.features import PixelFeatures  # noqa: E402
from side_bench_builtins.models import BenchUNet  # noqa: E402

MODEL = dict(block_out_channels=[32, 64], layers_per_block=1, steps=1500, batch_size=64, learning_rate=1e-3)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def score(images: torch.Tensor, train: torch.Tensor) -> dict:
    g = ((images + 1) / 2).reshape(len(images), -1).double()
    t = ((train + 1) / 2).reshape(len(train), -1).double()
    distances = torch.cdist(g, t) / math.sqrt(g.shape[1])
    two, index = distances.topk(2, largest=False)
    similarity = 1 - two[:, 0]
    gu = int((two[:, 0] < two[:, 1] / 3).sum())
    high = int((similarity >= 0.95).sum())
    return {"n": len(images), "gu": gu, "ams_high": high, "nearest": index[:, 0],
            "copied": sorted(set(index[two[:, 0] < two[:, 1] / 3, 0].tolist()))}


class PrefixSurrogate(Surrogate):
    """``surrogate`` whose pool is the first n_syn images of one larger pool (sampled once)."""

    big_pool: torch.Tensor | None = None

    def pool(self, target, n_syn, ctx):
        assert self.big_pool is not None and n_syn <= len(self.big_pool), n_syn
        return self.big_pool[:n_syn]


def setup(args):
    ctx = RunContext(device=torch.device("cpu"), seed=args.seed, cache_dir=Path(args.cache), features=PixelFeatures(),
                     progress=lambda *a: None)
    data = Digits(Digits.Settings(image_size=8, heldout=256)).load(args.scale, args.seed)
    model = BenchUNet(BenchUNet.Settings(**MODEL))
    key = canonical_hash({"ablation-model": MODEL, "data": data.identity, "torch": torch.__version__})
    started = time.perf_counter()
    target = model.prepare(data, None, key, ctx)
    print(json.dumps({"stage": "model", "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    pool_path = Path(args.cache) / f"pool-{key[:16]}-{args.pool}.pt"
    if pool_path.exists():
        pool = torch.load(pool_path, weights_only=True)
    else:
        started = time.perf_counter()
        pool, _ = ddim_sample(target, args.pool, seed=args.seed, purpose="surrogate-pool", num_steps=50,
                              batch_size=256, device=ctx.device)
        torch.save(pool, pool_path)
        print(json.dumps({"stage": "pool", "n": args.pool, "seconds": round(time.perf_counter() - started, 1)}),
              flush=True)
    # identity of the shared pool, so clusterings of different pools never share a cache entry
    target.identity = {**target.identity, "ablation_pool": args.pool}
    PrefixSurrogate.big_pool = pool
    return ctx, data, target


def surrogate(ctx, target, data, **settings) -> LabelledImages:
    base = dict(clusters=20, tau=0.5, n_syn=1000, dropped="remove")  # the published base (relabel is now the default)
    return PrefixSurrogate(Surrogate.Settings(**{**base, **settings})).attack_labels(target, data, ctx)


def plateau(args, ctx, data, target, out):
    """Held-out accuracy by noise band against classifier steps, capacity, pool size, smoothing."""
    arms = [("steps", dict(classifier_steps=s), {}) for s in (125, 250, 500, 1000, 2000, 4000)]
    arms += [("capacity w64 b2", dict(classifier_width=64, classifier_blocks=2, classifier_steps=1000), {}),
             ("label smoothing 0.1", dict(classifier_steps=1000, classifier_label_smoothing=0.1), {})]
    arms += [("pool", dict(classifier_steps=1000), dict(n_syn=n)) for n in (5000, 20000)]
    arms += [("pool", dict(classifier_steps=4000), dict(n_syn=20000))]
    for name, extractor_settings, surrogate_settings in arms:
        labelled = surrogate(ctx, target, data, **surrogate_settings)
        started = time.perf_counter()
        _, record = Side(Side.Settings(**extractor_settings)).classifier(target, labelled, ctx)
        row = {"stage": "plateau", "arm": name, "extractor": extractor_settings, "surrogate": surrogate_settings,
               "seconds": round(time.perf_counter() - started, 1), **record}
        print(json.dumps(row), flush=True)
        out.write(json.dumps(row) + "\n")
    informative = Informative(Informative.Settings(conditional_target=False)).attack_labels(target, data, ctx)
    for steps in (30, 1000):
        started = time.perf_counter()
        _, record = ClassifierGuidance(ClassifierGuidance.Settings(classifier_steps=steps)).classifier(
            target, informative, ctx)
        row = {"stage": "plateau", "arm": "cond classifier", "extractor": {"classifier_steps": steps},
               "seconds": round(time.perf_counter() - started, 1), **record}
        print(json.dumps(row), flush=True)
        out.write(json.dumps(row) + "\n")


def ablation_arms():
    side = lambda **s: ("side", s.pop("surrogate", {}), s)  # noqa: E731
    return {
        "uncond": ("uncond", {}, {}),
        "uncond 25 DDIM steps": ("uncond", {}, {"ddim_steps": 25}),
        "cond lambda 1": ("cond", {}, {"guidance_scale": 1.0}),
        "cond lambda 0.3": ("cond", {}, {"guidance_scale": 0.3}),
        "cond classifier 30 steps": ("cond", {}, {"guidance_scale": 1.0, "classifier_steps": 30}),
        "side (base: K 20, lambda 1)": side(guidance_scale=1.0),
        "side lambda 0.3": side(guidance_scale=0.3),
        "side lambda 3": side(guidance_scale=3.0),
        "side 25 DDIM steps": side(guidance_scale=1.0, ddim_steps=25),
        "side K 10": side(guidance_scale=1.0, surrogate={"clusters": 10, "n_syn": 1000}),
        "side K 50": side(guidance_scale=1.0, surrogate={"clusters": 50, "n_syn": 2500}),
        "side classifier 4000 steps": side(guidance_scale=1.0, classifier_steps=4000),
        "side classifier w64 b2": side(guidance_scale=1.0, classifier_width=64, classifier_blocks=2),
        "side window t<300": side(guidance_scale=1.0, guidance_t_max=300),
        "side window t>=300": side(guidance_scale=1.0, guidance_t_min=300),
        "side c by frequency": side(guidance_scale=1.0, class_draw="frequency"),
        "side dropped relabel": side(guidance_scale=1.0, surrogate={"dropped": "relabel"}),
        "side temperature 2": side(guidance_scale=1.0, guidance_temperature=2.0),
        "side n_syn 5000": side(guidance_scale=1.0, surrogate={"n_syn": 5000}),
    }


def ablation(args, ctx, data, target, out, only=None):
    baseline = None
    for name, (kind, surrogate_settings, extractor_settings) in ablation_arms().items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        labelled, diagnostics = None, {}
        if kind == "uncond":
            result = Sample(Sample.Settings(**extractor_settings)).extract(target, None, args.n, ctx)
        elif kind == "cond":
            labelled = Informative(Informative.Settings(conditional_target=False)).attack_labels(target, data, ctx)
            result = ClassifierGuidance(ClassifierGuidance.Settings(**extractor_settings)).extract(
                target, labelled, args.n, ctx)
        else:
            labelled = surrogate(ctx, target, data, **surrogate_settings)
            diagnostics["surrogate_diagnostics"] = labelled.diagnostics.get("surrogate")
            result = Side(Side.Settings(**extractor_settings)).extract(target, labelled, args.n, ctx)
        candidates = result if isinstance(result, Candidates) else Candidates(images=result)
        scores = score(candidates.images, data.train)
        row = {"stage": "ablation", "arm": name, "kind": kind, "surrogate": surrogate_settings,
               "extractor": extractor_settings, "seconds": round(time.perf_counter() - started, 1),
               "n": scores["n"], "gu": scores["gu"], "ams_high": scores["ams_high"],
               "gu_ci": wilson(scores["gu"], scores["n"]), "ams_high_ci": wilson(scores["ams_high"], scores["n"]),
               "distinct_copied": len(scores["copied"]), **diagnostics, **candidates.diagnostics}
        if candidates.targets is not None and labelled is not None and labelled.train_targets is not None:
            row["target_hit"] = target_hit_rate(candidates.targets, scores["nearest"], labelled.train_targets)
        if kind == "uncond" and not extractor_settings:
            baseline = set(scores["copied"])
        if baseline is not None:
            copied = set(scores["copied"])
            row["vs_uncond_kept_lost_gained"] = [len(copied & baseline), len(baseline - copied), len(copied - baseline)]
        print(json.dumps(row, default=str), flush=True)
        out.write(json.dumps(row, default=str) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=("plateau", "ablation"), required=True)
    parser.add_argument("--scale", type=int, default=96)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--n", type=int, default=1024, help="N_G per arm")
    parser.add_argument("--pool", type=int, default=20000, help="the shared surrogate pool (largest n_syn)")
    parser.add_argument("--only", nargs="*", help="ablation arms to run (default: all)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "side-bench-ablation"))
    parser.add_argument("--out", default="results/side-ablation.jsonl")
    args = parser.parse_args()
    ctx, data, target = setup(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as out:
        if args.stage == "plateau":
            plateau(args, ctx, data, target, out)
        else:
            ablation(args, ctx, data, target, out, only=args.only)


if __name__ == "__main__":
    main()
