"""Wall time of each unlearning method on one task, side by side in one run (synchronised wall clock).

    python benchmarks/methods_speed.py                                   # CIFAR-10 when found, else Fashion-MNIST
    python benchmarks/methods_speed.py --dataset cifar10 --n 500 --rate 0.5
    python benchmarks/methods_speed.py --dataset fashion-mnist --device cpu --layouts channels_last,nchw

The original model comes from the cache (trained on first use). Each method runs with the paper-1 settings
(its first grid point). SSD and SCRUB are timed twice: computing their shared work (SSD's importances, SCRUB's
teacher logits), then reusing it as their grids do.
Evaluation of one cell is timed too.
"""
from __future__ import annotations

import argparse
import dataclasses

from corrective_unlearning.data import DataNotFoundError, load_dataset
from corrective_unlearning.experiment import build_setting, evaluate, train_original
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.methods import METHODS, expand_grid
from corrective_unlearning.runtime import Runtime, Stopwatch
from corrective_unlearning.training import DEFAULT_MODELS, default_recipe


# Methods whose later grid points reuse work of the first on the same deletion set: timed twice.
SHARED_WITH_GRID = {"ssd": "importances shared with the grid", "scrub": "teacher logits replayed from the first"}
LAYOUTS = {"channels_last": True, "nchw": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--manipulation", default="poison")
    parser.add_argument("--n", type=int, default=None, help="manipulation size (default: 1%% of the training set)")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default=",".join(METHODS.names()))
    parser.add_argument("--compile", default="", help="torch.compile mode for training loops, e.g. reduce-overhead")
    parser.add_argument("--repeat", type=int, default=1, help="time each method this many times (compile reuse)")
    parser.add_argument("--layouts", default="channels_last",
                        help="memory layouts to time side by side, comma-separated: channels_last,nchw")
    args = parser.parse_args()

    runtime = Runtime.create(args.device, compile=args.compile or False, progress=False)
    if args.dataset:
        dataset = load_dataset(args.dataset)
    else:
        try:
            dataset = load_dataset("cifar10")
        except DataNotFoundError:
            dataset = load_dataset("fashion-mnist")
    n = args.n or len(dataset.train_labels) // 100
    layouts = args.layouts.split(",")
    if unknown := set(layouts) - set(LAYOUTS):
        parser.error(f"--layouts: expected some of {', '.join(LAYOUTS)}, got {', '.join(sorted(unknown))}")
    columns = {layout: time_methods(dataclasses.replace(runtime, channels_last=LAYOUTS[layout]), dataset, n, args)
               for layout in layouts}

    rows = next(iter(columns.values()))
    print(f"\n{dataset.name} / {DEFAULT_MODELS[dataset.name]} / {args.manipulation} n={n} / rate {args.rate}, "
          f"device: {runtime.describe().get('gpu', runtime.device)}, compile: {runtime.compile}")
    print(f"{'what':60s} " + " ".join(f"{layout:>14s}" for layout in layouts) + "  note (seconds)")
    for i, (what, _, _) in enumerate(rows):
        notes = " / ".join(dict.fromkeys(columns[layout][i][2] for layout in layouts if columns[layout][i][2]))
        print(f"{what:60s} " + " ".join(f"{columns[layout][i][1]:14.2f}" for layout in layouts) + f"  {notes}")


def time_methods(runtime: Runtime, dataset, n: int, args) -> list[tuple[str, float, str]]:
    """(what, seconds, note) rows for the original model, one evaluation and each method."""
    recipe, model_name = default_recipe(dataset.name), DEFAULT_MODELS[dataset.name]
    setting = build_setting(dataset, args.manipulation, n, 0, runtime, round(0.05 * len(dataset.train_labels)))
    original, info = train_original(setting, model_name, recipe, runtime)
    forget = deletion_set(setting, args.rate)
    task = make_task(setting, original, forget, recipe, runtime)
    evaluate(original, setting, runtime, forget)  # warm-up: cuDNN autotuning stays out of the numbers

    rows = [("original (recipe A training)", info["train_seconds"], f"cache {info['cache']}")]
    with Stopwatch(runtime) as clock:
        evaluate(original, setting, runtime, forget)
    rows.append((f"evaluation of one cell (|S_f| = {len(forget)})", clock.seconds, ""))
    for name in args.methods.split(","):
        spec = METHODS.get(name)
        hparams = expand_grid(spec.grid)[0]
        repeats = max(args.repeat, 2 if name in SHARED_WITH_GRID else 1)
        for repeat in range(repeats):
            with Stopwatch(runtime) as clock:
                result = spec(task, hparams)
            note = SHARED_WITH_GRID.get(name, "again, a new model") if repeat else ""
            if result.shared.paid:
                note = f"complete run: shared work {sum(result.shared.paid.values()):.2f} s of it"
            rows.append((f"{name} {hparams}", clock.seconds, note))
    return rows


if __name__ == "__main__":
    main()
