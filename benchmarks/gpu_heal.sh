#!/usr/bin/env bash
# Healing what nothing healed, on CIFAR-10 / ResNet-9 (configs/heal/cifar10.yaml: eight triggers, n = 500, discovery
# 1 / 10 / 50%, trigger synthesis beside REM and NPO) in one device call of at most 9 minutes, then the attack x
# variant tables and the goal at 10% (benchmarks/heal.py).
#   bash benchmarks/gpu_heal.sh          # prints the tables; $OUT/heal-c10.txt and the results archive
# The grid stops after GRID_SECONDS (480) and resumes on the next call with the same RESULTS (carry it, or keep the
# machine warm); the tables cover what finished. Not yet run on a GPU (none was lent when it was written).
# CPU smoke test (small CNN for ResNet-9, tiny budgets), run before the commit on the shared 2-core CPU beside a
# benchmark: 3 cells in 91 s, then the tables and the goal table printed (numbers meaningless at 20 training steps):
#   OUT=/tmp/o RESULTS=/tmp/heal-smoke PYTHON=.venv/bin/python CORRECTIVE_DATA_DIR=<folder of cifar10-jpeg.npz>
#   GRID_SECONDS=900 GRID_ARGS="model=small_cnn recipe.steps=20 dataset.val_size=500 rates=[0.1]
#   'manipulations=[{name: poison, sizes: [500], params: {target: 0}}]' 'methods={trigger_synthesis: {params:
#   {steps: 10, synth_steps: 5}}, npo: {grid: {lr: [0.005]}, params: {steps: 5}}}'" bash benchmarks/gpu_heal.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/heal-c10}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line
start=$(date +%s)
timeout "${GRID_SECONDS:-480}" "$PYTHON" -m corrective_unlearning run configs/heal/cifar10.yaml --out "$RESULTS" \
  --quiet "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/heal-c10.txt"
echo "grid wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/heal-c10.txt"
"$PYTHON" benchmarks/heal.py "$RESULTS" 2>&1 | tee -a "$OUT/heal-c10.txt"
tar czf "$OUT/heal-c10.tgz" "$RESULTS"
