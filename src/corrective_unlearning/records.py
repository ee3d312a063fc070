"""Run records: one JSON file per run, written atomically, with the environment that produced it."""
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
from typing import Any

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
    from safetensors.torch import save_file

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
    from . import __version__

    return {
        "corrective_unlearning": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
