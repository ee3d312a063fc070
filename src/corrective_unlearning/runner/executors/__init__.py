"""Executors: where a grid's units of work run. One small interface: :meth:`Executor.run` takes the units (lists of
cells of one deletion set, see :func:`..spec.units`) and calls ``on_record`` with each record as it lands in the
store. Every worker writes its own records to the store; the executor only decides where a unit runs and what
happens when a worker dies (its unfinished cells are resubmitted up to ``retries`` times, then recorded as failed
with the error).

- ``local`` (default): in this process on CPU or one GPU; with several visible GPUs (or ``workers`` > 1), one
  long-lived worker process per GPU (or per slot), each keeping its data and compiled models warm across units.
- ``ray`` (``pip install corrective-unlearning[ray]``): one long-lived actor per GPU, or per CPU slot on a CPU
  machine; ``ray.init()`` starts a local instance, or attaches to the cluster named by ``RAY_ADDRESS``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Protocol

from ...checks import Param, check_values
from ..record import record_head
from ..spec import Cell, GridConfig
from ..store import ResultStore

EXECUTORS = ("local", "ray")
# Every executor's options, checked before any worker starts.
OPTIONS = {
    "workers": Param(int, None, low=1, nullable=True, doc="worker processes or actors; null: one per GPU"),
    "retries": Param(int, 2, low=0, doc="resubmissions of a unit whose worker died"),
}


class Executor(Protocol):
    def run(self, units: list[list[Cell]], on_record: Callable[[dict], None]) -> None:
        """Run every unit; ``on_record(record)`` for each cell finished (or recorded as failed)."""


def create_executor(name: str, config: GridConfig, out: str | Path, workers: int | None = None,
                    retries: int = 2) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``) for one grid run."""
    check_values({"workers": workers, "retries": retries}, OPTIONS, where="executor", label=str)
    if name == "local":
        from .local import (
            LocalExecutor,  # lazy: local imports Attempts from this module
        )

        return LocalExecutor(config, out, workers, retries)
    if name == "ray":
        from .ray import RayExecutor  # lazy: ray imports Attempts from this module

        return RayExecutor(config, out, workers, retries)
    raise ValueError(f"unknown executor {name!r}; expected one of {list(EXECUTORS)}")


class Attempts:
    """The retry bookkeeping every executor shares. :meth:`record` passes each record on to ``on_record``. After a
    worker dies with a unit, the records it wrote before dying are passed on, and the unit's cells without a record
    written in this run go back to the queue, up to ``retries`` times; then they are recorded as failed."""

    def __init__(self, out: str | Path, retries: int, on_record: Callable[[dict], None]) -> None:
        self.store, self.retries, self.started = ResultStore(out), retries, time.time()
        self.on_record = on_record
        self.tries: dict[str, int] = {}
        self.reported: set[str] = set()

    def record(self, record: dict) -> None:
        self.reported.add(record["cell"])
        self.on_record(record)

    def lost(self, unit: list[Cell], error: str) -> list[Cell] | None:
        """A worker died running ``unit``: the cells to resubmit, or None when they were recorded as failed."""
        left = []
        for cell in unit:
            if not self.store.written_since(cell, self.started):
                left.append(cell)
            elif cell.id not in self.reported:  # written by the worker before it died, never reported
                self.record(json.loads(self.store.path(cell).read_text()))
        if not left:
            return None
        key = left[0].deletion_set_id
        self.tries[key] = self.tries.get(key, 0) + 1
        if self.tries[key] <= self.retries:
            print(f"worker lost running {key} ({error}); retry {self.tries[key]} of {self.retries}", flush=True)
            return left
        for cell in left:
            record = {**record_head(cell), "status": "failed", "started": time.time(), "attempts": self.tries[key],
                      "error": f"worker died {self.tries[key]} time(s) running this cell's unit; last: {error}"}
            self.store.write(cell, record)
            self.record(record)
        return None
