"""May training run in bf16? A test that separates the precision's effect from the seed's
(issue 32 part 2; the earlier check, benchmarks/precision_check.py, compared one bf16 model
with one fp32 model's interval, which cannot tell precision from seed).

    python benchmarks/bf16_training_check.py [--out results/bf16-training-check] [--workers 2]
    python benchmarks/bf16_training_check.py --smoke --out /tmp/check   # a toy run: no decision

Design. digits-power's model, data and N_G (4,096), at its two transition scales 64 and 96,
three seeds (1, 2, 3; a seed draws the training subset, the UNet's initial weights and the
training noise), UnCond and SIDE (lambda 0.3, the headline arm), both sampled in fp32 so only
the training differs. Each (scale, seed) is trained twice from the same start with the same
draws, once in fp32 and once under bf16 autocast (weights, optimizer, loss and EMA fp32):
12 models, 24 extractions. A pair shares everything but the precision, so the paired
difference is the precision's effect; the three fp32 models' spread is the seed's.

The rule, fixed before any run. For each of the 8 comparisons (2 scales x 2 attacks x 2
counts: copies, as the --by metric (AMS) counts them in the high band, and distinct training
images copied (UMS, high band)), with f_s and b_s the fp32 and bf16 counts of seed s:

    effect = mean over seeds of (b_s - f_s)
    spread = standard deviation over seeds of f_s (sample SD, 2 degrees of freedom)
    the comparison passes if |effect| <= max(spread / 2, 1 count)

bf16 training may become the CPU default only if all 8 pass: the precision moves no count
by more than half of what the choice of seed moves it (one count where the seeds agree
exactly). Otherwise training stays fp32. The per-seed paired differences and, for
information, each bf16 count against its fp32 twin's interval are printed too; they do not
enter the verdict.

Cost: 12 trainings of 1,500 steps and 24 extractions of 4,096 candidates (50 DDIM steps;
SIDE guided) on digits: about 1.5 hours at one thread on the 2-core CPU; --workers 2 runs the
fp32 half as two processes (the bf16 half runs in this process: the training precision is
set here, and spawned workers would not inherit it). Not run yet at full size.
--smoke: scales 16 and 32, N_G 64, 20 training steps, 5 DDIM steps, SIDE's surrogate and
classifier cut to toys (a few minutes): checks that the script runs end to end; its verdict is
marked as no decision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from precision_check import toml_value  # noqa: E402

SCALES, SEEDS, ATTACKS, COUNTS = [64, 96], [1, 2, 3], ("uncond", "side"), ("copies", "distinct")
HALF_SPREAD, FLOOR = 0.5, 1.0  # the rule's constants (see the docstring); never tuned after a run


def suite_text(name: str, smoke: bool) -> str:
    """digits-power cut to the check: its model and data, scales 64 and 96, seeds 1-3, UnCond
    and SIDE lambda 0.3, sampled in fp32 (the --smoke toy sizes when asked)."""
    raw = tomllib.loads((HERE / "digits-power.toml").read_text())
    first = {}
    for attack in raw["attacks"]:
        first.setdefault(attack["name"], attack)
    attacks = []
    for attack_name in ATTACKS:
        attack = {k: v for k, v in first[attack_name].items() if k not in ("seeds", "scales", "sweep")}
        settings = {**attack.get("extractor_settings", {}), "precision": "fp32"}
        if attack_name == "side":
            settings["guidance_scale"] = 0.3
        if smoke:
            settings["ddim_steps"] = 5
            if attack_name == "side":
                settings["classifier_steps"] = 10
                attack["condition_settings"] = {**attack["condition_settings"], "clusters": 4, "n_syn": 64}
        attacks.append({**attack, "extractor_settings": settings})
    model, dataset = dict(raw["model"]), dict(raw["dataset"])
    if smoke:
        model["steps"] = 20
        dataset["heldout"] = 64
    lines = [f"name = {json.dumps(name)}", f"description = {json.dumps('benchmarks/bf16_training_check.py')}",
             f"scales = {toml_value([16, 32] if smoke else SCALES)}", f"seeds = {toml_value(SEEDS)}",
             f"n_generations = {64 if smoke else raw['n_generations']}",
             f"metrics = {toml_value(['ams', 'ums'])}", f"features = {toml_value(raw['features'])}"]
    for table, values in (("dataset", dataset), ("model", model)):
        lines.append(f"\n[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    for attack in attacks:
        lines.append("\n[[attacks]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in attack.items()]
    return "\n".join(lines) + "\n"


def decide(table: dict) -> dict:
    """The rule on ``table[(scale, attack, count)] = ([f_s], [b_s])`` (counts by seed, in
    seed order): each comparison's effect, spread, threshold and pass; the verdict."""
    comparisons, failed = [], []
    for (scale, attack, count), (fp32, bf16) in sorted(table.items()):
        differences = [b - f for f, b in zip(fp32, bf16, strict=True)]
        effect = statistics.mean(differences)
        spread = statistics.stdev(fp32)
        threshold = max(HALF_SPREAD * spread, FLOOR)
        passed = abs(effect) <= threshold
        comparisons.append({"scale": scale, "attack": attack, "count": count, "fp32": fp32, "bf16": bf16,
                            "differences": differences, "effect": effect, "spread": spread,
                            "threshold": threshold, "passed": passed})
        if not passed:
            failed.append(f"{attack} @ {scale} {count}: effect {effect:+.2f} beyond {threshold:.2f} "
                          f"(seed spread {spread:.2f})")
    verdict = ("bf16 training moved no count by more than half the seed-to-seed spread: it may become the CPU default"
               if not failed else "keep fp32 training: " + "; ".join(failed))
    return {"comparisons": comparisons, "failed": failed, "passed": not failed, "verdict": verdict}


