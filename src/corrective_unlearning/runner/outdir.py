"""The ``--out`` folder of a grid, apart from its records: who may write it, whether a run may resume there, and
the plan and progress files a running grid leaves in it.

One ``corrective run`` at a time writes to an ``--out``: it holds an advisory lock on ``<out>/run.lock`` (flock,
released when the process dies) and a second run on the same folder is refused, naming the first's process. A run
resumes a folder only with the same setting (:func:`check_resume`); orphan temporary files of dead writers are
swept (:func:`sweep_out`)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config import ConfigError, read_yaml
from ..methods import hparams_key
from ..records import sweep_temporaries, write_json_atomic
from .spec import Cell

# -- the lock on --out: one run at a time -----------------------------------------------------------------------------

LOCK = "run.lock"


class OutLockedError(RuntimeError):
    """Another ``corrective run`` holds the lock on this ``--out``."""


def check_out_dir(out: str | Path) -> None:
    """Raise a one-line ConfigError unless ``out`` is (or can be made) a folder this process can write."""
    out = Path(out)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == out else f"cannot be made: {existing} is a file"
        raise ConfigError(f"--out {out} {where}; expected a folder (new or a previous run's)")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "" if existing == out else f" ({existing}, where it would be made)"
        raise ConfigError(f"--out {out} is not writable{what}; choose a folder you can write to")


@contextmanager
def out_lock(out: str | Path) -> Iterator[None]:
    """Hold the advisory lock ``<out>/run.lock`` (flock: released when this process dies, also by a kill) while a
    grid runs; its content names the holder (pid, host, start time). A second holder is refused at once with an
    :class:`OutLockedError` naming the first."""
    out = Path(out)
    path = out / LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutLockedError(f"--out {out} is in use by another 'corrective run' ({_holder(path)}); wait for it "
                                 f"to finish (corrective status {out}) or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _holder(path: Path) -> str:
    """``pid 123 on host h, started 2024-05-01 10:00:00``: who holds the lock (its holder writes this at once)."""
    for _ in range(20):  # the holder writes its name right after taking the lock
        try:
            holder = json.loads(path.read_text())
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))
            return f"pid {holder['pid']} on host {holder['host']}, started {started}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "pid and host unknown"


def sweep_out(out: str | Path, older_than: float | None = None) -> list[Path]:
    """Remove orphan temporary files of dead writers (see :func:`..records.sweep_temporaries`) in the folders a
    run writes: ``<out>``, ``records/``, ``references/``, ``forget_sets/``."""
    out = Path(out)
    return [path for folder in (out, out / "records", out / "references", out / "forget_sets")
            for path in sweep_temporaries(folder, older_than)]


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


# -- the plan and progress files -----------------------------------------------------------------------------------
# While a grid runs, ``<out>/progress/run.json`` names the driver process and ``<out>/progress/<worker>.json`` the
# unit each worker holds and the cell it runs; the driver removes the folder when it returns. ``<out>/cells.json``
# lists every cell of the grid last run (id and method), so ``status`` (:func:`.store.grid_status`) can count what
# is left.

def write_plan(out: str | Path, cells: list[Cell], executor: str) -> None:
    out = Path(out)
    write_json_atomic(out / "cells.json", {"cells": [{"id": c.id, "method": c.method} for c in cells]})
    write_json_atomic(out / "progress" / "run.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                                      "executor": executor, "started": time.time()})


def clear_progress(out: str | Path) -> None:
    shutil.rmtree(Path(out) / "progress", ignore_errors=True)
