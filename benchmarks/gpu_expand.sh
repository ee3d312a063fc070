#!/usr/bin/env bash
# Finding the rest on CIFAR-10 (configs/rem/cifar10.yaml: ResNet-9, poison / interclass / random labels, n = 1000
# each) at 10% discovery, one seed, in one device call: benchmarks/expand.py's two parts, (1) precision@K and
# recall@K of every suspects ranking for K in {100, 200, 500, 1000}, (2) SSD (4 relative settings), Potion and EU
# healing without and with the top-500 combined suspects added to S_f.
#   bash benchmarks/gpu_expand.sh                 # prints the tables; also $OUT/expand-c10.txt and the results
# Estimated ~8 minutes on one H100 (not measured: no GPU was lent when it was written): 3 originals (~25 s each),
# 3 rankings (one forward pass + a 5-fold logistic-regression probe on 47,500 x 128 embeddings on the CPU,
# ~30 s each; the grid reuses them), 6 deletion sets x (SSD ~2 s + Potion ~10 s + EU 4000 steps ~20 s). The grid
# resumes, so a call cut by EXPAND_SECONDS (560) finishes on the next call with the same RESULTS.
# CPU smoke test, run before the commit (1 thread, CORRECTIVE_DATA_DIR with cifar10-jpeg.npz): both parts ran,
# 607 s in all (a 5-step original in 62 s, the rankings 291 s, mostly ResNet-9's forward pass over 47,500 images on
# one thread; 3 grid cells 313 s, the grid reusing the rankings):
#   OUT=/tmp/o RESULTS=/tmp/expand-c10 EXPAND_SECONDS=1500 EXTRA="--only poison --expand 100" GRID_ARGS="recipe.steps=5
#   'methods={ssd: {params: {alpha_scale: relative, importance_samples: 256}, grid: {alpha: [20], lambda_ratio:
#   [0.1]}}}'" bash benchmarks/gpu_expand.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/expand-c10}
mkdir -p "$OUT"
METHODS=${METHODS:-"methods={ssd: {params: {alpha_scale: relative}, grid: {alpha: [10, 20, 45, 70], lambda_ratio: [0.1]}}, potion: {}, eu: {grid: {last_k: [all]}}}"}
eval "extra=(${EXTRA:-})"          # benchmark flags (shell words), e.g. --only poison --expand 100
eval "grid=(${GRID_ARGS:-})"       # grid overrides (shell words), e.g. recipe.steps=5
start=$(date +%s)
timeout "${EXPAND_SECONDS:-560}" python3 benchmarks/expand.py --config configs/rem/cifar10.yaml --out "$RESULTS" \
  "${extra[@]}" "$METHODS" "${grid[@]}" 2>&1 | grep -v Warning | tee "$OUT/expand-c10.txt"
echo "wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/expand-c10.txt"
tar czf "$OUT/expand-c10.tgz" "$RESULTS" 2>/dev/null || true
