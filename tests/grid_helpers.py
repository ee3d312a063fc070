"""What the grid tests share: a grid config written from a dict, and a child process's environment."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

SRC = str(Path(__file__).resolve().parents[1] / "src")


def write_grid(tmp_path: Path, grid: dict, **changes) -> Path:
    """``grid`` with ``changes`` as ``tmp_path/grid.yaml``."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**grid, **changes}))
    return path


def child_env(**extra) -> dict:
    """The environment of a child process: it imports this checkout and uses one thread."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}
