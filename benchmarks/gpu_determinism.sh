#!/usr/bin/env bash
# Run the gpu-determinism suite (or SUITE) twice on CUDA with empty caches and compare the rows:
# one suite and seed must give the same numbers (README, "On a GPU").
#   bash benchmarks/gpu_determinism.sh [DEVICE] [SUITE]      (python: $PYTHON, default python3)
set -euo pipefail
suite="${2:-gpu-determinism}"
python="${PYTHON:-python3}"
work=$(mktemp -d)
for run in a b; do
  start=$(date +%s.%N)
  SIDE_BENCH_WORKERS=1 "$python" -m side_bench run --suite "$suite" --device "${1:-cuda}" --results "$work/$run" \
    --cache-dir "$work/cache-$run" >/dev/null
  echo "run $run cold: $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
done
"$python" - "$work"/a/*/run-*/rows.jsonl "$work"/b/*/run-*/rows.jsonl <<'PY'
import json, sys
def load(path):
    return {(r["attack"], r["scale"], r["metric"], r.get("band")): (r["value"], r.get("count"), r["null_value"])
            for r in map(json.loads, open(path))}
a, b = load(sys.argv[1]), load(sys.argv[2])
differ = [key for key in a if a[key] != b.get(key)]
print(f"{len(a) - len(differ)} of {len(a)} rows identical")
for key in differ:
    print("differs:", key, a[key], b.get(key))
sys.exit(1 if differ or len(a) != len(b) else 0)
PY
