"""The memorization divergence M = KL(q_eps || p_theta) of the digits models (issue 13).

Models: the quickstart's unconditional UNets at scales 64, 128 and 1024, and the
digits-scales suite's class-conditional UNets (true labels, 10 random labels) at scale 64.
They are trained (or loaded) exactly as the runner does, under the same cache key, so a
later ``side-bench run`` reuses them and vice versa.

Run (one core, about half an hour cold, minutes warm)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/divergence_digits.py

``--prepare-only`` trains the models and stops; ``--draws``, ``--eps``, ``--ode-steps``,
``--probes`` and ``--exact-max-dim`` change the estimator (see ``side_bench.scoring.divergence``).
For the conditional models the default p_theta is per label (each draw with its training
image's label, sum_c pi_c KL(q_eps,c || p_theta(. | c))); ``--marginal-draws N`` adds the
marginal p_theta(x) = sum_c pi_c p_theta(x | c) (10 ODE solves per draw).

Measured on the project's 2-core CPU machine (one core, nice 10), seed 0, eps = 0.1,
256 draws, RK4 with 24 steps, Hutchinson divergence with 2 probes per draw; nats per image
(64 dimensions), +- one Monte Carlo standard error::

    uncond       64    9.34 +- 0.30   (55 s)
    uncond      128   22.65 +- 0.39   (67 s)
    uncond     1024   35.98 +- 0.48   (88 s)
    informative  64    7.56 +- 0.27 per label; marginal 6.95 +- 0.56 (64 draws)
    random       64    6.87 +- 0.26 per label; marginal 6.53 +- 0.48 (64 draws)

48 ODE steps instead of 24 moved the estimates by under 0.05 nats (64 draws); eps = 0.05 and
0.2 (64 draws) keep the same order: 18.7 / 39.3 / 57.8 / 15.4 / 14.5 and 4.4 / 11.7 / 19.8 /
3.5 / 3.3. ``--rankers`` printed (N_G = 256, plain DDIM, the quickstart's candidates):
scale 64 (141 copies of 50 images): denoise-loss precision@10/50/100 = 10/10, 49/50, 91/100,
AUC 0.89 [0.85, 0.92]; clique precision@10/50/100 = 9/10, 42/50, 69/100, flagged 32 with
precision 29/32 and 10 distinct training images, AUC 0.65 [0.60, 0.70]. Scale 128 (3
copies): denoise-loss AUC 0.79, clique flags none. Scale 1024: no copies, AUC undefined.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from side_bench.hookspecs import RunContext
from side_bench.registry import load_registry
from side_bench.run.suite import canonical_hash, expand_cells, load_suite

# (label, suite, attack name, scale): the models measured
MODELS = [
    ("uncond", "quickstart", "uncond", 64),
    ("uncond", "quickstart", "uncond", 128),
    ("uncond", "quickstart", "uncond", 1024),
    ("informative", "digits-scales", "informative", 64),
    ("random", "digits-scales", "random", 64),
]


def cache_dir() -> Path:
    # The runner's default (side_bench.run.runner.default_cache_dir), without importing the runner.
    return Path(os.environ.get("SIDE_BENCH_CACHE") or Path.home() / ".cache" / "side-bench")


def package_versions() -> dict[str, str]:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("torch", "diffusers")}


def prepare(label: str, suite_name: str, attack: str, scale: int, registry, progress=lambda *a: None):
    """(target, data, labels) for one model, trained or loaded under the runner's cache key."""
    suite = load_suite(suite_name, registry)
    features = registry.build("features", suite.features.name, suite.features.settings)
    cells = expand_cells(suite, versions=package_versions(), device="cpu", features_identity=features.identity)
    cell = next(c for c in cells if c.scale == scale and c.attack.name == attack)
    config = cell.config
    device = torch.device("cpu")
    ctx = RunContext(device=device, seed=cell.seed, cache_dir=cache_dir(), features=features, progress=progress)
    dataset = registry.build("datasets", config["dataset"]["name"], config["dataset"]["settings"])
    data = dataset.load(scale, cell.seed)
    condition = registry.build("conditions", cell.attack.condition.name, cell.attack.condition.settings)
    model = registry.build("models", config["model"]["name"], config["model"]["settings"])
    labels = condition.training_labels(data, cell.seed)
    # The runner's model key (side_bench/run/runner.py, CellRunner._run).
    model_key = canonical_hash({
        "data": data.identity, "labels": condition.training_key(), "model": config["model"],
        "device": device.type, "versions": {k: config["versions"].get(k) for k in ("torch", "diffusers")},
    })
    started = time.perf_counter()
    target = model.prepare(data, labels, model_key, ctx)
    return target, data, labels, ctx, time.perf_counter() - started


