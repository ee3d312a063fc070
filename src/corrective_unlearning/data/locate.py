"""Where data files are looked for, and the error that lists every place searched.

Search order for a data file or folder:
  1. an explicit path (``dataset.path`` in the config, ``--data-path`` on the command line);
  2. the data directory (``dataset.data_dir``, ``--data-dir``);
  3. ``$CORRECTIVE_DATA_DIR``;
  4. ``~/.cache/corrective-unlearning/data`` (where ``--download`` puts files);
  5. system locations a source names (e.g. Debian's ``/usr/share/datasets/fashion-mnist``).
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path.home() / ".cache" / "corrective-unlearning" / "data"


class DataNotFoundError(FileNotFoundError):
    pass


def cache_dir() -> Path:
    """Root for decoded-data and original-model caches (``$CORRECTIVE_CACHE_DIR`` overrides)."""
    return Path(os.environ.get("CORRECTIVE_CACHE_DIR", Path.home() / ".cache" / "corrective-unlearning"))


def data_dirs(data_dir: str | os.PathLike | None = None, system: tuple[str, ...] = ()) -> list[Path]:
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get("CORRECTIVE_DATA_DIR"):
        dirs.append(Path(os.environ["CORRECTIVE_DATA_DIR"]).expanduser())
    dirs.append(DEFAULT_DATA_DIR)
    dirs.extend(Path(s) for s in system)
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find(
    candidates: list[str],
    data_dir: str | os.PathLike | None,
    *,
    what: str,
    fetch_hint: str,
    system: tuple[str, ...] = (),
    explicit: str | os.PathLike | None = None,
) -> Path:
    """Return the first existing ``dir/candidate``; otherwise raise naming every path tried and how to fetch."""
    tried = []
    if explicit:
        path = Path(explicit).expanduser()
        if path.exists():
            return path
        tried.append(path)
    for directory in data_dirs(data_dir, system):
        for name in candidates:
            path = directory / name
            if path.exists():
                return path
            tried.append(path)
    listing = "\n".join(f"  - {p}" for p in tried)
    raise DataNotFoundError(f"{what} not found. Searched, in order:\n{listing}\nTo get it: {fetch_hint}")
