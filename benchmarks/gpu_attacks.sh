#!/usr/bin/env bash
# Every attack on CIFAR-10 / ResNet-9 (configs/attacks/cifar10.yaml: 8 poison variants, n = 500, rates 10 / 50%,
# REM, Potion, SSD x 3, CF, EU + 500 suspects), one seed, in one device call, then the report's attack x method
# tables (C-Acc / ASR / RA / DER) and figures.
#   bash benchmarks/gpu_attacks.sh                # prints the tables; $OUT/attacks-c10.txt and the results archive
# Estimated on one H100 from the README's per-cell figures (not measured: no GPU was lent when it was written):
# 9 originals (8 attacks + the label-consistent attack's clean surrogate, ~18 s each) and 16 deletion sets of
# ~50 s (REM ~15, Potion ~10, SSD ~2, CF ~4, EU ~18): about 16 minutes, so one 9-minute call may not finish. The
# grid stops after GRID_SECONDS (520) and resumes on the next call with the same RESULTS (carry it, or keep the
# machine warm); the report covers what finished. TRIGGERS="blend sig" restricts the grid to those triggers
# (patch = the BadNets rows, all-to-all included) to split the work across calls.
# CPU smoke test, run before the commit (2 cores shared with other work, CORRECTIVE_DATA_DIR holding
# cifar10-jpeg.npz, python3 = the venv's): 4 cells (original, SSD, REM, EU + 20 suspects) and the report's attack
# tables printed, in 886 s, mostly ResNet-9 on the CPU (the suspects ranking's pass over 47,500 images):
#   OUT=/tmp/o RESULTS=/tmp/attacks-smoke GRID_SECONDS=1500 TRIGGERS="blend" GRID_ARGS="recipe.steps=3 'rates=[0.5]'
#   'methods={ssd: {params: {alpha_scale: relative, importance_samples: 64}, grid: {alpha: [20], lambda_ratio:
#   [0.1]}}, rem: {grid: {lr: [0.005]}, params: {steps: 2, max_flush_passes: 1, retain_eval: 200}}, eu: {grid:
#   {last_k: [all]}, params: {steps: 3}, expand: [20]}}'" bash benchmarks/gpu_attacks.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/attacks-c10}
mkdir -p "$OUT"
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line
only=()
if [ -n "${TRIGGERS:-}" ]; then  # the recipe's manipulations whose trigger is named (patch: no trigger key)
  only=("$(python3 - "$TRIGGERS" <<'PY'
import json, sys, yaml
wanted = sys.argv[1].split()
config = yaml.safe_load(open("configs/attacks/cifar10.yaml"))
chosen = [m for m in config["manipulations"]
          if (m.get("params", {}).get("trigger") or {"name": "patch"})["name"] in wanted]
if not chosen:
    sys.exit(f"TRIGGERS={sys.argv[1]}: no manipulation of configs/attacks/cifar10.yaml uses them")
print("manipulations=" + json.dumps(chosen))
PY
)") || exit 2
fi
start=$(date +%s)
timeout "${GRID_SECONDS:-520}" python3 -m corrective_unlearning run configs/attacks/cifar10.yaml --out "$RESULTS" \
  --quiet "${only[@]}" "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/attacks-c10.txt"
echo "grid wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/attacks-c10.txt"
python3 -m corrective_unlearning report "$RESULTS" >/dev/null 2>&1
sed -n '/^## Attacks x methods/,/^## [^A]/p' "$RESULTS/report/summary.md" | tee -a "$OUT/attacks-c10.txt"
tar czf "$OUT/attacks-c10.tgz" "$RESULTS"
