"""Writes tests/data/legacy_keys.json: the cell ids of every shipped config and the original-model cache keys of
their settings, on the synthetic dataset. Run once with the code before a change that must not alter them
(`PYTHONPATH=<old checkout>/src python tests/data/legacy_keys.py > tests/data/legacy_keys.json`); the test
tests/test_legacy_keys.py recomputes them with today's code."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from corrective_unlearning.cache import cache_key
from corrective_unlearning.config import read_yaml
from corrective_unlearning.data import load_dataset
from corrective_unlearning.experiment import build_setting, original_spec
from corrective_unlearning.runner.spec import expand_cells, load_grid_config
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import default_recipe

ROOT = Path(__file__).resolve().parents[2]


def legacy_keys(config_paths: list[Path]) -> dict:
    data = load_dataset("synthetic")
    runtime = Runtime(device=torch.device("cpu"), progress=False)
    out = {}
    for path in config_paths:
        raw = read_yaml(path)
        if "manipulation" in raw:  # a training config (configs/demo.yaml): one setting, no cells
            cells, grids = [], [(raw["manipulation"]["name"], raw["manipulation"].get("params", {}))]
        else:
            config = load_grid_config(str(path), [])
            cells, grids = expand_cells(config), [(m.name, m.params) for m in config.manipulation_grids()]
        keys = []
        for name, params in grids:
            if name not in ("poison", "none", "random_labels"):
                continue  # interclass pairs name dataset classes the synthetic set lacks
            n = 0 if name == "none" else 20
            setting = build_setting(data, name, n, 0, runtime, val_size=24, **params)
            keys.append(cache_key(original_spec(setting, "small_cnn", default_recipe("synthetic"))))
        ids = sorted(c.id for c in cells)
        out[str(path.relative_to(ROOT))] = {"cells": len(ids), "cell_ids_sha256": hashlib.sha256(
            "\n".join(ids).encode()).hexdigest(), "cache_keys": keys}
    return out


if __name__ == "__main__":
    paths = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "attacks" not in p.parts)
    json.dump(legacy_keys(paths), sys.stdout, indent=1, sort_keys=True)
