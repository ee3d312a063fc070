"""The records a grid writes are pinned to the ones written by the code *before* the house-in-order refactor
(typed, versioned records): every field except the volatile ones (times, host, cache hits) is compared, so the
refactor changes neither the schema on disk nor a metric.

``tests/data/records_before.json`` was written by running this file with ``CORRECTIVE_RECORD_WEIGHTS=1`` on the
commit before the refactor. Metrics are compared exactly on the recorded CPU kernel family, else to float
tolerance (see ``test_weights_pinned.py``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from corrective_unlearning.runner import load_grid_config, run_grid

RECORD = Path(__file__).parent / "data" / "records_before.json"
GRID = {
    "dataset": {"name": "synthetic", "val_size": 16},
    "recipe": {"steps": 15, "batch_size": 32},
    "manipulations": [{"name": "poison", "sizes": [40]}, {"name": "interclass", "sizes": [40]}],
    "rates": [0.5],
    "seeds": [0],
    "methods": {
        "cf": {"params": {"steps": 5}},
        "rem": {"params": {"steps": 4, "max_flush_passes": 2, "passes": 2}},
        "eu": {"params": {"steps": 5}, "expand": [8]},
        "ssd": {"grid": {"alpha": [10], "lambda_ratio": [0.1]}},
    },
}
# record_version: written since the refactor (the schema's version), so the records recorded before it lack it
VOLATILE = {"started", "timings", "worker", "environment", "original_cache", "record_version"}


def _stable(record: dict) -> dict:
    stable = {k: v for k, v in record.items() if k not in VOLATILE}
    if isinstance(stable.get("suspects"), dict):
        stable["suspects"] = {k: v for k, v in stable["suspects"].items() if k != "seconds"}
    return stable


def _numbers_close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_numbers_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_numbers_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return b == pytest.approx(a, rel=1e-3, abs=1e-2)
    return a == b


def test_records_match_the_recorded_ones(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(GRID))
    records = run_grid(load_grid_config(str(path), []), tmp_path / "out", progress=False)
    got = {r["cell"]: _stable(json.loads(json.dumps(r))) for r in records}
    if os.environ.get("CORRECTIVE_RECORD_WEIGHTS"):
        RECORD.write_text(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                      "torch": torch.__version__, "records": got}, indent=1, sort_keys=True) + "\n")
        pytest.skip("recorded")
    recorded = json.loads(RECORD.read_text())
    assert sorted(got) == sorted(recorded["records"])
    same_kernels = (recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
                    and recorded["torch"] == torch.__version__)
    for cell, expected in recorded["records"].items():
        if same_kernels:
            assert got[cell] == expected, cell
        else:
            assert _numbers_close(expected, got[cell]), cell
