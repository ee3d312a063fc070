"""Where a recipe-A training step of ResNet-9 spends its time on CUDA, and which execution variant is fastest.

    python benchmarks/profile_step.py --steps 300

Times the trainer (same model instance: warm-up, then the timed run) in several variants, then prints the
profiler's top CUDA kernels of the eager variant and the GPU-busy share of a step.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.profiler import ProfilerActivity, profile

from corrective_unlearning.models import create_model
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import ImageBank, Recipe, train

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def run(runtime: Runtime, images, labels, steps: int) -> float:
    torch.manual_seed(0)
    model = runtime.prepare(create_model("resnet9", 10))
    bank = ImageBank(images, MEAN, STD, runtime.device, channels_last=runtime.channels_last)
    indices = torch.arange(len(labels))
    train(model, bank, labels, indices, Recipe(steps=30), seed=0, runtime=runtime)  # warm-up / compile
    return train(model, bank, labels, indices, Recipe(steps=steps), seed=1, runtime=runtime).seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (50000,), generator=generator)
    base = Runtime.create("cuda", progress=False)
    variants = {
        "eager, channels_last": base,
        "eager, NCHW": dataclasses.replace(base, channels_last=False),
        "compile (default)": dataclasses.replace(base, compile=True),
        "compile max-autotune-no-cudagraphs": dataclasses.replace(base, compile="max-autotune-no-cudagraphs"),
        "compile reduce-overhead (CUDA graphs)": dataclasses.replace(base, compile="reduce-overhead"),
    }
    print(f"{'variant':42s} {'ms/step':>8s} {'4000 steps (s)':>15s}")
    for name, runtime in variants.items():
        try:
            seconds = run(runtime, images, labels, args.steps)
            print(f"{name:42s} {1000 * seconds / args.steps:8.2f} {4000 * seconds / args.steps:15.1f}", flush=True)
        except Exception as error:  # a variant that fails to compile is reported, not fatal
            print(f"{name:42s} failed: {type(error).__name__}: {str(error)[:200]}", flush=True)

    torch.manual_seed(0)
    model = base.prepare(create_model("resnet9", 10))
    bank = ImageBank(images, MEAN, STD, base.device)
    train(model, bank, labels, torch.arange(50000), Recipe(steps=20), seed=0, runtime=base)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train(model, bank, labels, torch.arange(50000), Recipe(steps=50), seed=0, runtime=base)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=70))


if __name__ == "__main__":
    main()
