"""Every method's weights on a fixed seed are pinned to values recorded with the code *before* the house-in-order
refactor (one training loop for NPO, REM and SCRUB, one parameter mechanism, typed records): a refactor that changes
a single bit of any method's output fails here.

The reference digests live in ``tests/data/method_weights.json`` and were written by running this file with
``CORRECTIVE_RECORD_WEIGHTS=1`` on the commit before the refactor. Bits are only defined for one CPU kernel family:
where the machine's ``torch.backends.cpu.get_cpu_capability()`` differs from the recorded one, the weights are
compared with the recorded per-tensor sums at a float tolerance instead, and the test says so."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.methods import METHODS
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.training import Recipe

RECORD = Path(__file__).parent / "data" / "method_weights.json"
RECIPE = Recipe(steps=12, batch_size=32, crop_padding=1, flip=True)
# Small budgets, so the whole file runs in seconds; each still runs the method's own loop several times.
HPARAMS = {
    "eu": {"steps": 6},
    "cf": {"steps": 6},
    "badt": {"steps": 4},
    "l1-sparse": {"epochs": 1, "steps": 4},
    "neggrad": {"epochs": 1, "steps": 4},
    "neggrad+": {"epochs": 1, "steps": 4},
    "npo": {"max_epochs": 2, "steps": 4, "stop_acc": 0.0},
    "potion": {"max_tries": 3},
    "random-label": {"epochs": 1, "steps": 4},
    "rem": {"steps": 6, "max_flush_passes": 2, "passes": 2},
    "rum": {"subsets": 2, "steps": ["none", "cf"], "step_hparams": [{}, {"steps": 3}]},
    "salun": {"epochs": 1, "steps": 4},
    "scrub": {"epochs": 2, "msteps": 1, "max_steps": 6},
    "ssd": {},
    "trigger_synthesis": {"synth_steps": 6, "steps": 6, "checks": 2},
}


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _sums(state: dict) -> dict:
    return {k: float(v.double().sum()) for k, v in sorted(state.items()) if v.is_floating_point()}


@pytest.fixture(scope="module")
def task(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 40, 0, runtime, val_size=16)
    original, info = train_original(setting, "small_cnn", RECIPE, runtime)
    return make_task(setting, original, deletion_set(setting, 0.5), RECIPE, runtime, info)


def _run(task, name):
    torch.manual_seed(999)  # the global RNG must not matter; set it anyway so a leak shows as a change, not noise
    model = METHODS.get(name)(task, HPARAMS[name]).model
    return model.state_dict()


# The clean-data defences train on a clean reserve (half of the validation split): their own task, with one.
RESERVE_HPARAMS = {
    "anp": {"iterations": 4},
    "ft_after": {"first": "cf", "first_params": {"steps": 3}, "steps": 3},
    "ft_clean": {"steps": 4},
    "i-bau": {"rounds": 1, "K": 2},
    "nad": {"steps": 3, "teacher_steps": 2},
}


@pytest.fixture(scope="module")
def reserve_task(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 40, 0, runtime, val_size=16)
    original, info = train_original(setting, "small_cnn", RECIPE, runtime)
    setting = setting.with_reserve(0.5)
    return make_task(setting, original, deletion_set(setting, 0.5), RECIPE, runtime, info)


def test_every_method_is_pinned():
    assert sorted({**HPARAMS, **RESERVE_HPARAMS}) == METHODS.names(), \
        "a new method: add it to HPARAMS and record its weights"


@pytest.mark.parametrize("name", sorted(RESERVE_HPARAMS))
def test_reserve_weights_match_the_recorded_ones(reserve_task, name):
    torch.manual_seed(999)
    _check(reserve_task, name, METHODS.get(name)(reserve_task, RESERVE_HPARAMS[name]).model.state_dict())


def _check(task, name, state=None):
    state = _run(task, name) if state is None else state
    capability = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("CORRECTIVE_RECORD_WEIGHTS"):
        data = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        data.setdefault("cpu_capability", capability)
        data.setdefault("torch", torch.__version__)
        data.setdefault("methods", {})[name] = {"digest": _digest(state), "sums": _sums(state)}
        RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.skip("recorded")
    recorded = json.loads(RECORD.read_text())
    expected = recorded["methods"][name]
    if capability == recorded["cpu_capability"] and torch.__version__ == recorded["torch"]:
        assert _digest(state) == expected["digest"], f"{name}'s weights changed"
    else:  # another kernel family: bits are not defined across it, sums still are to float precision
        got = _sums(state)
        assert got.keys() == expected["sums"].keys()
        for key, value in expected["sums"].items():
            assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-3), f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(HPARAMS))
def test_weights_match_the_recorded_ones(task, name):
    _check(task, name)