def ranker_table(target, data, ctx, registry, n: int = 256) -> list[dict]:
    """The rankers and ranking metrics on the quickstart's candidates (plain DDIM, the runner's
    ``sample`` extractor, so the same candidates as ``side-bench run``)."""
    from types import SimpleNamespace

    from side_bench.scoring.knn import ExactIndex
    from side_bench.scoring.scores import to_unit

    extractor = registry.build("extractors", "sample", {"ddim_steps": 50})
    candidates = extractor.extract(target, None, n, ctx)
    candidates = getattr(candidates, "images", candidates)
    candidates01, train01 = to_unit(candidates), to_unit(data.train)
    similarity, nearest = ExactIndex(train01, "l2").search(candidates01, 2)
    distance = (1 - similarity).double().numpy()  # normalised pixel distance
    rankers = {name: registry.build("rankers", name, {}) for name in ("clique", "denoise-loss")}
    columns = {name: ranker.score(candidates01, target, ctx) for name, ranker in rankers.items()}
    scores = SimpleNamespace(
        ranker_scores={name: c[0] for name, c in columns.items()},
        ranker_thresholds={name: c[1] for name, c in columns.items()},
        pixel_d1=distance[:, 0], pixel_d2=distance[:, 1], best_similarity=similarity[:, 0].double().numpy(),
        nearest_index=nearest[:, 0].numpy(), n_candidates=n, n_train=len(train01))
    rows = []
    for name in rankers:
        row = {"ranker": name}
        for k in (10, 50, 100, 0):
            if k == 0 and scores.ranker_thresholds[name] is None:
                continue
            value = registry.build("metrics", "precision-at-k", {"ranker": name, "k": k}).compute(scores, None)
            row[f"precision@{k or 'flagged'}"] = (value.count, value.n)
        if scores.ranker_thresholds[name] is not None:
            row["flagged-distinct"] = registry.build("metrics", "flagged-distinct", {"ranker": name}).compute(
                scores, None).value
        auc = registry.build("metrics", "ranker-auc", {"ranker": name}).compute(scores, None)
        row["auc"] = (auc.value, auc.ci_low, auc.ci_high, auc.reason)
        rows.append(row)
    from side_bench_builtins.ranking_metrics import is_copy

    truth = is_copy(scores)
    rows.append({"copies": int(truth.sum()), "n": n,
                 "distinct copied": len(set(scores.nearest_index[truth].tolist()))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--ode-steps", type=int, default=24)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--exact-max-dim", type=int, default=0, help="exact divergence up to this dimension")
    parser.add_argument("--marginal-draws", type=int, default=0,
                        help="also measure conditional models' marginal p(x) = sum_c pi_c p(x|c) with this many draws")
    parser.add_argument("--only", default=None, help="comma-separated model indices (0..4) to measure")
    parser.add_argument("--rankers", action="store_true",
                        help="instead of the divergence: rankers and ranking metrics on 256 plain samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from side_bench.scoring.divergence import FlowLogDensity, MarginalOverLabels, UNetEps, memorization_divergence

    registry = load_registry()
    results = []
    only = None if args.only is None else {int(i) for i in args.only.split(",")}
    for number, (label, suite_name, attack, scale) in enumerate(MODELS):
        if only is not None and number not in only:
            continue
        target, data, labels, ctx, seconds = prepare(label, suite_name, attack, scale, registry)
        print(f"{label:12s} scale {scale:5d}: model ready in {seconds:.1f} s", flush=True)
        if args.prepare_only:
            continue
        if args.rankers:
            for row in ranker_table(target, data, ctx, registry):
                print(f"{label:12s} scale {scale:5d}: {row}", flush=True)
            continue
        flow = FlowLogDensity(UNetEps(target), sigma_start=args.eps, steps=args.ode_steps,
                              exact_max_dim=args.exact_max_dim, probes=args.probes, seed=args.seed)
        train_labels = labels.labels if labels is not None else None
        runs = [("per-label" if train_labels is not None else "marginal", flow, train_labels, args.draws)]
        if train_labels is not None and args.marginal_draws:
            priors = torch.bincount(train_labels, minlength=labels.num_classes).double() / len(train_labels)
            runs.append(("marginal", MarginalOverLabels(flow, priors), None, args.marginal_draws))
        for kind, density, run_labels, draws in runs:
            estimate = memorization_divergence(data.train, density, eps=args.eps, draws=draws, seed=args.seed,
                                               train_labels=run_labels)
            results.append({"model": label, "scale": scale, "p_theta": kind, "ode_steps": args.ode_steps,
                            "probes": args.probes, "exact_max_dim": args.exact_max_dim, **estimate.as_dict()})
            print(f"{label:12s} scale {scale:5d} {kind:9s}: M = {estimate.value:8.2f} +- {estimate.se:5.2f} nats "
                  f"per image ({estimate.value / estimate.dim:.4f} per dimension), {estimate.draws} draws, "
                  f"{estimate.seconds:.0f} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
