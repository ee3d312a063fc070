"""The results store: ``<out>/records/<cell id>.json``, one atomic file per cell, written by the worker that ran
it (a temporary file renamed into place, so concurrent writers never leave half a record). Everything else is
derived from it: the aggregate tables, the resume check, ``corrective status``.

A file in ``records/`` that is not a record (not JSON, or JSON without a record's fields) is moved to
``records/invalid/`` by the next run, with a warning, and its cell runs again; the readers (``status``, ``report``)
leave it out with a warning. The rest of the ``--out`` folder (its lock, the resume check, the plan and progress
files a run writes) is :mod:`.outdir`'s."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import from_dict, read_yaml
from ..records import write_json_atomic
from .outdir import (  # noqa: F401  (the --out folder's lock, resume check and progress files: re-exported)
    IDENTITY_KEYS,
    LOCATION_KEYS,
    LOCK,
    OutLockedError,
    check_out_dir,
    check_resume,
    clear_progress,
    out_lock,
    sweep_out,
    write_plan,
)
from .spec import Cell, GridConfig, expand_cells

INVALID = "invalid"  # records/invalid/: files of records/ that are not records, set aside by a run

# What every record holds (the runner writes more): the fields status and report group and count by.
_REQUIRED = {"cell": str, "status": str, "method": str, "manipulation": str, "n": int, "seed": int,
             "rate": (int, float), "hparams": dict}


def record_problem(record, stem: str | None = None) -> str | None:
    """Why ``record`` (parsed JSON of ``<stem>.json``) is not a cell's record, or None when it is one: a mapping
    with a cell id (the file's name), a status ok (with metrics) or failed (with an error), the method and the
    cell's manipulation, n, seed, rate and hyperparameters."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {'null' if record is None else type(record).__name__}"
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    wrong = [key for key, kind in _REQUIRED.items()
             if not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool))]
    if wrong:
        return f"field(s) {', '.join(wrong)} of the wrong type"
    if stem is not None and record["cell"] != stem:
        return f"its cell is {record['cell']!r}, not the file's name"
    if record["status"] == "ok" and not isinstance(record.get("metrics"), dict):
        return "status ok without metrics"
    if record["status"] not in ("ok", "failed"):
        return f"status {record['status']!r} (expected ok or failed)"
    return None


def read_record(path: Path) -> tuple[dict | None, str | None]:
    """(the record in ``path``, None), or (None, why it is not one): unreadable, not JSON, not a record."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        return None, f"unreadable ({error})"
    except json.JSONDecodeError as error:
        return None, f"not JSON ({error})"
    problem = record_problem(data, path.stem)
    return (None, problem) if problem else (data, None)


class ResultStore:
    """``<out>/records/<cell id>.json``: one file per finished cell."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.records = self.out / "records"

    def path(self, cell: Cell) -> Path:
        return self.records / f"{cell.id}.json"

    def done(self, cell: Cell) -> bool:
        path = self.path(cell)
        if not path.exists():
            return False
        record, _ = read_record(path)
        return record is not None and record["status"] == "ok"  # not a record: run the cell again

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

    def set_aside_invalid(self, warn=None) -> list[tuple[Path, str]]:
        """Move every file of ``records/`` that is not a record to ``records/invalid/`` (a name already there gets
        a numbered suffix), saying so on stderr (or to ``warn``); their cells count as not done. Returns
        (new path, why) of each."""
        moved = []
        for path in sorted(self.records.glob("*.json")):
            record, problem = read_record(path)
            if record is not None:
                continue
            target = self.records / INVALID / path.name
            for i in range(1, 10_000):
                if not target.exists():
                    break
                target = target.with_name(f"{path.name}.{i}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, target)
            except FileNotFoundError:  # gone meanwhile
                continue
            moved.append((target, problem))
            (warn or _warn)(f"warning: {path} is not a valid record ({problem}); moved to "
                            f"{target.relative_to(self.out)}, its cell runs again")
        return moved


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Loaded:
    """What :func:`read_records` found: the records (of the stored config's cells, when asked), the files that
    are not records, and the records of cells the stored config does not have."""

    records: list[dict] = field(default_factory=list)
    invalid: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)

    def notes(self, out: Path) -> list[str]:
        """One warning line for the invalid files and one for the ignored records, as far as there are any."""
        lines = []
        if self.invalid:
            path, problem = self.invalid[0]
            lines.append(f"warning: {len(self.invalid)} file(s) in {out / 'records'} are not valid records and were "
                         f"left out (first: {path.name}, {problem}); the next 'corrective run' moves them to "
                         f"records/{INVALID}/ and runs their cells again")
        if self.ignored:
            lines.append(f"note: {len(self.ignored)} record(s) in {out / 'records'} are of cells that "
                         f"{out / 'config.yaml'} does not have (an earlier grid, e.g. other hyperparameters) and "
                         f"were ignored")
        return lines


