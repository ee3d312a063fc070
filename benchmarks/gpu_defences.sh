#!/usr/bin/env bash
# The clean-data defences (FT, NAD, ANP, I-BAU) beside corrective unlearning on CIFAR-10 / ResNet-9
# (configs/defences/cifar10.yaml: BadNets + blend, n = 500, seed 0, defences at 0% discovery with BackdoorBench's
# defaults, REM / SSD / EU + 500 suspects / REM then FT at 10%) in one device call of at most 9 minutes, then the
# report's "Defences beside corrective unlearning" tables.
#   bash benchmarks/gpu_defences.sh          # prints the tables; $OUT/defences-c10.txt and the results archive
# The grid stops after GRID_SECONDS (500) and resumes on the next call with the same RESULTS (carry it, or keep the
# machine warm); the report covers what finished. Not yet run on a GPU (none was lent when it was written).
# CPU smoke test, run before the commit on the shared 2-core CPU (load ~12), with the small CNN in place of
# ResNet-9 (ResNet-9's evaluation of 20,000 test images does not fit on that CPU; tests/test_defences.py runs every
# defence on ResNet-9 and a wide ResNet): 7 cells and the report's defence tables printed, in 377 s:
#   OUT=/tmp/o RESULTS=/tmp/defences-smoke PYTHON=.venv/bin/python CORRECTIVE_DATA_DIR=<folder of cifar10-jpeg.npz>
#   GRID_SECONDS=1500 GRID_ARGS="model=small_cnn recipe.steps=3 dataset.val_size=200 'manipulations=[{name: poison,
#   sizes: [500], params: {target: 0}}]' 'methods={ft_clean: {params: {steps: 2}}, nad: {params: {steps: 2,
#   teacher_steps: 1}}, anp: {params: {iterations: 2}}, i-bau: {params: {rounds: 1, K: 1}}, ft_after: {params:
#   {first: rem, first_params: {lr: 0.005, steps: 2, max_flush_passes: 1, retain_eval: 200}, steps: 2}}, ssd:
#   {params: {alpha_scale: relative, importance_samples: 64}, grid: {alpha: [20], lambda_ratio: [0.1]}}}'"
#   bash benchmarks/gpu_defences.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/defences-c10}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line
start=$(date +%s)
timeout "${GRID_SECONDS:-500}" "$PYTHON" -m corrective_unlearning run configs/defences/cifar10.yaml --out "$RESULTS" \
  --quiet "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/defences-c10.txt"
echo "grid wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/defences-c10.txt"
"$PYTHON" -m corrective_unlearning report "$RESULTS" >/dev/null 2>&1
sed -n '/^## Defences beside corrective unlearning/,/^## [^D]/{/^## [^D]/!p}' "$RESULTS/report/summary.md" \
  | tee -a "$OUT/defences-c10.txt"
tar czf "$OUT/defences-c10.tgz" "$RESULTS"
