"""The results store: ``<out>/records/<cell id>.json``, one atomic file per cell, written by the worker that ran
it (a temporary file renamed into place, so concurrent writers never leave half a record). Everything else is
derived from it: the aggregate tables, the resume check, ``corrective status``."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import ConfigError, read_yaml
from ..methods import hparams_key
from ..records import write_json_atomic
from .spec import Cell

class ResultStore:
    """``<out>/records/<cell id>.json``: one file per finished cell."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.records = self.out / "records"

    def path(self, cell: Cell) -> Path:
        return self.records / f"{cell.id}.json"

    def done(self, cell: Cell) -> bool:
        path = self.path(cell)
        try:
            return path.exists() and json.loads(path.read_text()).get("status") == "ok"
        except (json.JSONDecodeError, OSError):
            return False  # unreadable: run the cell again

    def written_since(self, cell: Cell, since: float) -> bool:
        """A record of ``cell`` (ok or failed) was written at or after ``since`` (a time.time())."""
        try:
            return self.path(cell).stat().st_mtime >= since
        except OSError:
            return False

    def write(self, cell: Cell, record: dict) -> None:
        write_json_atomic(self.path(cell), record)

    def load(self) -> list[dict]:
        return load_records(self.out)


def load_records(out: str | Path) -> list[dict]:
    records = []
    for path in sorted((Path(out) / "records").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"record {path} is corrupt ({error}); delete it and re-run the grid") from None
    return records


# What an original model and its manipulation depend on: a finished cell computed under other values is not a
# cell of this config, so resuming with any of them changed is refused. Data locations may move.
IDENTITY_KEYS = ("dataset", "model", "recipe", "manipulations")
LOCATION_KEYS = ("data_dir", "path", "download")


def _identity(config: dict) -> dict:
    identity = {key: config.get(key) for key in IDENTITY_KEYS}
    identity["dataset"] = {k: v for k, v in (identity["dataset"] or {}).items() if k not in LOCATION_KEYS}
    identity["manipulations"] = {}  # name -> its params variants: adding a manipulation is fine, changing one is not
    for m in config.get("manipulations") or []:
        identity["manipulations"].setdefault(m.get("name"), []).append(hparams_key(m.get("params") or {}))
    identity["manipulations"] = {name: sorted(set(params)) for name, params in identity["manipulations"].items()}
    return identity


def check_resume(out: Path, resolved: dict) -> None:
    """Refuse to resume ``out`` with another dataset, model, recipe or manipulation than the one it holds."""
    stored_path = out / "config.yaml"
    if not stored_path.exists():
        return
    try:
        stored = read_yaml(stored_path)
    except ConfigError as error:
        raise ConfigError(f"{out} holds an unreadable config.yaml ({error}); use another --out") from None
    old, new = _identity(stored), _identity(resolved)
    old["recipe"], new["recipe"] = stored.get("resolved_recipe", old["recipe"]), resolved.get("resolved_recipe")
    only_one_side = set(old["manipulations"]) ^ set(new["manipulations"])  # added or left out: not a change
    for name in only_one_side:
        old["manipulations"].pop(name, None)
        new["manipulations"].pop(name, None)
    changed = _differences(old, new)
    if changed:
        raise ConfigError(f"{out} holds results of another setting: {', '.join(changed)} changed since they "
                          f"were computed. Use another --out, or delete {out} to start over (methods, rates, "
                          f"seeds and further manipulations may be added on resume; the dataset, model, recipe and "
                          f"the params of a manipulation already there may not change)")


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [f"{prefix} ({old!r} -> {new!r})"]




# -- progress and status ------------------------------------------------------------------------------------------
# While a grid runs, ``<out>/progress/run.json`` names the driver process and ``<out>/progress/<worker>.json`` the
# unit each worker holds and the cell it runs; the driver removes the folder when it returns. ``<out>/cells.json``
# lists every cell of the grid last run (id and method), so ``status`` can count what is left.

