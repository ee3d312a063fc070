"""Run records: one JSON file per run, written atomically, with the environment that produced it; the grid's record
type (:class:`Record`, versioned) and :func:`upgrade`, the one place that turns a record of any earlier version, as
read from disk, into the current one."""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypedDict

import numpy as np
import torch


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; an empty view reads as null
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: str | Path, data: dict) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a record. The file is
    readable as the umask allows (:func:`file_mode`), like any file the process creates, not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(_jsonable(data), f, indent=1)
            f.flush()
            _chmod(f.fileno())
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


# -- temporary files: unique per writer, named after it, so that a dead writer's leftovers can be swept -------------
# ``.<name>.<pid>-<host tag>.<random>.tmp`` in the target's folder: two writers of one path never share a temporary
# file, and a temporary file whose writer (a process on this host) is gone is an orphan (:func:`sweep_temporaries`).

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{8})\.[^.]*\.tmp$")


@functools.cache
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_prefix(path: Path) -> str:
    """mkstemp's prefix for a temporary file of ``path``: its name, this process's pid and a tag of this host."""
    return f".{path.name}.{os.getpid()}-{_host_tag()}."


def _remove(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def sweep_temporaries(folder: str | Path, older_than: float | None = None) -> list[Path]:
    """Remove the orphan temporary files (``.*.tmp``) of :func:`write_json_atomic` and
    :func:`write_safetensors_atomic` in ``folder``: those whose writer was a process of this host that no longer
    exists, and, with ``older_than`` (a time.time()), any last modified before it (a writer on another host, or an
    older naming). A live writer's temporary file is left alone. Returns the removed paths."""
    removed = []
    try:
        entries = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return removed
    for path in entries:
        match = _TEMPORARY.match(path.name)
        orphan = bool(match) and match["host"] == _host_tag() and not _alive(int(match["pid"]))
        if not orphan and older_than is not None:
            try:
                orphan = path.stat().st_mtime < older_than
            except OSError:
                continue
        if orphan:
            _remove(path)
            removed.append(path)
    return removed


# -- file modes ------------------------------------------------------------------------------------------------------

@functools.cache
def _umask() -> int:
    """The process's umask, read once: from /proc where the kernel shows it (nothing changes), else by setting a
    restrictive one for an instant and restoring it (never a permissive one, even briefly)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    previous = os.umask(0o077)
    os.umask(previous)
    return previous


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0o666 less the umask (mkstemp's are 0600)."""
    return 0o666 & ~_umask()


def _chmod(target: int | str) -> None:
    """Give a new temporary file (a descriptor or a path) :func:`file_mode`; a filesystem without modes keeps its
    own."""
    try:
        (os.fchmod if isinstance(target, int) else os.chmod)(target, file_mode())
    except (OSError, NotImplementedError):
        pass


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def write_safetensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Write ``tensors`` as safetensors to a temporary file of its own in the same folder (two writers of one path
    never share it), then rename: a reader never sees half a file. Readable as the umask allows. Returns the
    written file's sha256."""
    from safetensors.torch import save_file  # lazy: only model writers need safetensors

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        _chmod(temporary)
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def environment() -> dict:
    from . import __version__  # lazy: the package's __init__ imports modules that import this one

    return {
        "corrective_unlearning": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


# -- the grid's record ------------------------------------------------------------------------------------------------
# Version 1: records written before the version existed (no ``record_version``); the oldest of them lack
# ``manipulation_variant``, ``setting_index``, ``forget_set``, ``expand`` and ``timings.shared_seconds``.
# Version 2: ``record_version`` written; every field of :class:`RecordHead` present.
RECORD_VERSION = 2


class RecordHead(TypedDict):
    """What every record holds, whoever wrote it (a worker, or the driver for a cell whose worker died)."""

    record_version: int
    cell: str  # the cell's id, also the file's name
    status: Literal["ok", "failed"]
    manipulation: str
    manipulation_variant: str  # the manipulation with its params, e.g. ``poison {"target":3}``
    n: int
    seed: int
    rate: float
    forget_set: str  # a forget set's label (grid key forget_sets), "" for a rate-based cell
    method: str
    hparams: dict
    setting_index: int | None  # position of hparams in the method's grid; None: unknown (a version-1 record)
    expand: int  # suspects added to the deletion set (grid key expand), 0 for none


class Timings(TypedDict, total=False):
    method_seconds: float  # the method alone (for ``original``: its training), synchronised
    eval_seconds: float
    tow_eval_seconds: float  # ToW's evaluation (grid option tow)
    shared_seconds: float  # shared work this cell computed, included in method_seconds
    shared_paid: dict[str, float]  # shared-work key -> its seconds, computed by this cell
    shared_reused: list[str]  # shared-work keys this cell reused from an earlier cell of its deletion set
    shared_model: dict  # a cell that reused another setting's model (``shared_with``): whose time it was


class Record(RecordHead, total=False):
    """A cell's record (``<out>/records/<cell>.json``), a plain dict at run time. Beyond the head, by kind:"""

    # the run's setting (every record a worker wrote)
    dataset: str
    model: str
    recipe: dict
    environment: dict
    worker: str
    started: float
    setting: dict
    index_hashes: dict[str, str]
    original_cache_key: str
    original_cache: str  # the ``original`` cell: hit or miss
    # a finished cell
    metrics: dict[str, float | None]  # NaN is stored as null
    timings: Timings
    method_notes: dict  # what the method says about its run
    forget_size: int  # 0 in the 0% discovery column (clean-data defences, grid rate 0)
    clean_samples: int  # the clean reserve's samples a defence trained on (corrective_unlearning.reserve)
    shared_with: str  # the cell whose model this one provably equals (it ran nothing itself)
    # a failed cell
    error: str
    traceback: str
    attempts: int  # the driver's: how often the cell's worker died
    # grid options
    suspects: dict  # expand: the suspects that grew the deletion set
    forget_set_info: dict  # forget_sets: how the set was chosen
    tow: dict  # tow: the model's ToW accuracies
    references: dict  # tow: the references' block


# method, hparams -> the setting's position in the run's grid, or None
SettingIndex = Callable[[str, dict], "int | None"]


def upgrade(record: Mapping, setting_index: SettingIndex | None = None) -> Record:
    """``record`` (any version, as read from disk) as the current version: a new dict, the input untouched.
    Repairs fill only what is missing, so upgrading a current record changes nothing but its copy.
    ``setting_index``: the run's grid order (from its ``config.yaml``), for records written before
    ``setting_index`` existed; without it, or where the grid does not list the setting, it stays None (selection
    ties then go to record order)."""
    upgraded = dict(record)
    if not upgraded.get("manipulation_variant"):  # older records only name the manipulation
        upgraded["manipulation_variant"] = upgraded.get("manipulation")
    if upgraded.get("forget_set") is None:  # before forget sets existed: rate-based
        upgraded["forget_set"] = ""
    if upgraded.get("expand") is None:  # before expand existed: S_f as identified
        upgraded["expand"] = 0
    if upgraded.get("setting_index") is None:
        upgraded["setting_index"] = _grid_position(upgraded, setting_index)
    if isinstance(upgraded.get("timings"), dict):
        upgraded["timings"] = _upgrade_timings(upgraded["timings"])
    upgraded["record_version"] = RECORD_VERSION
    return upgraded  # type: ignore[return-value]


def _grid_position(record: dict, setting_index: SettingIndex | None) -> int | None:
    method = record.get("method")
    if setting_index is None or method is None:
        return None
    return setting_index(method, record.get("hparams") or {})


def _upgrade_timings(timings: dict) -> Timings:
    """Before ``shared_seconds`` existed, the shared work a cell computed is the sum of its ``shared_paid``."""
    if timings.get("shared_seconds") is not None or not timings.get("shared_paid"):
        return timings  # type: ignore[return-value]
    paid = (_finite_or_zero(v) for v in timings["shared_paid"].values())
    return {**timings, "shared_seconds": float(sum(paid))}  # type: ignore[typeddict-item]


def _finite_or_zero(value: Any) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else 0.0
