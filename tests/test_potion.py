"""Potion (SPEC 5): label-free importance, percentile threshold from |S_f| / |S_tr|, retries from M_o."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from corrective_unlearning.runner import load_grid_config, run_grid
from corrective_unlearning.methods import METHODS, potion, ssd
from grid_helpers import small_grid, write_grid
from helpers import deletion_task, same, state


@pytest.fixture(scope="module")
def task(poisoned, runtime):
    return deletion_task(poisoned, 0.55, runtime)  # |S_f| = 22


def _slow_importance(task, indices: list[int], batch_size: int) -> list[torch.Tensor]:
    """Independent path: each sample's own gradient of its logits' L2 norm, averaged into its batch's mean
    gradient, absolute value, weighted by the batch's share of the samples."""
    model = task.original.eval()
    params = list(model.parameters())
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    totals = [torch.zeros_like(p) for p in params]
    for batch in batches:
        per_sample = []
        for i in batch:
            norm = torch.linalg.vector_norm(model(task.inputs(torch.tensor([i])))[0])
            per_sample.append(torch.autograd.grad(norm, params))
        for total, grads in zip(totals, zip(*per_sample)):
            total += len(batch) * (sum(grads) / len(batch)).abs()
    return [t / len(indices) for t in totals]


def test_importance_matches_a_per_sample_computation_of_the_norm_gradient(task):
    forget = sorted(task.forget_idx.tolist())
    assert len(forget) % 8 != 0  # 22 = 8 + 8 + 6: the last batch is partial
    fast = potion.importance(task, task.original, task.forget_idx, 8)
    slow = _slow_importance(task, forget, 8)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-9) for a, b in zip(fast, slow))
    assert any(float(a.sum()) > 0 for a in fast)


def test_percentile_and_alpha_match_numpy_on_the_ratio_by_hand(task):
    task.cache.clear()
    hp = METHODS.get("potion").resolve({})
    forget_imp, data_imp = potion.importances(task, hp)
    by_hand = np.concatenate([(f.double() / d.double().clamp_min(torch.finfo(torch.float32).tiny)).flatten().numpy()
                              for f, d in zip(forget_imp, data_imp)])
    assert np.array_equal(potion.ratios(forget_imp, data_imp), by_hand)
    frac = len(task.forget_idx) / (len(task.forget_idx) + len(task.retain_idx))
    assert potion.percentile_for(frac) == pytest.approx(100 - math.log(1 + 100 * frac))
    first = METHODS.get("potion")(task, {}).notes["tries"][0]
    assert first["frac"] == pytest.approx(frac)
    assert first["alpha"] == pytest.approx(float(np.percentile(by_hand, 100 - math.log(1 + 100 * frac))))
    task.cache.clear()


def test_each_retry_restarts_from_the_original(task, monkeypatch):
    before = state(task.original)
    real = potion.forget_accuracy
    calls = []

    def fake(task_, model, batch_size):  # the original: 1.0 (target 0.2); tries: 1.0, 1.0, then the real value 0
        if model is task_.original:
            return 1.0
        calls.append(real(task_, model, batch_size))
        return 1.0 if len(calls) <= 2 else 0.0

    monkeypatch.setattr(potion, "forget_accuracy", fake)
    result = METHODS.get("potion")(task, {})
    model, notes = result.model, result.notes
    assert notes["tries_used"] == 3 and notes["stopped"] is True and len(notes["tries"]) == 3
    frac = len(task.forget_idx) / len(task.train_idx)
    assert [t["frac"] for t in notes["tries"]] == pytest.approx([frac, frac * 1.1, frac * 1.1 ** 2])
    # Independently: one dampening of a copy of M_o at frac x 1.1^2.
    forget_imp, data_imp = potion.importances(task, METHODS.get("potion").resolve({}))
    ratio = np.concatenate([(f.double() / d.double().clamp_min(torch.finfo(torch.float32).tiny)).flatten().numpy()
                            for f, d in zip(forget_imp, data_imp)])
    alpha = float(np.percentile(ratio, 100 - math.log(1 + 100 * frac * 1.1 ** 2)))
    expected = copy.deepcopy(task.original)
    ssd.dampen(expected, forget_imp, data_imp, alpha, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    assert same(before, state(task.original))
    # More weights dampened as the fraction grows (a lower percentile).
    dampened = [t["dampened_weights"] for t in notes["tries"]]
    assert dampened == sorted(dampened) and dampened[0] > 0
    task.cache.clear()


def test_stops_at_the_first_try_that_meets_the_target(task, monkeypatch):
    sequence = iter([0.9, 0.5, 0.2, 0.0])  # original 1.0 -> target 0.2: the third try (0.2 <= 0.2) stops

    def fake(task_, model, batch_size):
        return 1.0 if model is task_.original else next(sequence)

    monkeypatch.setattr(potion, "forget_accuracy", fake)
    notes = METHODS.get("potion")(task, {}).notes
    assert notes["tries_used"] == 3 and notes["stopped"] is True
    assert [t["forget_accuracy"] for t in notes["tries"]] == [0.9, 0.5, 0.2]
    assert next(sequence) == 0.0  # no fourth try was made
    task.cache.clear()


def test_real_run_is_bounded_and_consistent(task):
    before = state(task.original)
    notes = METHODS.get("potion")(task, {"growth": 2.0, "max_tries": 50}).notes
    target = notes["target_forget_accuracy"]
    assert notes["target_forget_accuracy"] == pytest.approx(0.2 * notes["original_forget_accuracy"])
    accs = [t["forget_accuracy"] for t in notes["tries"]]
    assert notes["tries_used"] == len(accs) <= 50
    if notes["stopped"]:
        assert accs[-1] <= target and all(a > target for a in accs[:-1])
    else:
        assert all(a > target for a in accs) and len(accs) == 50
    assert same(before, state(task.original))
    task.cache.clear()


def test_never_more_than_max_tries(task, monkeypatch):
    monkeypatch.setattr(potion, "forget_accuracy", lambda task_, model, batch_size: 1.0)
    result = METHODS.get("potion")(task, {"max_tries": 3})
    model, notes = result.model, result.notes
    assert notes["tries_used"] == 3 and notes["stopped"] is False and model is not task.original
    task.cache.clear()


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"importance_samples": 0}, {"max_tries": 0}])
def test_bad_settings_are_refused(task, bad):
    task.cache.clear()
    with pytest.raises(ValueError, match="potion"):
        METHODS.get("potion")(task, bad)


def test_runs_in_a_grid_with_tries_in_the_notes(tmp_path):
    path = write_grid(tmp_path, small_grid({"potion": {"grid": {"growth": [1.1]}}}))
    records = [r for r in run_grid(load_grid_config(str(path), []), tmp_path / "out", progress=False)
               if r["method"] == "potion"]
    assert len(records) == 1 and records[0]["status"] == "ok"
    notes = records[0]["method_notes"]
    assert notes["tries_used"] == len(notes["tries"]) >= 1 and isinstance(notes["stopped"], bool)
