"""Shared fixtures. Every test runs hermetically: the cache goes to a temporary folder, and the data search path
never reaches the user's own data directories (so "missing data" tests behave the same on every machine)."""
from __future__ import annotations

import os

import pytest
import torch

from corrective_unlearning.data import load_dataset
from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import Recipe
from helpers import RECIPE


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: reads a real dataset; a few seconds (skipped when it is missing)")
    # The models here are tiny: one intra-op thread is as fast on an idle machine and avoids a >10x slowdown when
    # other processes compete for the (two) cores. CORRECTIVE_TEST_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("CORRECTIVE_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Module- and session-scoped fixtures run before the per-test isolation below: give them a private cache
    too, so no test ever reads or writes the user's ~/.cache (a stale entry there changed results once)."""
    previous = os.environ.get("CORRECTIVE_CACHE_DIR")
    os.environ["CORRECTIVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-cache"))
    yield
    if previous is None:
        os.environ.pop("CORRECTIVE_CACHE_DIR", None)
    else:
        os.environ["CORRECTIVE_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """A private cache dir per test; no user data dir, no $CORRECTIVE_DATA_DIR."""
    from corrective_unlearning.data import locate

    cache = tmp_path / "cache"
    monkeypatch.setenv("CORRECTIVE_CACHE_DIR", str(cache))
    monkeypatch.delenv("CORRECTIVE_DATA_DIR", raising=False)
    monkeypatch.setattr(locate, "DEFAULT_DATA_DIR", tmp_path / "default-data-dir")
    return cache


@pytest.fixture(scope="session")
def synthetic():
    """4 classes, 384 train / 192 test images of 3x16x16."""
    return load_dataset("synthetic")


@pytest.fixture(scope="session")
def runtime():
    return Runtime(device=torch.device("cpu"), progress=False)


@pytest.fixture(scope="session")
def tiny_recipe():
    return Recipe(steps=20, batch_size=32, crop_padding=1, flip=False)


@pytest.fixture(scope="session")
def poisoned_setting(synthetic, runtime):
    """The method tests' setting: 40 poisoned samples of the synthetic set, seed 0, 16 held out for validation.
    Shared by the whole session: tests only read it (building it takes milliseconds; sharing keeps one object)."""
    return build_setting(synthetic, "poison", 40, 0, runtime, val_size=16)


@pytest.fixture(scope="module")
def poisoned(poisoned_setting, runtime):
    """``(setting, original, info)``: the original trained on :func:`poisoned_setting` with ``helpers.RECIPE``.
    Trained once (a module fixture runs before the per-test cache, so the session's cache keeps it), then read back
    from that cache: each module gets its own model object, so a module that changes it changes no other."""
    original, info = train_original(poisoned_setting, "small_cnn", RECIPE, runtime)
    return poisoned_setting, original, info
