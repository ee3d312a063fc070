"""Grid throughput of the executors, side by side in one run: the Fashion-MNIST recipe (a subset of its cells) through
``local`` (in-process, then worker processes) and ``ray`` (a local instance), each into a fresh results folder,
all sharing one warm original-model cache.

    python benchmarks/executors.py                       # local x1, local x2, ray x1, ray x2
    python benchmarks/executors.py --runs local:1,ray:2 rates=[0.5,1.0]

Per run: cells, wall time (for ray including ray.init, shown apart), cells per minute, the seconds measured inside
the cells (method + evaluation; a cached original counts its evaluation only), and the overhead per cell: the
worker-seconds not spent inside a cell, (wall x workers - in-cell) / cells. That total splits into start-up (until
a worker starts its first cell: process or actor start, imports, data loading), the steady-state gap between one
cell's end and the next cell's start on the same worker (scheduling, building a task, writing records), and the
tail (workers idle at the end while the last unit finishes; it shrinks as a grid grows).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from corrective_unlearning.runner import load_grid_config, run_grid

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "paper1" / "fashion-mnist-poison.yaml"
# A few minutes per run on 2 CPU cores: CF (its three last_k settings, short) at four rates, plus the original.
SUBSET = ["rates=[0.25, 0.5, 0.75, 1.0]", "methods={cf: {params: {steps: 20}, grid: {last_k: [all, 2, 4]}}}"]


def in_cell_seconds(record: dict) -> float:
    """What a cell measured inside itself; a cached original's training time was not paid in this run."""
    timings = record.get("timings") or {}
    seconds = timings.get("eval_seconds", 0.0) + timings.get("tow_eval_seconds", 0.0)
    if record["method"] != "original" or record.get("original_cache") == "miss":
        seconds += timings.get("method_seconds", 0.0)
    return seconds


def run_once(config, out: Path, executor: str, workers: int) -> dict:
    init_seconds = 0.0
    t0, started = time.time(), time.perf_counter()
    if executor == "ray":  # started here so its cost is shown apart (the executor leaves it running)
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        init_seconds = time.perf_counter() - started
    try:
        records = run_grid(config, out, progress=False, executor=executor, workers=workers)
    finally:
        if executor == "ray":
            import ray

            ray.shutdown()
    wall = time.perf_counter() - started
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} cell(s) failed, e.g. {failed[0]['cell']}: {failed[0]['error']}")
    inside = sum(in_cell_seconds(r) for r in records)
    return {"executor": f"{executor} x{workers}", "cells": len(records), "wall": wall, "init": init_seconds,
            "per_minute": 60 * len(records) / wall, "inside": inside,
            "overhead": (wall * workers - inside) / len(records), **_split(records, t0, t0 + wall)}


def _split(records: list[dict], start: float, end: float) -> dict:
    """Start-up (mean over workers, until their first cell), steady-state gap per cell between consecutive cells
    of one worker, and the mean idle tail per worker after its last cell."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        by_worker.setdefault(r.get("worker", "?"), []).append((r["started"], r["started"] + in_cell_seconds(r)))
    startup, gaps, tails = [], [], []
    for spans in by_worker.values():
        spans.sort()
        startup.append(spans[0][0] - start)
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        tails.append(end - spans[-1][1])
    return {"startup": sum(startup) / len(startup), "gap": sum(gaps) / len(gaps) if gaps else float("nan"),
            "tail": sum(tails) / len(tails)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="local:1,local:2,ray:1,ray:2", help="executor:workers, comma-separated")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="more overrides of the recipe")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = load_grid_config(str(RECIPE), [*SUBSET, *args.overrides])
    scratch = Path(tempfile.mkdtemp(prefix="corrective-executors-"))
    try:
        # the original model once, untimed: every run below loads it from the shared cache
        run_grid(load_grid_config(str(RECIPE), [*SUBSET, *args.overrides, "methods={}"]), scratch / "warm",
                 progress=False)
        rows = []
        for index, run in enumerate(args.runs.split(",")):
            executor, _, workers = run.partition(":")
            rows.append(run_once(config, scratch / f"run{index}", executor, int(workers or 1)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{os.cpu_count()} CPU cores; Fashion-MNIST recipe subset: {' '.join(SUBSET + args.overrides)}")
    print(f"{'executor':10s} {'cells':>5s} {'wall s':>7s} {'ray.init s':>10s} {'cells/min':>9s} {'in-cell s':>9s} "
          f"{'overhead s/cell':>15s} {'start-up s':>10s} {'gap s/cell':>10s} {'tail s':>7s}")
    for r in rows:
        print(f"{r['executor']:10s} {r['cells']:5d} {r['wall']:7.1f} {r['init']:10.1f} {r['per_minute']:9.2f} "
              f"{r['inside']:9.1f} {r['overhead']:15.2f} {r['startup']:10.1f} {r['gap']:10.2f} {r['tail']:7.1f}")


if __name__ == "__main__":
    main()
