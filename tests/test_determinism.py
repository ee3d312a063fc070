"""The same command gives the same bits (on the CPU, same thread count): REM's widening and every other random draw
come from generators seeded by the run's seed, never from the global RNG state left by earlier work, so a
correction repeated in one process, in another process, or a grid's cells run in another order give identical
weights and records."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import torch

from corrective_unlearning import correct
from corrective_unlearning.data import load_dataset
from corrective_unlearning.models import create_model
from corrective_unlearning.runner import Worker, expand_cells, load_grid_config
from corrective_unlearning.training import Recipe
from grid_helpers import small_grid, write_grid

RECIPE = Recipe(steps=4, batch_size=32, crop_padding=1, flip=False)
REM = {"steps": 6, "max_flush_passes": 2}
FLAGGED = list(range(0, 120, 6))  # 20 samples


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", 4, 3)


def _data():
    data = load_dataset("synthetic")
    return data.train_images, data.train_labels


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rem(model, data):
    return correct(model, data, FLAGGED, method="rem", hparams=REM, recipe=RECIPE, device="cpu", seed=3)


def test_rem_twice_in_one_process_gives_bit_identical_weights():
    model, data = _model(), _data()
    first, report = _rem(model, data)
    torch.manual_seed(123)
    torch.rand(5)  # unrelated work between the two calls moves the global RNG
    second, _ = _rem(model, data)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert report["method_notes"]["spare_capacity"] == "added at unlearning time"
    assert report["method_notes"]["steps"] == REM["steps"]


_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import test_determinism as t
torch.set_num_threads(1)
model, data = t._model(), t._data()
if {noise}:
    torch.manual_seed(123); torch.rand(5)  # other work moved the global RNG before the correction
fixed, _ = t._rem(model, data)
print("DIGEST", t._digest(fixed))
"""


def test_rem_in_two_processes_gives_the_same_weights(tmp_path):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "CORRECTIVE_CACHE_DIR": str(tmp_path / "cache")}
    digests = []
    for noise in (False, True):
        result = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=tests, noise=noise)], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        digests.append([line.split()[1] for line in result.stdout.splitlines() if line.startswith("DIGEST")][0])
    assert digests[0] == digests[1]
    # and this process (one thread, as conftest sets) agrees with both
    assert _digest(_rem(_model(), _data()).model) == digests[0]


GRID = small_grid({"rem": {"grid": {"lr": [0.005, 0.025]}, "params": {"steps": 24, "max_flush_passes": 2}},
                   "cf": {"grid": {"last_k": ["all"]}, "params": {"steps": 3}}})


def test_a_grid_unit_in_two_cell_orders_gives_identical_metrics(tmp_path):
    config = load_grid_config(str(write_grid(tmp_path, GRID)), [])
    unit = [c for c in expand_cells(config) if c.method != "original"]
    assert sorted(c.method for c in unit) == ["cf", "rem", "rem"]
    orders = {"grid": unit, "reversed": list(reversed(unit))}
    results = {}
    for name, cells in orders.items():
        records = Worker(config, tmp_path / name).run_unit(cells)
        assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
        results[name] = {r["cell"]: (json.dumps(r["metrics"], sort_keys=True),
                                     json.dumps(r["method_notes"], sort_keys=True)) for r in records}
    assert results["grid"] == results["reversed"]
    # the test means something: REM's returned models are trained ones, not the original (round 0)
    assert all(json.loads(notes)["selected_round"] >= 1 for metrics, notes in results["grid"].values()
               if "selected_round" in notes)
