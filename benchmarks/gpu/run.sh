#!/usr/bin/env bash
# The GPU path in one call, on a machine with PyTorch and CUDA but no network:
#
#   bash benchmarks/gpu/run.sh --download                 # first, here (with network): the wheels
#                                                         # of benchmarks/gpu/wheels.txt into .gpu-wheels/
#   bash benchmarks/gpu/run.sh [--out DIR] [--budget S]   # there: carry .gpu-wheels; results in DIR ($OUT)
#   bash benchmarks/gpu/run.sh --device cpu --tiny        # the dry mode, every step at toy sizes (CI)
#
# 1. installs the carried wheels (and side-bench itself, built offline) into a folder on
#    PYTHONPATH, unless side-bench and its dependencies import already;
# 2. runs benchmarks/gpu_check.sh: the quickstart cold, determinism, the full-scale k-NN
#    (faiss-gpu where installed, torch otherwise), celeba-scales' UNet training and sampling
#    throughput at 64 and 128 px (fp32, bf16, compiled) and the quickstart UNet's (eager, CUDA
#    graphs, inductor), within --budget seconds (default 450: under 8 minutes in all);
# 3. benchmarks/gpu/throughput.py: DIR/throughput.json, benchmarks/throughput.json with the
#    device's entries replaced by what was measured (copy it over the repository's file to
#    publish them), and DIR/summary.json with the targets (quickstart cold <= 20 s, identical
#    rows, the celeba UNet at >= 40% of the card's bf16 peak).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"
device=cuda
tiny=""
out="${OUT:-}"
budget=450
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --tiny) tiny=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --download)
      # one version of each, for the GPU machine's Python 3.12 on x86-64; no dependencies resolved
      exec "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$root/.gpu-wheels" -r "$root/benchmarks/gpu/wheels.txt" ;;
    *) echo "run.sh: unknown argument $1 (expected --device D, --tiny, --out DIR, --budget S or --download)" >&2
       exit 2 ;;
  esac
done
started=$(date +%s.%N)
[ -n "$out" ] || out=$(mktemp -d)
mkdir -p "$out"

if ! "$python" -c "import side_bench, side_bench_builtins, diffusers, jsonschema, pluggy" 2>/dev/null; then
  wheels="${WHEELS:-$root/.gpu-wheels}"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "run.sh: side-bench does not import here and $wheels has no wheels: run 'bash benchmarks/gpu/run.sh" \
         "--download' on a machine with network and carry .gpu-wheels" >&2
    exit 2
  fi
  site=/tmp/side-bench-site
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  # side-bench itself (its entry points register the built-in plugins), built with the carried hatchling
  "$python" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target "$site" \
    "$root" || exit 2
  echo "installed $(ls "$wheels"/*.whl | wc -l) wheels and side-bench into $site"
fi

"$python" -c "import json, side_bench.machine as m; print('device:', json.dumps(m.describe('$device')))" || exit 2
OUT="$out" BUDGET="$budget" PYTHON="$python" bash "$root/benchmarks/gpu_check.sh" "$device" ${tiny:+--tiny}
"$python" "$root/benchmarks/gpu/throughput.py" --device "$device" --results "$out" ${tiny:+--tiny}
status=$?
echo "run.sh: $(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s in all; results in $out"
exit $status
