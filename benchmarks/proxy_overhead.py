"""Overhead of recording the confidence proxy during training: recipe A with and without the
:class:`ConfidenceRecorder` observer (same model, data, seed and steps), side by side in one run, the two runs
alternating (ABBA) so that machine load and order hit both alike; plus the recorder's own cost per step, timed alone.

    python benchmarks/proxy_overhead.py                  # Fashion-MNIST recipe (synthetic when it is missing)
    python benchmarks/proxy_overhead.py --repeats 5 --steps 200 --threads 1   # steadier on a busy CPU
    python benchmarks/proxy_overhead.py --device cuda

Measured on the project's shared 2-core CPU (load average ~2 from other work), 1 thread, Fashion-MNIST:
500 steps x 4 runs: 17.20 s without, 17.77 s with (median ratio 1.033); 200 steps x 5: 6.15 / 6.57 s (1.069);
200 steps x 6, ABBA: 7.99 / 7.39 s (0.925): run-to-run noise (+-15%) exceeds the difference. The recorder alone:
26-27 us per step, 0.07-0.09% of a 31-40 ms step. Not yet measured on a GPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from corrective_unlearning.data import DataNotFoundError, load_dataset
from corrective_unlearning.models import create_model
from corrective_unlearning.proxies import ConfidenceRecorder
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import DEFAULT_MODELS, ImageBank, default_recipe, train


def dataset():
    try:
        return load_dataset("fashion-mnist")
    except DataNotFoundError:
        return load_dataset("synthetic")


def one_run(data, bank, recipe, runtime, record: bool) -> float:
    """Seconds of one training run (the trainer's synchronised stopwatch)."""
    torch.manual_seed(0)
    model = runtime.prepare(create_model(DEFAULT_MODELS[data.name], data.num_classes, data.in_channels))
    observe = ConfidenceRecorder(len(data.train_labels), bank.device) if record else None
    indices = torch.arange(len(data.train_labels))
    log = train(model, bank, data.train_labels, indices, recipe, seed=0, runtime=runtime, observe=observe)
    if observe is not None:
        observe.mean()  # the one sync at the end, part of the cost
    return log.seconds


def recorder_alone(data, recipe, runtime, calls: int = 2000) -> float:
    """Microseconds per observe call on logits of the recipe's batch shape."""
    recorder = ConfidenceRecorder(len(data.train_labels), runtime.device)
    logits = torch.randn(recipe.batch_size, data.num_classes, device=runtime.device)
    labels = torch.randint(0, data.num_classes, (recipe.batch_size,), device=runtime.device)
    indices = torch.randperm(len(data.train_labels), device=runtime.device)[: recipe.batch_size]
    for _ in range(20):
        recorder(logits, labels, indices)
    runtime.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        recorder(logits, labels, indices)
    runtime.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (1 is steadier on a loaded machine; default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runtime = Runtime.create(args.device, compile=False, progress=False)
    data = dataset()
    recipe = default_recipe(data.name)
    if args.steps:
        recipe = recipe.replace(steps=args.steps)
    bank = ImageBank(data.train_images, data.mean, data.std, runtime.device, None, runtime.channels_last)
    print(f"{data.name} / {DEFAULT_MODELS[data.name]} / {recipe.steps} steps of batch {recipe.batch_size} on "
          f"{runtime.device} ({torch.get_num_threads()} threads); {args.repeats} alternating runs of each")
    one_run(data, bank, recipe.replace(steps=min(20, recipe.steps)), runtime, record=True)  # warm-up
    plain, recorded = [], []
    for k in range(args.repeats):  # ABBA order: neither variant always runs first
        for record in ((False, True) if k % 2 == 0 else (True, False)):
            (recorded if record else plain).append(one_run(data, bank, recipe, runtime, record))
    p, r = statistics.median(plain), statistics.median(recorded)
    print(f"{'':28s}{'median s':>10s}{'min s':>10s}   runs")
    print(f"{'without recorder':28s}{p:10.2f}{min(plain):10.2f}   {', '.join(f'{s:.2f}' for s in plain)}")
    print(f"{'with ConfidenceRecorder':28s}{r:10.2f}{min(recorded):10.2f}   {', '.join(f'{s:.2f}' for s in recorded)}")
    print(f"ratio with/without: median {r / p:.3f}, min {min(recorded) / min(plain):.3f}")
    per_call = recorder_alone(data, recipe, runtime)
    per_step = p / recipe.steps * 1e6
    print(f"recorder alone: {per_call:.1f} us per step = {100 * per_call / per_step:.2f}% of a {per_step:.0f} us "
          f"training step")


if __name__ == "__main__":
    main()
