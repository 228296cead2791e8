#!/usr/bin/env bash
# Run the gpu-determinism suite twice on CUDA with empty caches and compare the rows:
# one suite and seed must give the same numbers (README, "On a GPU").
set -euo pipefail
work=$(mktemp -d)
for run in a b; do
  side-bench run --suite gpu-determinism --device "${1:-cuda}" --results "$work/$run" --cache-dir "$work/cache-$run" >/dev/null
done
python3 - "$work"/a/gpu-determinism/run-*/rows.jsonl "$work"/b/gpu-determinism/run-*/rows.jsonl <<'PY'
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
