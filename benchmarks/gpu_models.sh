#!/usr/bin/env bash
# One device call (at most 9 minutes) for the models of issue 23 on CIFAR-10:
#   1. recipe-A training time per model: ResNet-9, ResNet-18, PreAct-ResNet18, and vit_small when the registry has
#      it. Each model trains TIME_STEPS steps of recipe A (batch 512, SGD) after a 20-step warm-up of the same model
#      (compilation, cuDNN autotuning; its time is printed too), with the project's trainer and default runtime;
#      the 4000-step time is extrapolated from the steady rate (the full recipe for four models would not fit
#      beside part 2).
#   2. REM at 10% discovery of the poison manipulation (n = 1000, configs/rem/cifar10.yaml's) on ResNet-18, and on
#      vit_small when registered: the grid runner with the model overridden and REM alone. ResNet-18's original
#      trains ORIG_STEPS steps of recipe A (default 2000, half the recipe, to fit the call; the ViT's original uses
#      its own default recipe, steps overridden only when ORIG_STEPS is set explicitly). Each grid gets an even
#      share of the time left before the call's DEADLINE (seconds from the start, default 530).
# Smoke-tested on the CPU only (no GPU was lent): both parts ran, REM on ResNet-18 end to end on the synthetic set
# (2 cells, 122 s on 2 shared cores); the 9-minute budget on an H100 is an estimate, not a measurement.
# Everything comes back under $OUT: timings.txt, rem-<model>.txt, reports and the results archive.
# Needs CIFAR-10 in $CORRECTIVE_DATA_DIR (the timings fall back to random images without it). GRID_ARGS adds
# overrides to both grids (shell words, quoted as on a command line); BATCH sets the timed batch (default 512).
# CPU smoke test (timings at batch 8 on random images, the grids on the synthetic set):
#   OUT=/tmp/o PYTHON=.venv/bin/python DEVICE=cpu TIME_STEPS=2 WARM_STEPS=1 BATCH=8 ORIG_STEPS=3 \
#   GRID_ARGS="'dataset={name: synthetic}' 'manipulations=[{name: poison, sizes: [40]}]' \
#   'methods={rem: {grid: {lr: [0.005]}, params: {steps: 2, max_flush_passes: 1}}}'" bash benchmarks/gpu_models.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-results/models-c10}
DEVICE=${DEVICE:-auto}
DEADLINE=${DEADLINE:-530}
start=$(date +%s)
mkdir -p "$OUT"
eval "extra=(${GRID_ARGS:-})"  # shell words, quoted as on a command line

TIME_STEPS=${TIME_STEPS:-200} WARM_STEPS=${WARM_STEPS:-20} BATCH=${BATCH:-512} DEVICE=$DEVICE "$PYTHON" - <<'PY' 2>&1 | tee "$OUT/timings.txt"
import os

import torch

from corrective_unlearning.data import DataNotFoundError, load_dataset
from corrective_unlearning.models import MODELS, create_model
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import ImageBank, Recipe, train

steps, warm, batch = (int(os.environ[k]) for k in ("TIME_STEPS", "WARM_STEPS", "BATCH"))
runtime = Runtime.create(os.environ["DEVICE"], progress=False)
try:
    data = load_dataset("cifar10")
    images, labels, source = data.train_images, data.train_labels, "CIFAR-10"
except DataNotFoundError:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels, source = torch.randint(0, 10, (50000,), generator=g), "random 32x32 images"
bank = ImageBank(images, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), runtime.device)
names = ["resnet9", "resnet18", "preact_resnet18"] + [n for n in ("vit_small",) if n in MODELS.names()]
device = torch.cuda.get_device_name() if runtime.cuda else "CPU"
print(f"recipe A (batch {batch}, SGD), data: {source}, device: {device}; {steps} timed steps after {warm} warm-up")
print(f"{'model':16s} {'params':>10s} {'warm-up s':>10s} {'s/step':>8s} {'4000 steps (extrapolated)':>26s}")
for name in names:
    torch.manual_seed(0)
    model = runtime.prepare(create_model(name, 10))  # one model for both runs: compiled once, in the warm-up
    first, log = (train(model, bank, labels, torch.arange(len(labels)), Recipe(steps=n, batch_size=batch), seed=0,
                        runtime=runtime) for n in (warm, steps))
    params = sum(p.numel() for p in model.parameters())
    per_step = log.seconds / steps
    print(f"{name:16s} {params:10,d} {first.seconds:10.1f} {per_step:8.4f} {per_step * 4000:24.1f} s", flush=True)
PY

models=(resnet18)
if "$PYTHON" -c "from corrective_unlearning.models import MODELS; raise SystemExit('vit_small' not in MODELS.names())"; then
  models+=(vit_small)
fi
for i in "${!models[@]}"; do
  m=${models[$i]}
  left=$(( DEADLINE - ($(date +%s) - start) ))
  share=$(( left / (${#models[@]} - i) ))
  if (( share < 30 )); then echo "REM on $m: skipped, ${left} s left" | tee "$OUT/rem-$m.txt"; continue; fi
  steps=()
  if [[ $m == resnet18 ]]; then steps=("recipe.steps=${ORIG_STEPS:-2000}"); elif [[ -n ${ORIG_STEPS:-} ]]; then steps=("recipe.steps=$ORIG_STEPS"); fi
  t0=$(date +%s)
  timeout "$share" "$PYTHON" -m corrective_unlearning run configs/rem/cifar10.yaml --out "$RESULTS-$m" --quiet \
    "device=$DEVICE" "model=$m" 'manipulations=[{name: poison, sizes: [1000], params: {target: 0, patch_size: 3, position: bottom-right}}]' \
    'rates=[0.1]' 'seeds=[0]' 'methods={rem: {}}' "${steps[@]}" "${extra[@]}" 2>&1 | grep -v Warning | tee "$OUT/rem-$m.txt"
  echo "REM on $m (time limit $share s): wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/rem-$m.txt"
  "$PYTHON" -m corrective_unlearning report "$RESULTS-$m" 2>&1 | tail -25 | tee -a "$OUT/rem-$m.txt"
done
echo "total wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/timings.txt"
tar czf "$OUT/models-c10.tgz" "$RESULTS"-* 2>/dev/null
