"""Does bf16 move a copy count? The measurement behind the training and sampling precision
default (issue 21 item 1).

    python benchmarks/precision_check.py [--out results/precision-check] [--workers 2]
    python benchmarks/precision_check.py --compile reduce-overhead --sampling-only   # the compiled bf16 path

digits-power's model, data and N_G (4,096) at scales 64 and 96, seed 1 (the seed the suite's
settings were chosen on), UnCond and SIDE (lambda 0.3, the headline arm), run three ways:

- fp32: trained and sampled in fp32 (today's default);
- bf16 sampling: the same fp32 model, the UNet forward under bf16 autocast (guidance in fp32):
  same target model, so `side_bench.compare_attacks` gives the training images kept, lost and
  gained, with its tests;
- bf16: trained in bf16 too (its own cache: the model cache key does not hold the training
  precision) and sampled in bf16: another model, so its counts are compared with fp32's
  intervals.

--compile MODE runs the bf16-sampled arms with that ``compile`` setting ("reduce-overhead": the
whole UNet cast to bf16 and compiled by inductor, the fast path of issue 32); --sampling-only
leaves out the bf16-trained model (a sampling decision needs only the same-model comparison);
--scales and --n-generations make a smaller check (the output says so; the verdict then holds
for that size only).

Verdict (the issue's rule): bf16 may become the CPU default only if no count (copies and
distinct training images copied, per the --by metric's copy criterion, every scale and attack)
moves beyond its fp32 interval. Prints the table and the verdict; writes <out>/precision.json.
Cost: 2 scales x 2 models x 4 attacks of N_G 4,096 on digits: about 20-30 minutes at one thread
on the 2-core CPU (less with --workers 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
SCALES, SEED = [64, 96], 1


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def suite_text(name: str, sampling: str, compile: str = "none", scales: list[int] | None = None,
               n_generations: int | None = None) -> str:
    """digits-power cut to the check: scales 64 and 96, seed 1, UnCond and SIDE lambda 0.3, each
    also with bf16 sampling when ``sampling`` is "both" (only bf16 when "bf16"); the bf16 arms
    with ``compile`` (left out of the settings at "none", so their cells keep their hashes)."""
    raw = tomllib.loads((HERE / "digits-power.toml").read_text())
    first = {}
    for attack in raw["attacks"]:
        first.setdefault(attack["name"], attack)
    uncond, side = dict(first["uncond"]), dict(first["side"])
    side.pop("sweep", None)
    side["extractor_settings"] = {**side.get("extractor_settings", {}), "guidance_scale": 0.3}
    attacks = []
    for attack in (uncond, side):
        base = {k: v for k, v in attack.items() if k not in ("seeds", "scales")}
        variants = {"both": [("", "fp32"), ("-bf16", "bf16")], "bf16": [("", "bf16")]}[sampling]
        for suffix, precision in variants:
            settings = {**base.get("extractor_settings", {}), "precision": precision}
            if precision != "fp32" and compile != "none":
                settings["compile"] = compile
            attacks.append({**base, "name": base["name"] + suffix, "extractor_settings": settings})
    lines = [f"name = {json.dumps(name)}", f"description = {json.dumps('benchmarks/precision_check.py')}",
             f"scales = {toml_value(scales or SCALES)}", f"seeds = [{SEED}]",
             f"n_generations = {toml_value(n_generations or raw['n_generations'])}"]
    for key in ("metrics", "features"):
        lines.append(f"{key} = {toml_value(raw[key])}")
    for table in ("dataset", "model"):
        lines.append(f"\n[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in raw[table].items()]
    for attack in attacks:
        lines.append("\n[[attacks]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in attack.items()]
    return "\n".join(lines) + "\n"


def counts(run_dir: Path, attack: str, by: str) -> dict:
    """{scale: (copies, distinct) with their intervals} of one attack, from the run's rows."""
    from side_bench.results.records import find_rows_files, read_rows_file

    found = {}
    for row in (r for f in find_rows_files([run_dir]) for r in read_rows_file(f)):
        if row["attack"] == attack and row["metric"] in (by, "ums") and row.get("band") in ("high", None):
            found.setdefault(row["scale"], {})[row["metric"]] = {
                k: row.get(k) for k in ("count", "value", "ci_low", "ci_high", "n")}
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/precision-check")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--by", default="ams", help="the metric whose copy criterion counts a copy (compare --by)")
    parser.add_argument("--compile", default="none", help="the bf16-sampled arms' compile setting")
    parser.add_argument("--sampling-only", action="store_true", help="leave out the bf16-trained model")
    parser.add_argument("--scales", default=None, help=f"comma-separated (default {','.join(map(str, SCALES))})")
    parser.add_argument("--n-generations", type=int, default=None, help="default: digits-power's 4,096")
    args = parser.parse_args(argv)
    scales = [int(v) for v in args.scales.split(",")] if args.scales else None
    import side_bench.sampling.diffusion as diffusion
    from side_bench import compare_attacks, run_suite

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    kinds = (("fp32", "both", "fp32"), ("bf16", "bf16", "bf16"))[:1 if args.sampling_only else 2]
    for kind, sampling, training in kinds:
        path = out / f"precision-{kind}.toml"
        path.write_text(suite_text(f"precision-{kind}", sampling, args.compile, scales, args.n_generations))
        # The training precision is not a bench-unet setting yet: set the module default in this
        # process (and its spawned workers inherit nothing, so bf16 training runs with one worker).
        diffusion.TRAINING_PRECISION = training
        run_suite(str(path), results_dir=out / "results", cache_dir=out / f"cache-{kind}", run_id=kind,
                  workers=args.workers if training == "fp32" else 1)
        runs[kind] = out / "results" / f"precision-{kind}" / kind
    diffusion.TRAINING_PRECISION = "fp32"
    report, moved = [], []
    for attack in ("uncond", "side"):
        same_model = compare_attacks(runs["fp32"], attack, f"{attack}-bf16", by=args.by)
        fp32, bf16_sampled = counts(runs["fp32"], attack, args.by), counts(runs["fp32"], f"{attack}-bf16", args.by)
        bf16 = counts(runs["bf16"], attack, args.by) if "bf16" in runs else {}
        for line in same_model.to_dict("records"):
            scale = line["scale"]
            entry = {"attack": attack, "scale": scale, "kept": line["both"], "lost": line["only_a"],
                     "gained": line["only_b"], "p_copies": line["p_copies"], "p_distinct": line["p_distinct"],
                     "fp32": fp32.get(scale), "bf16_sampling": bf16_sampled.get(scale), "bf16": bf16.get(scale)}
            for variant in ("bf16_sampling", "bf16"):
                for metric, value in (entry[variant] or {}).items():
                    reference = (entry["fp32"] or {}).get(metric)
                    if reference and not reference["ci_low"] <= value["value"] <= reference["ci_high"]:
                        moved.append(f"{attack} @ {scale} {variant} {metric}: {value['value']:.4f} outside fp32's "
                                     f"[{reference['ci_low']:.4f}, {reference['ci_high']:.4f}]")
            report.append(entry)
    def show(entry, part):
        return ", ".join(f"{m} {v['value']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}]"
                         for m, v in (entry[part] or {}).items())

    for entry in report:
        print(f"{entry['attack']} @ {entry['scale']}: fp32 {show(entry, 'fp32')}; bf16 sampling "
              f"{show(entry, 'bf16_sampling')}; bf16 {show(entry, 'bf16')}; same model kept {entry['kept']}, lost {entry['lost']}, gained "
              f"{entry['gained']} (p copies {entry['p_copies']:.3g}, p distinct {entry['p_distinct']:.3g})")
    verdict = ("bf16 moved no count beyond its fp32 interval: it may become the CPU default"
               if not moved else "keep fp32: " + "; ".join(moved))
    size = {"scales": scales or SCALES, "n_generations": args.n_generations or "digits-power's",
            "compile": args.compile, "sampling_only": args.sampling_only}
    if scales or args.n_generations:
        verdict = f"(a smaller check: {size}; it holds for that size only) " + verdict
    print("verdict:", verdict)
    (out / "precision.json").write_text(json.dumps({"by": args.by, **size, "seed": SEED,
                                                    "report": report, "moved": moved, "verdict": verdict},
                                                   indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
