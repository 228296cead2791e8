#!/usr/bin/env bash
# Regenerate every published leaderboard page (and the site index beside them) from the
# committed run folders: the commands at the top of each study's page in docs/findings/.
# No run is recomputed. Usage: bash results/publish.sh  (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
page() {  # page SUITE [+COMPANION_SUITE ...] [leaderboard options...]
  local suite=$1; shift
  local folders=("results/$suite")
  while [[ $# -gt 0 && $1 == +* ]]; do folders+=("results/${1#+}"); shift; done  # companion suites on the same models
  side-bench leaderboard "${folders[@]}" "$@" --format md --format html --out "results/published/$suite"
}
page digits-scales
page digits-power +digits-power-cost --headline gu-ratio  # UnCond at 12,288: the equal-cost reference
page digits-power-bound
page digits-power-side
page digits-canaries --headline canary-recall
page digits-finetune --headline gu-ratio
