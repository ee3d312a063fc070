#!/usr/bin/env bash
# One device call for the foundation checks: the training-speed benchmark, and the original CIFAR-10 models
# (poison n=500, interclass n=2500) with their metric tables, then the per-method timings.
# Expects the CIFAR-10 archive in $CORRECTIVE_DATA_DIR; writes logs under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"
python3 -m corrective_unlearning train --dataset cifar10 --model resnet9 --manipulation poison --n 500 --seed 0 \
  --quiet --out "$OUT/runs" 2>&1 | tee "$OUT/train-poison.txt"
python3 -m corrective_unlearning train --dataset cifar10 --model resnet9 --manipulation interclass --n 2500 \
  --seed 0 --quiet --out "$OUT/runs" 2>&1 | tee "$OUT/train-interclass.txt"
python3 benchmarks/methods_speed.py --dataset cifar10 --n 500 --rate 0.5 2>&1 | tee "$OUT/methods-speed.txt"
python3 benchmarks/train_speed.py --full --cpu-steps 2 2>&1 | tee "$OUT/train-speed.txt"
