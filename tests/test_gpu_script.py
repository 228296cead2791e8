"""benchmarks/gpu/run.sh, the GPU path in one call, in its CPU dry mode (--device cpu --tiny):
every step runs at toy sizes (the quickstart's shape cold, determinism, the k-NN, UNet training
and sampling eager and compiled), and throughput.json and summary.json come out whole, without
passing toy numbers off as measurements. On a loaded 2-core machine about a minute, idle ~35 s."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from side_bench.run.dryrun import unet_rate

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_script_runs_every_step_in_its_cpu_dry_mode(tmp_path):
    published = ROOT / "benchmarks" / "throughput.json"
    before = hashlib.sha256(published.read_bytes()).hexdigest()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SIDE_BENCH_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), "--device", "cpu", "--tiny",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "installed" not in result.stdout  # side-bench imports here: nothing to install

    summary = json.loads((out / "summary.json").read_text())
    assert summary["quickstart_cold"]["ok"] and summary["quickstart_cold"]["target_met"] is None  # toy: no target
    assert summary["determinism"]["identical"]
    assert re.fullmatch(r"(\d+) of \1 rows identical", summary["determinism"]["summary"])
    # the exact k-NN finds every planted near-copy of a training image (a tenth of the queries)
    assert summary["knn"]["copies"] > 0 and summary["knn"]["near_copies_found"] == summary["knn"]["copies"]
    assert summary["graphs_identical_to_eager"] == [True]  # CUDA graphs' mode: eager's images bit for bit
    assert summary["unet_errors"] == [] and summary["unet_skipped"] == []
    unet = json.loads((out / "unet.json").read_text())
    assert {(i["what"], i["unet"], i["precision"]) for i in unet["items"]} >= {
        ("sample", "celeba-64", "fp32"), ("sample", "celeba-64", "bf16"), ("train", "celeba-128", "bf16")}
    assert all(i["image_steps_per_second"] > 0 and 0 < i["fraction_of_peak"] for i in unet["items"])

    # throughput.json: the dry run reads it; toy numbers are never marked as measured, and the
    # repository's own file is left alone
    constants = json.loads((out / "throughput.json").read_text())
    rate, how = unet_rate(constants, "cpu", 8)
    assert rate == constants["devices"]["cpu"]["image_steps_per_second"]["8"]["value"] > 0
    assert how == "not measured: extrapolated or assumed"
    assert constants["devices"]["cuda"] == json.loads(published.read_text())["devices"]["cuda"]
    assert hashlib.sha256(published.read_bytes()).hexdigest() == before
