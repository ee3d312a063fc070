"""A frozen teacher's forward pass (SCRUB and BadT run one per training step): plain eval mode vs batch norm
folded into the convolutions, side by side in one run (synchronised wall clock, bf16 on CUDA).

    python benchmarks/teacher_forward.py                       # resnet9, batch 512, the best device here
    python benchmarks/teacher_forward.py --model small_cnn --size 28 --channels 1 --batch 128
"""
from __future__ import annotations

import argparse
import copy

import torch

from corrective_unlearning.models import create_model, fold_batchnorm
from corrective_unlearning.runtime import Runtime, Stopwatch


def time_forward(model, x, runtime: Runtime, repeats: int) -> float:
    with torch.no_grad(), runtime.autocast():
        for _ in range(3):  # warm-up (cuDNN autotuning)
            model(x)
        with Stopwatch(runtime) as clock:
            for _ in range(repeats):
                model(x)
    return clock.seconds / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    runtime = Runtime.create(args.device, compile=False, progress=False)
    torch.manual_seed(0)
    model = runtime.prepare(create_model(args.model, 10, args.channels))
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=runtime.device)
    if runtime.cuda and runtime.channels_last:
        x = x.to(memory_format=torch.channels_last)
    plain = copy.deepcopy(model).eval().requires_grad_(False)
    folded = runtime.prepare(fold_batchnorm(model))
    rows = [("eval mode", time_forward(plain, x, runtime, args.repeats)),
            ("batch norm folded", time_forward(folded, x, runtime, args.repeats))]
    print(f"{args.model}, batch {args.batch}, {runtime.describe().get('gpu', runtime.device)}")
    for what, seconds in rows:
        print(f"{what:20s} {1000 * seconds:8.2f} ms/forward  ({rows[0][1] / seconds:.2f}x)")


if __name__ == "__main__":
    main()
