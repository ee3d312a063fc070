"""What the grid tests share: a small grid config, written from a dict, and a child process's environment."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

SRC = str(Path(__file__).resolve().parents[1] / "src")


def small_grid(methods: dict, **changes) -> dict:
    """The grid config the grid tests start from: the synthetic set with 40 poisoned samples (16 held out for
    validation), a 15-step recipe, rate 0.5, seed 0, and ``methods``; ``changes`` replace top-level keys."""
    return {"dataset": {"name": "synthetic", "val_size": 16}, "recipe": {"steps": 15, "batch_size": 32},
            "manipulations": [{"name": "poison", "sizes": [40]}], "rates": [0.5], "seeds": [0],
            "methods": methods, **changes}


def write_grid(tmp_path: Path, grid: dict, **changes) -> Path:
    """``grid`` with ``changes`` as ``tmp_path/grid.yaml``."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**grid, **changes}))
    return path


def child_env(**extra) -> dict:
    """The environment of a child process: it imports this checkout and uses one thread."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}