def seed_counts(run_dir: Path, by: str) -> dict:
    """{(scale, seed, attack, metric): {count, value, ci_low, ci_high}} of one run's rows
    (the high band: the copy criterion's)."""
    from side_bench.results.records import find_rows_files, read_rows_file

    found = {}
    for row in (r for f in find_rows_files([run_dir]) for r in read_rows_file(f)):
        if row["metric"] in (by, "ums") and row.get("band") in ("high", None):
            found[(row["scale"], row["seed"], row["attack"], row["metric"])] = {
                k: row.get(k) for k in ("count", "value", "ci_low", "ci_high")}
    return found


def collect(runs: dict, by: str, scales: list[int]) -> tuple[dict, list]:
    """The rule's table from the two runs' rows, and each bf16 count against its fp32 twin's
    interval (information only)."""
    found = {kind: seed_counts(run, by) for kind, run in runs.items()}
    table, intervals = {}, []
    for scale in scales:
        for attack in ATTACKS:
            for count, metric in (("copies", by), ("distinct", "ums")):
                pair = ([], [])
                for seed in SEEDS:
                    reference = found["fp32"][(scale, seed, attack, metric)]
                    value = found["bf16"][(scale, seed, attack, metric)]
                    pair[0].append(reference["count"])
                    pair[1].append(value["count"])
                    intervals.append({"scale": scale, "attack": attack, "count": count, "seed": seed,
                                      "bf16": value["count"], "fp32": reference["count"],
                                      "inside_fp32_interval": reference["ci_low"] <= value["value"] <= reference["ci_high"]})
                table[(scale, attack, count)] = pair
    return table, intervals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bf16-training-check")
    parser.add_argument("--workers", type=int, default=1, help="processes for the fp32 half")
    parser.add_argument("--by", default="ams", help="the metric whose copy criterion counts a copy")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the script runs; no decision")
    args = parser.parse_args(argv)
    import side_bench.sampling.diffusion as diffusion
    from side_bench import run_suite

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for precision in ("fp32", "bf16"):
        path = out / f"bf16-training-{precision}.toml"
        path.write_text(suite_text(f"bf16-training-{precision}", args.smoke))
        # The training precision is not a bench-unet setting (nor in the model cache key): set the
        # module default here, give each precision its own cache, and run bf16 in this process.
        diffusion.TRAINING_PRECISION = precision
        try:
            run_suite(str(path), results_dir=out / "results", cache_dir=out / f"cache-{precision}",
                      run_id=precision, workers=args.workers if precision == "fp32" else 1)
        finally:
            diffusion.TRAINING_PRECISION = "fp32"
        runs[precision] = out / "results" / f"bf16-training-{precision}" / precision
    table, intervals = collect(runs, args.by, [16, 32] if args.smoke else SCALES)
    decision = decide(table)
    for line in decision["comparisons"]:
        print(f"{line['attack']:6s} @ {line['scale']:3d} {line['count']:8s}: fp32 {line['fp32']}, bf16 {line['bf16']}, "
              f"effect {line['effect']:+.2f}, seed spread {line['spread']:.2f}, threshold {line['threshold']:.2f}: "
              f"{'pass' if line['passed'] else 'FAIL'}")
    verdict = decision["verdict"] if not args.smoke else "smoke run (toy sizes): no decision"
    print("verdict:", verdict)
    (out / "bf16-training-check.json").write_text(json.dumps(
        {"by": args.by, "scales": SCALES, "seeds": SEEDS, "smoke": args.smoke, "rule": {"half_spread": HALF_SPREAD,
         "floor_counts": FLOOR}, **decision, "verdict": verdict, "intervals": intervals}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
