#!/usr/bin/env bash
# One device call for RUM's own study on CIFAR-10 (configs/rum/cifar10-memorization.yaml): ResNet-9, clean data,
# forget sets of 1000 by memorization (confidence proxy: low / medium / high / mixed) and entanglement (low / high),
# CF and SalUn vanilla / RUM^F / full RUM / shuffle, ToW against the retrained model; one seed; then the report.
# The results come back as one archive under $OUT.
# GRID_ARGS adds overrides, e.g. a CPU smoke test (tiny recipe, tiny forget sets):
#   OUT=/tmp/o GRID_ARGS="recipe.steps=20 'forget_sets=[{by: confidence, level: high, size: 30}]'" bash benchmarks/gpu_rum.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/rum-c10}
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line
start=$(date +%s)
timeout "${GRID_SECONDS:-540}" python3 -m corrective_unlearning run configs/rum/cifar10-memorization.yaml \
  --out "$RESULTS" --quiet 'seeds=[0]' "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/grid.txt"
echo "grid wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/grid.txt"
python3 -m corrective_unlearning report "$RESULTS" 2>&1 | tail -40 | tee "$OUT/report.txt"
tar czf "$OUT/rum-c10.tgz" "$RESULTS"
