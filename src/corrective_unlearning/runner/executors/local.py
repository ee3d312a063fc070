"""The embedded default: units run in this process (CPU, or one GPU), or in one long-lived worker process per
visible GPU (or per ``workers`` slot), each keeping its data and compiled models warm across units."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import torch

from ..cells import Worker
from ..spec import Cell, GridConfig
from . import Attempts


def local_devices(config: GridConfig, workers: int | None) -> list[str | None]:
    """One entry per worker: its device (None: the config's). Several GPUs visible and the config's device left to
    ``auto``/``cuda``: one worker per GPU, unless ``workers`` says otherwise."""
    gpus = torch.cuda.device_count() if config.device in ("auto", "cuda") else 0
    count = workers or max(gpus, 1)
    return [f"cuda:{i % gpus}" for i in range(count)] if gpus > 1 else [None] * count


class LocalExecutor:
    def __init__(self, config: GridConfig, out: str | Path, workers: int | None = None, retries: int = 2) -> None:
        self.config, self.out, self.retries = config, Path(out), retries
        self.devices = local_devices(config, workers)

    def run(self, units: list[list[Cell]], on_record: Callable[[dict], None]) -> None:
        if len(self.devices) == 1:  # in this process: a crash here is the whole run's (a re-run resumes it)
            worker = Worker(self.config, self.out, "local-0", self.devices[0])
            for unit in units:
                worker.run_unit(unit, on_record)
            return
        self._run_processes(units, on_record)

    def _run_processes(self, units: list[list[Cell]], on_record: Callable[[dict], None]) -> None:
        """One process per device; a unit is submitted only when a process is free, so a process that dies costs
        only the unit it held (a broken pool fails every future in flight: those units are retried)."""
        attempts, queue = Attempts(self.out, self.retries), list(units)
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked; a fresh interpreter per worker
        while queue:
            counter = context.Value("i", 0)
            with ProcessPoolExecutor(len(self.devices), mp_context=context, initializer=_start_worker,
                                     initargs=(self.config, str(self.out), self.devices, counter)) as pool:
                running: dict[Future, list[Cell]] = {}
                try:
                    while queue or running:
                        while queue and len(running) < len(self.devices):
                            unit = queue.pop(0)
                            running[pool.submit(_run_unit, unit)] = unit
                        finished, _ = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished:
                            unit = running.pop(future)
                            for record in future.result():
                                on_record(record)
                except BrokenProcessPool as error:  # a worker died: its pool is gone, the units it held go back
                    for future, unit in running.items():
                        left = attempts.lost(unit, f"worker process died ({error})", on_record)
                        if left:
                            queue.insert(0, left)


_WORKER: Worker | None = None


def _start_worker(config: GridConfig, out: str, devices: list, counter) -> None:
    global _WORKER
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _WORKER = Worker(config, out, f"local-{index}", devices[index % len(devices)])


def _run_unit(cells: list[Cell]) -> list[dict]:
    return _WORKER.run_unit(cells)
