"""The embedded default: units run in this process (CPU, or one GPU), or in one long-lived worker process per
visible GPU (or per ``workers`` slot), each keeping its data and compiled models warm across units. A worker process
that dies loses only the unit it held: its cells without a record are resubmitted (``retries``), the other workers
go on."""
from __future__ import annotations

import multiprocessing
import os
import traceback
from multiprocessing.connection import Connection, wait
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
        attempts, queue = Attempts(self.out, self.retries, on_record), list(units)
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked; a fresh interpreter per worker
        idle: list[_Process] = []
        busy: dict[_Process, list[Cell]] = {}
        started = 0
        try:
            for _ in range(min(len(self.devices), len(queue))):
                idle.append(_Process(context, self.config, self.out, started, self.devices[started]))
                started += 1
            while queue or busy:
                while queue and idle:
                    process = idle.pop()
                    busy[process] = queue.pop(0)
                    process.conn.send(busy[process])
                ready = wait([p.conn for p in busy] + [p.process.sentinel for p in busy])
                for process in [p for p in busy if p.conn in ready or p.process.sentinel in ready]:
                    try:
                        while process.conn.poll():
                            kind, payload = process.conn.recv()
                            if kind == "record":
                                attempts.record(payload)
                            elif kind == "error":
                                raise RuntimeError(f"worker {process.name} failed outside a cell:\n{payload}")
                            else:  # "done": the unit is finished
                                busy.pop(process)
                                idle.append(process)
                                break
                    except (EOFError, OSError):
                        pass
                    if process in busy and not process.process.is_alive():  # it died holding a unit
                        process.process.join()
                        unit = busy.pop(process)
                        left = attempts.lost(unit, f"worker process {process.name} died (exit code "
                                                   f"{process.process.exitcode})")
                        if left:
                            queue.insert(0, left)
                        if queue:
                            device = self.devices[started % len(self.devices)]
                            idle.append(_Process(context, self.config, self.out, started, device))
                            started += 1
        finally:
            for process in idle + list(busy):
                process.stop()


class _Process:
    """One long-lived worker process, fed units through a pipe; it answers with each record, then "done"."""

    def __init__(self, context, config: GridConfig, out: Path, index: int, device: str | None) -> None:
        self.name = f"local-{index}"
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, config, str(out), self.name, device),
                                       name=f"corrective-{self.name}", daemon=True)
        self.process.start()
        child.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


def _serve(conn: Connection, config: GridConfig, out: str, name: str, device: str | None) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        worker = Worker(config, out, name, device)
        while (unit := conn.recv()) is not None:
            worker.run_unit(unit, lambda record: conn.send(("record", record)))
            conn.send(("done", None))
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception:  # not a cell's failure (those are records): e.g. the dataset cannot be loaded
        conn.send(("error", traceback.format_exc()))

