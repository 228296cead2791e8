#!/usr/bin/env bash
# The GPU measurements of issues 21 and 32, in one run (benchmarks/gpu/run.sh runs it after
# installing the wheels a GPU machine lacks, then writes throughput.json from its results):
#   1. the quickstart cold (fresh cache, one process), target 20 s;
#   2. benchmarks/gpu_determinism.sh: the gpu-determinism suite twice, identical rows;
#   3. the k-NN of celeba-scales' full scale: 5,120 candidates x 182,637 x 12,288
#      (benchmarks/knn_celeba.py; faiss-gpu where installed, the torch search otherwise);
#   4. benchmarks/gpu/unet_throughput.py: training and sampling image-steps/s of the quickstart
#      UNet (8 px; eager, CUDA graphs, inductor) and celeba-scales' UNet at 64 and 128 px (fp32,
#      bf16, inductor-compiled bf16), each with its fraction of the card's matmul peak.
# Usage: bash benchmarks/gpu_check.sh [DEVICE] [--tiny]     (DEVICE: cuda, the default, or cpu)
#   --tiny: toy sizes (benchmarks/gpu/tiny.toml for 1 and 2, a small k-NN and UNets): the dry
#   mode that runs every step on a CPU in seconds (CI runs it through run.sh).
# Results go to $OUT (default: a temporary folder): quickstart.json, determinism.log and .json,
# knn.json, unet.json. Each step has a time limit, all together $BUDGET seconds (default 450:
# with the install, under 8 minutes); a step past its limit is stopped and said so, the next
# one runs. Python: $PYTHON (default python3).
set -uo pipefail
device=cuda
tiny=""
for argument in "$@"; do
  case "$argument" in
    --tiny) tiny=1 ;;
    -*) echo "gpu_check.sh: unknown option $argument (expected --tiny)" >&2; exit 2 ;;
    *) device="$argument" ;;
  esac
done
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
work=$(mktemp -d)
out="${OUT:-$work}"
mkdir -p "$out"
budget="${BUDGET:-450}"
started=$(date +%s.%N)
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
left() { awk -v b="$budget" -v u="$(elapsed "$started")" -v c="$1" 'BEGIN { l = b - u; printf "%d", (l < c ? l : c) }'; }
if [ -n "$tiny" ]; then
  quickstart="$here/gpu/tiny.toml"; determinism="$here/gpu/tiny.toml"; knn_options=(--fraction 0.005); unet_options=(--tiny)
else
  quickstart=quickstart; determinism=gpu-determinism; knn_options=(); unet_options=()
fi
"$python" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"

echo "== 1. quickstart cold (target 20 s)"
limit=$(left 100)
start=$(date +%s.%N)
SIDE_BENCH_WORKERS=1 timeout "$limit" "$python" -m side_bench run --suite "$quickstart" --device "$device" \
  --results "$work/quickstart" --cache-dir "$work/cache-quickstart" >"$out/quickstart.log" 2>&1
status=$?
seconds=$(elapsed "$start")
printf '{"suite": "%s", "seconds": %s, "exit": %d, "limit": %d}\n' "$(basename "$quickstart" .toml)" "$seconds" \
  "$status" "$limit" >"$out/quickstart.json"
[ $status -eq 0 ] && echo "quickstart cold: $seconds s" || echo "quickstart: FAILED or over $limit s (exit $status; $out/quickstart.log)"

echo "== 2. determinism (benchmarks/gpu_determinism.sh)"
limit=$(left 90)
PYTHON="$python" timeout "$limit" bash "$here/gpu_determinism.sh" "$device" "$determinism" >"$out/determinism.log" 2>&1
status=$?
cat "$out/determinism.log"
printf '{"suite": "%s", "exit": %d, "limit": %d}\n' "$(basename "$determinism" .toml)" "$status" "$limit" \
  >"$out/determinism.json"
[ $status -eq 0 ] || echo "determinism: FAILED, rows differ, or over $limit s (exit $status)"

echo "== 3. k-NN of celeba-scales' full scale (benchmarks/knn_celeba.py)"
limit=$(left 70)
timeout "$limit" "$python" "$here/knn_celeba.py" --device "$device" --backend auto "${knn_options[@]}" \
  >"$out/knn.json" 2>"$out/knn.log"
status=$?
cat "$out/knn.json"
[ $status -eq 0 ] || { echo "k-NN: FAILED or over $limit s (exit $status; $out/knn.log)"; rm -f "$out/knn.json"; }

echo "== 4. UNet throughput (benchmarks/gpu/unet_throughput.py)"
limit=$(left 100000)
timeout "$limit" "$python" "$here/gpu/unet_throughput.py" --device "$device" --out "$out/unet.json" \
  --deadline "$((limit > 15 ? limit - 10 : limit))" "${unet_options[@]}" 2>"$out/unet.log"
status=$?
[ $status -eq 0 ] || echo "UNet throughput: FAILED or over $limit s (exit $status; $out/unet.log; what finished is in unet.json)"
echo "gpu_check: $(elapsed "$started") s of a budget of $budget s; results in $out"
