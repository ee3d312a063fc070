#!/usr/bin/env bash
# The REM evaluation map on CIFAR-10 (configs/rem/cifar10.yaml: ResNet-9, poison / interclass / random labels,
# n = 1000 each), rates 0.1 / 0.5 / 1.0, one seed, then the report (heatmaps and tables).
# One manipulation per device call keeps each call under 10 minutes; the results folder resumes across calls, so
# run it three times (the device keeps ignored build outputs between calls only while it stays warm: carry
# results/rem-c10 with the `run` tool's carry, or let each call archive its part):
#   ONLY=poison bash benchmarks/gpu_rem.sh; ONLY=interclass bash ...; ONLY=random_labels bash ...
# Each call stops its grid after GRID_SECONDS (540); a manipulation whose cells do not fit (estimated ~14 min with
# REM's default 10 repair passes: not measured, no GPU was lent) finishes on a second call with the same ONLY: the
# grid resumes and skips the finished cells.
# CPU smoke test (3 cells ok in 230 s on 2 cores, the original cached):
#   ONLY=poison GRID_ARGS="recipe.steps=10 'rates=[1.0]' 'methods={potion: {params: {importance_samples: 256,
#   max_tries: 2}}, rem: {grid: {lr: [0.005]}, params: {steps: 2, max_flush_passes: 1, retain_eval: 200}}}'" ...
# GRID_ARGS adds overrides (shell words, quoted as on a command line).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
RESULTS=${RESULTS:-results/rem-c10}
ONLY=${ONLY:-poison}
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line
# The chosen manipulation's entry of the recipe, sizes and params included.
only=$(python3 - "$ONLY" <<'PY'
import json, sys, yaml
config = yaml.safe_load(open("configs/rem/cifar10.yaml"))
chosen = [m for m in config["manipulations"] if m["name"] == sys.argv[1]]
if not chosen:
    sys.exit(f"ONLY={sys.argv[1]}: not a manipulation of configs/rem/cifar10.yaml")
print("manipulations=" + json.dumps(chosen))
PY
) || exit 2
start=$(date +%s)
timeout "${GRID_SECONDS:-540}" python3 -m corrective_unlearning run configs/rem/cifar10.yaml --out "$RESULTS" --quiet \
  "$only" 'rates=[0.1, 0.5, 1.0]' 'seeds=[0]' "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/grid-$ONLY.txt"
echo "grid wall time ($ONLY): $(( $(date +%s) - start )) s" | tee -a "$OUT/grid-$ONLY.txt"
python3 -m corrective_unlearning report "$RESULTS" 2>&1 | tail -40 | tee "$OUT/report.txt"
tar czf "$OUT/rem-c10-$ONLY.tgz" "$RESULTS"
