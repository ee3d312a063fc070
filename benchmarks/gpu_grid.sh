#!/usr/bin/env bash
# One device call for the paper-1 check: CIFAR-10 poison, n = 500, rates 0.1/0.5/1.0, one seed, every method
# with its paper grid; then the report. The results come back as one archive under $OUT.
# GRID_ARGS adds overrides, e.g. a CPU smoke test:
#   OUT=/tmp/o GRID_ARGS="recipe.steps=20 'methods={cf: {grid: {last_k: [all]}, params: {steps: 5}}}'" bash benchmarks/gpu_grid.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line
start=$(date +%s)
timeout "${GRID_SECONDS:-540}" python3 -m corrective_unlearning run configs/paper1/cifar10-poison.yaml \
  --out results/c10-poison-quick --quiet 'manipulations=[{name: poison, sizes: [500]}]' 'rates=[0.1, 0.5, 1.0]' \
  'seeds=[0]' "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/grid.txt"
echo "grid wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/grid.txt"
python3 -m corrective_unlearning report results/c10-poison-quick 2>&1 | tail -30
tar czf "$OUT/c10-poison-quick.tgz" results/c10-poison-quick
