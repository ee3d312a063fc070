#!/usr/bin/env bash
# One device call for the per-method timings of issue 3: every method on CIFAR-10 (poison n = 500, rate 0.5),
# eager and with CUDA graphs, then the frozen teacher's forward. Expects the CIFAR-10 archive in
# $CORRECTIVE_DATA_DIR; the first methods_speed run trains (and caches) the original model.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=src CORRECTIVE_CACHE_DIR=${CORRECTIVE_CACHE_DIR:-/tmp/corrective-cache}
OUT=${OUT:-/tmp/out}
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"
python3 benchmarks/methods_speed.py --dataset cifar10 --n 500 --rate 0.5 --layouts channels_last,nchw 2>&1 \
  | grep -v Warning | tee "$OUT/methods-eager.txt"
python3 benchmarks/methods_speed.py --dataset cifar10 --n 500 --rate 0.5 --methods cf,scrub,badt \
  --compile reduce-overhead --repeat 2 2>&1 | grep -v Warning | tee "$OUT/methods-graphs.txt"
python3 benchmarks/teacher_forward.py 2>&1 | tee "$OUT/teacher-forward.txt"
