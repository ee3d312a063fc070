"""REM (SPEC 6): deployable shapes, no aliasing of the best model, a bounded flush that keeps batch norm, the grid."""
from __future__ import annotations

import copy

import pytest
import torch

from corrective_unlearning.capacity import widen
from corrective_unlearning.runner import load_grid_config, run_grid
from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods import rem as rem_module
from corrective_unlearning.models import create_model
from corrective_unlearning.training import Reference
from grid_helpers import small_grid, write_grid
from helpers import deletion_task, same, state

FAST = {"steps": 4, "max_flush_passes": 2}


@pytest.fixture(scope="module")
def task(poisoned, runtime):
    return deletion_task(poisoned, 0.55, runtime)  # |S_f| = 22


def _run(task, **hp):
    return METHODS.get("rem")(task, {**FAST, **hp})


def test_returned_model_has_the_original_shapes_and_loads_into_a_fresh_model(task):
    before = state(task.original)
    model = _run(task).model
    fresh = create_model("small_cnn", task.num_classes, 3)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.eval()
    x = task.inputs(task.train_idx[:16])
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert not model.training
    assert same(state(task.original), before)  # M_o untouched


def test_notes_carry_rounds_flush_passes_and_scores(task):
    notes = _run(task, steps=14).notes  # 12 steps per pass over the 384 training samples: two rounds (12 + 2 steps)
    assert notes["rounds"] == 2 and notes["steps"] == 14
    assert len(notes["flush_passes"]) == len(notes["scores"]) == 2
    assert all(0 <= p <= 2 for p in notes["flush_passes"])
    assert 0 <= notes["selected_round"] <= 2 and 0.0 <= notes["forget_acc"] <= 1.0
    assert notes["selected_score"] == max([notes["initial_score"], *notes["scores"]])


def test_without_improvement_the_initial_model_is_returned_not_the_last_trained_one(task, monkeypatch):
    scores = iter([1.0 - 0.1 * k for k in range(10)])
    monkeypatch.setattr(rem_module, "selection_score", lambda *a: (next(scores), 0.5))
    result = _run(task, steps=14)
    assert result.notes["selected_round"] == 0 and result.notes["rounds"] == 2
    assert same(result.model.state_dict(), task.original.state_dict())


def _flush_setup(task):
    wide = widen(copy.deepcopy(task.original), 1.0, 0.2, seed=task.seed)
    wide.shared_mask_for(task.forget_idx)
    reference = copy.deepcopy(wide).requires_grad_(False).eval()
    recipe = task.recipe.replace(schedule="constant", lr=0.005, momentum=0.9, weight_decay=5e-4)
    loop = task.loop(wide, recipe, reference=Reference(model=reference, route=reference.masks), compile=False)
    hp = {**METHODS.get("rem").resolve({}), "max_flush_passes": 5}
    return wide.train(), reference, loop, hp


def test_flush_stops_at_the_first_pass_reaching_the_threshold(task, monkeypatch):
    script = iter([0.9, 0.5, 0.3, 0.2, 0.1, 0.0])  # before pass 1, after passes 1, 2, 3 (0.2 <= 0.2: stop)
    monkeypatch.setattr(rem_module, "forget_accuracy", lambda *a: next(script))
    wide, _, loop, hp = _flush_setup(task)
    assert rem_module.flush(task, wide, loop, hp, 1) == 3
    assert next(script) == 0.1  # the accuracy was not read again after the stopping pass


def test_flush_never_exceeds_max_flush_passes_and_keeps_batch_norm_statistics(task, monkeypatch):
    calls = []
    monkeypatch.setattr(rem_module, "forget_accuracy", lambda *a: calls.append(1) or 1.0)
    wide, _, loop, hp = _flush_setup(task)
    buffers = {k: v.clone() for k, v in wide.named_buffers()}
    params = {k: v.clone() for k, v in wide.named_parameters()}
    assert rem_module.flush(task, wide, loop, hp, 1) == 5
    assert wide.training  # mode restored
    assert all(torch.equal(v, buffers[k]) for k, v in wide.named_buffers())  # running stats untouched
    assert any(not torch.equal(v, params[k]) for k, v in wide.named_parameters())  # but it did train


def test_flush_already_below_threshold_runs_no_pass(task, monkeypatch):
    monkeypatch.setattr(rem_module, "forget_accuracy", lambda *a: 0.1)
    wide, _, loop, hp = _flush_setup(task)
    params = {k: v.clone() for k, v in wide.named_parameters()}
    assert rem_module.flush(task, wide, loop, hp, 1) == 0
    assert all(torch.equal(v, params[k]) for k, v in wide.named_parameters())


def test_student_and_reference_route_S_f_through_the_same_shared_mask(task):
    wide, reference, *_ = _flush_setup(task)
    indices = task.forget_idx[:4]
    x = task.inputs(indices)
    wide.eval()
    with torch.no_grad(), wide.masks(indices), reference.masks(indices):
        assert torch.equal(wide(x), reference(x))
    assert torch.equal(wide.state.shared, reference.state.shared)


def test_rem_runs_in_a_tiny_grid(tmp_path):
    path = write_grid(tmp_path, small_grid({"rem": {"grid": {"lr": [0.005]}, "params": {"steps": 4}}}))
    records = run_grid(load_grid_config(str(path), []), tmp_path / "out", progress=False)
    records = [r for r in records if r["method"] == "rem"]
    assert len(records) == 1 and records[0]["status"] == "ok", records[0].get("error")
    assert records[0]["method_notes"]["rounds"] == 1


def test_a_nan_loss_raises_divergence_error(task):
    from corrective_unlearning.training import DivergenceError

    with pytest.raises(DivergenceError, match="REM diverged"):
        _run(task, lr=1e30, steps=14)