def write_plan(out: str | Path, cells: list[Cell], executor: str) -> None:
    import os
    import socket
    import time

    out = Path(out)
    write_json_atomic(out / "cells.json", {"cells": [{"id": c.id, "method": c.method} for c in cells]})
    write_json_atomic(out / "progress" / "run.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                                      "executor": executor, "started": time.time()})


def clear_progress(out: str | Path) -> None:
    import shutil

    shutil.rmtree(Path(out) / "progress", ignore_errors=True)


def _driver_alive(run: dict, progress: Path) -> bool:
    """The run that wrote the progress files is still going: its driver process exists (same host), or, for a
    driver on another host, a worker touched its progress file in the last hour."""
    import os
    import socket
    import time

    if run.get("host") == socket.gethostname():
        try:
            os.kill(int(run["pid"]), 0)
        except (OSError, KeyError, ValueError, TypeError):
            return False
        return True
    touched = [path.stat().st_mtime for path in progress.glob("*.json")]
    return bool(touched) and time.time() - max(touched) < 3600


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def grid_status(out: str | Path) -> dict:
    """Per method: done (ok records), failed, running (in a live worker's unit, no record yet), left; the mean
    measured seconds per cell; the ETA of what is running or left; and the last errors."""
    out = Path(out)
    if not (out / "records").is_dir() and not (out / "cells.json").exists():
        raise FileNotFoundError(f"{out} holds no grid results (no records/ and no cells.json): is it the --out of "
                                f"'corrective run'?")
    plan = (_read_json(out / "cells.json") or {}).get("cells", [])
    method_of = {c["id"]: c["method"] for c in plan}
    records = {}
    for path in sorted((out / "records").glob("*.json")):
        record = _read_json(path)
        if record is not None:
            records[path.stem] = record
            method_of.setdefault(path.stem, record.get("method", "?"))
    run = _read_json(out / "progress" / "run.json")
    live = run is not None and _driver_alive(run, out / "progress")
    held, workers = set(), 0
    if live:
        for path in (out / "progress").glob("*.json"):
            progress = _read_json(path) if path.name != "run.json" else None
            if progress and progress.get("unit"):
                workers += 1
                held |= set(progress["unit"])
    methods: dict[str, dict] = {}
    for cell, method in method_of.items():
        row = methods.setdefault(method, {"done": 0, "failed": 0, "running": 0, "left": 0, "seconds": []})
        record = records.get(cell)
        if cell in held and (record is None or record.get("started", 0) < run["started"]):
            row["running"] += 1
        elif record is None:
            row["left"] += 1
        elif record.get("status") == "ok":
            row["done"] += 1
            timings = record.get("timings") or {}
            row["seconds"].append(timings.get("method_seconds", 0.0) + timings.get("eval_seconds", 0.0))
        else:
            row["failed"] += 1
    every = [s for row in methods.values() for s in row["seconds"]]
    remaining = 0.0
    for row in methods.values():
        per_cell = (sum(row["seconds"]) / len(row["seconds"])) if row["seconds"] else (
            sum(every) / len(every) if every else None)
        row["seconds_per_cell"] = per_cell
        if per_cell is not None:
            remaining += per_cell * (row["running"] + row["left"])
    failed = sorted((r for r in records.values() if r.get("status") != "ok"), key=lambda r: r.get("started", 0))
    return {"out": str(out), "live": live, "executor": (run or {}).get("executor"), "workers": workers,
            "methods": methods, "eta_seconds": remaining / max(workers, 1) if every else None,
            "errors": [(r.get("cell", "?"), r.get("error", "")) for r in failed[-5:]]}


def format_status(status: dict) -> str:
    rows = status["methods"]
    width = max([len(m) for m in rows] + [6])
    state = (f"running ({status['executor']}, {status['workers']} worker(s) busy)" if status["live"]
             else "not running")
    lines = [f"{status['out']}: {state}",
             f"{'method':{width}s} {'done':>6s} {'failed':>6s} {'running':>7s} {'left':>6s} {'s/cell':>8s}"]
    totals = [0, 0, 0, 0]
    for method, row in rows.items():
        counts = [row["done"], row["failed"], row["running"], row["left"]]
        totals = [a + b for a, b in zip(totals, counts)]
        per_cell = "-" if row["seconds_per_cell"] is None else f"{row['seconds_per_cell']:.2f}"
        lines.append(f"{method:{width}s} {counts[0]:6d} {counts[1]:6d} {counts[2]:7d} {counts[3]:6d} {per_cell:>8s}")
    lines.append(f"{'total':{width}s} {totals[0]:6d} {totals[1]:6d} {totals[2]:7d} {totals[3]:6d}")
    eta = status["eta_seconds"]
    if totals[2] + totals[3] == 0:
        lines.append("nothing left to run" + (f"; {totals[1]} failed cell(s) are retried by a re-run"
                                              if totals[1] else ""))
    elif eta is None:
        lines.append("ETA: unknown until a cell finishes")
    else:
        lines.append(f"ETA: {eta / 60:.1f} min for {totals[2] + totals[3]} cell(s) "
                     f"(measured s/cell x cells, over {max(status['workers'], 1)} worker(s))")
    for cell, error in status["errors"]:
        lines.append(f"failed {cell}: {error}")
    return "\n".join(lines)
