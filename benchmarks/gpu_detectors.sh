#!/usr/bin/env bash
# Finding the rest against the field's poison detectors on CIFAR-10 / ResNet-9 in one GPU call (at most 9 minutes):
# benchmarks/detectors.py on configs/detectors/cifar10.yaml (8 trigger attacks, interclass, random labels,
# class-dependent label noise; seed 0) at 1% and 10% discovery: AUROC, recall at K = |S_m \ S_f|, k auto's K and F1,
# seconds per ranking. Each manipulation's rows are written as soon as it finishes (results.json and the tables in
# $OUT/detectors-c10.md), so a call cut by DETECTORS_SECONDS (530) keeps what it finished; the manipulations are in
# priority order. The healing comparison (expand auto vs 0) is not in this call: it does not fit the 9 minutes.
#   bash benchmarks/gpu_detectors.sh            # prints the tables; also $OUT/detectors-c10.{txt,md,tgz}
# CPU smoke test, run before the commit (no CIFAR-10 files on that machine: the synthetic dataset with ResNet-9,
# 1 thread, under heavy load): 3 manipulations in 206 s, every ranking and table printed:
#   OUT=/tmp/o RESULTS=/tmp/det STRIP_N=2 DETECTORS_SECONDS=900 EXTRA="--only 0,1,4 --rates 0.1 --n 60" \
#   GRID_ARGS="dataset.name=synthetic recipe.steps=5" bash benchmarks/gpu_detectors.sh
# Not run on a GPU (none was lent to this task): the 9-minute budget is an estimate (11 ResNet-9 originals ~25 s
# each, one forward pass + STRIP 16 blends per sample on the GPU, the CPU-side rankings ~60 s per manipulation).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/detectors-c10}
mkdir -p "$OUT"
eval "extra=(${EXTRA:-})"          # benchmark flags (shell words), e.g. --only 0,1 --rates 0.1
eval "grid=(${GRID_ARGS:-})"       # grid overrides (shell words), e.g. recipe.steps=5
start=$(date +%s)
timeout "${DETECTORS_SECONDS:-530}" python3 benchmarks/detectors.py --config configs/detectors/cifar10.yaml \
  --out "$RESULTS" --doc "$OUT/detectors-c10.md" --strip-n "${STRIP_N:-16}" "${extra[@]}" "${grid[@]}" 2>&1 \
  | grep -v Warning | tee "$OUT/detectors-c10.txt"
echo "wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/detectors-c10.txt"
tar czf "$OUT/detectors-c10.tgz" "$RESULTS" 2>/dev/null || true
