"""benchmarks/gpu_check.sh's results -> throughput.json's entries for the device, as measured,
and a summary against the GPU targets.

    python benchmarks/gpu/throughput.py --device cuda --results DIR [--tiny]

Reads DIR/quickstart.json, determinism.json and .log, knn.json and unet.json (what finished);
writes DIR/throughput.json (benchmarks/throughput.json with the device kind's entries replaced
by the measured ones: copy it over the repository's file to publish them) and DIR/summary.json,
and prints the summary. An entry that was not measured (a step skipped or failed) keeps the
old value, marked as such. With --tiny (toy sizes, the dry mode) every entry says
``"measured": false``: those numbers are of toy models and must never replace real ones.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"quickstart_cold_seconds": 20.0, "celeba_bf16_fraction_of_peak": 0.40}


def read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # the step did not finish: no file, or half of one
        return None


def determinism(results: Path) -> dict | None:
    found = read(results / "determinism.json")
    if found is None:
        return None
    log = (results / "determinism.log").read_text() if (results / "determinism.log").exists() else ""
    summary = re.search(r"(\d+) of (\d+) rows identical", log)
    cold = [float(s) for s in re.findall(r"run [ab] cold: ([\d.]+) s", log)]
    return {**found, "identical": found["exit"] == 0 and bool(summary) and summary.group(1) == summary.group(2),
            "summary": summary.group(0) if summary else None, "cold_seconds": cold}


def device_entries(unet: dict, old: dict, label: str, source: str, today: str, tiny: bool) -> dict:
    """The device's entry of throughput.json from unet_throughput.py's items (old values kept
    where an item is missing, marked not measured in this run)."""
    items = [item for item in unet.get("items", []) if "error" not in item]
    entry = {"label": label, "matmul_gflops": dict(old.get("matmul_gflops", {})),
             "image_steps_per_second": {k: dict(v) for k, v in old.get("image_steps_per_second", {}).items()}}
    if tiny:
        entry["image_steps_per_second"] = {}
    peaks = unet.get("peak_tflops") or {}
    if "fp32" in peaks:
        entry["matmul_gflops"] = {"value": round(peaks["fp32"] * 1e3, 1), "bf16": round(peaks.get("bf16", 0) * 1e3, 1),
                                  "measured": not tiny, "date": today,
                                  "source": f"{source}: square fp32 and bf16 matmuls, the best of 5"}
    for size in sorted({item["size"] for item in items}):
        here = [item for item in items if item["size"] == size]
        eager = next((i for i in here if i["what"] == "sample" and i["precision"] == "fp32" and i["compile"] == "none"),
                     None)
        if eager is None:
            continue
        variants = {f"{i['precision']}{'' if i['compile'] == 'none' else ' ' + i['compile']}": i["image_steps_per_second"]
                    for i in here if i["what"] == "sample"}
        training = {f"{i['precision']}{'' if i['compile'] == 'none' else ' ' + i['compile']}": i["image_steps_per_second"]
                    for i in here if i["what"] == "train"}
        entry["image_steps_per_second"][str(size)] = {
            "value": eager["image_steps_per_second"], "measured": not tiny, "date": today, "precision": "fp32",
            "source": f"{source}: {eager['unet']} UNet, ddim_sample at batch {eager['batch']}, "
                      f"{eager['ddim_steps']} steps timed" + (" (toy sizes: --tiny)" if tiny else ""),
            "sampling_by_precision": variants, "training_images_per_second": training,
            "fraction_of_peak": {f"{i['what']} {i['precision']} {i['compile']}": i["fraction_of_peak"] for i in here},
        }
    for value in entry["image_steps_per_second"].values():
        if value.get("date") != today:
            value["not_measured_on"] = f"{today}: not measured in this run (skipped or failed: see unet.json)"
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--results", required=True)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args(argv)
    results = Path(args.results)
    from side_bench.machine import describe

    described = describe(args.device)
    kind = described["type"]
    today = datetime.date.today().isoformat()
    source = "benchmarks/gpu/run.sh" + (" --tiny" if args.tiny else "") + f" on {described['model']}"
    constants = json.loads((ROOT / "benchmarks" / "throughput.json").read_text())
    unet = read(results / "unet.json") or {"items": []}
    constants["devices"][kind] = device_entries(unet, constants["devices"].get(kind, {}),
                                                f"one {described['model']}" if kind == "cuda" else described["model"],
                                                source, today, args.tiny)
    (results / "throughput.json").write_text(json.dumps(constants, indent=2) + "\n")

    quickstart = read(results / "quickstart.json")
    knn = read(results / "knn.json")
    celeba_bf16 = [i["fraction_of_peak"] for i in unet.get("items", [])
                   if i["unet"] == "celeba-64" and i["precision"] == "bf16" and "fraction_of_peak" in i]
    summary = {
        "device": described, "date": today, "tiny": args.tiny,
        "quickstart_cold": quickstart and {**quickstart, "ok": quickstart["exit"] == 0,
                                           "target_met": None if args.tiny else quickstart["exit"] == 0
                                           and quickstart["seconds"] <= TARGETS["quickstart_cold_seconds"]},
        "determinism": determinism(results),
        "knn": knn,
        "celeba_64_bf16_best_fraction_of_peak": max(celeba_bf16) if celeba_bf16 else None,
        "celeba_target_met": None if args.tiny  # toy UNets: no target applies
        else bool(celeba_bf16) and max(celeba_bf16) >= TARGETS["celeba_bf16_fraction_of_peak"],
        "unet_items": len(unet.get("items", [])), "unet_errors": [i for i in unet.get("items", []) if "error" in i],
        "unet_skipped": unet.get("skipped", []), "graphs_identical_to_eager": [
            i.get("identical_to_eager") for i in unet.get("items", []) if i.get("compile") == "graphs"],
        "targets": TARGETS,
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "device"}, indent=1, default=str))
    print(f"written: {results / 'throughput.json'} (devices.{kind}) and {results / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