def read_records(out: str | Path, config_only: bool = False) -> Loaded:
    """The valid records of ``<out>/records`` (file-name order) and the files that are not records. With
    ``config_only``, records of cells that the stored ``config.yaml`` does not expand to are set apart as
    ``ignored`` (when the stored config is not a full grid config, every record counts)."""
    out = Path(out)
    loaded = Loaded()
    for path in sorted((out / "records").glob("*.json")):
        record, problem = read_record(path)
        if record is None:
            loaded.invalid.append((path, problem))
        else:
            loaded.records.append(record)
    cells = config_cell_ids(out) if config_only else None
    if cells is not None:
        loaded.ignored = [r for r in loaded.records if r["cell"] not in cells]
        loaded.records = [r for r in loaded.records if r["cell"] in cells]
    return loaded


def load_records(out: str | Path) -> list[dict]:
    """Every valid record of ``<out>/records``; files that are not records are left out with a warning."""
    loaded = read_records(out)
    for line in loaded.notes(Path(out)):
        _warn(line)
    return loaded.records


def config_cell_ids(out: str | Path) -> set[str] | None:
    """The ids of the cells of ``<out>/config.yaml`` (the grid last started there), or None when it is absent or
    not a grid config that expands to cells (e.g. only its ``methods``)."""
    path = Path(out) / "config.yaml"
    if not path.exists():
        return None
    try:
        data = read_yaml(path)
        if not data.get("manipulations"):
            return None
        data.pop("resolved_recipe", None)  # written beside the config, not a key of it
        return {cell.id for cell in expand_cells(from_dict(GridConfig, data))}
    except Exception as error:  # a stale or foreign config: every record counts, and the report says why
        _warn(f"note: {path} does not expand to a grid ({type(error).__name__}: {error}); every record is read")
        return None


# -- status -------------------------------------------------------------------------------------------------------
# While a grid runs, ``<out>/progress/run.json`` names the driver process and ``<out>/progress/<worker>.json`` the
# unit each worker holds and the cell it runs (:func:`.outdir.write_plan`); the driver removes the folder when it
# returns. ``<out>/cells.json`` lists every cell of the grid last run (id and method), so ``status`` can count what
# is left.

def _driver_alive(run: dict, progress: Path) -> bool:
    """The run that wrote the progress files is still going: its driver process exists (same host), or, for a
    driver on another host, a worker touched its progress file in the last hour."""
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
    records, invalid = {}, []
    for path in sorted((out / "records").glob("*.json")):
        record, problem = read_record(path)
        if record is None:  # not a record: its cell counts as left
            invalid.append((path.name, problem))
        else:
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
            "errors": [(r.get("cell", "?"), r.get("error", "")) for r in failed[-5:]], "invalid": invalid}


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
    invalid = status.get("invalid") or []
    if invalid:
        lines.append(f"warning: {len(invalid)} file(s) in records/ are not valid records (first: {invalid[0][0]}, "
                     f"{invalid[0][1]}); counted as left: the next 'corrective run' moves them to records/{INVALID}/ "
                     f"and runs their cells again")
    return "\n".join(lines)
