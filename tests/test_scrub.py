"""SCRUB's loops are finite plans fixed before training, and its shared teacher logits are charged honestly."""
from __future__ import annotations

import pytest
import torch

from corrective_unlearning.runner import make_task
from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods.scrub import bench_plan, original_plan
from helpers import RECIPE, deletion_task


@pytest.fixture()
def task(poisoned, runtime):
    return deletion_task(poisoned, 0.55, runtime)  # a new task per test: they count what its cache pays


def test_bench_plan_by_hand(task):
    # 368 training samples, |S_f| = 22: one ascent batch of 22, then ceil(346 / 32) = 11 retain batches an epoch.
    assert (len(task.forget_idx), len(task.retain_idx)) == (22, 346)
    plan = bench_plan(task, {"steps": 30, "max_steps": 13})
    assert len(plan) == 30
    # epoch 0: ascent at step 0; epoch 1 starts at step 12 < 13: ascent again; epoch 2 starts at 24: descent only.
    assert [i for i, (ascend, _) in enumerate(plan) if ascend] == [0, 12]
    assert all(set(batch.tolist()) <= set(task.forget_idx.tolist()) for ascend, batch in plan if ascend)
    # an epoch's 11 full batches cover the whole retain set (the last one tops up from the next permutation)
    assert set(torch.cat([batch for _, batch in plan[1:12]]).tolist()) == set(task.retain_idx.tolist())


def test_original_plan_by_hand(task):
    plan = original_plan(task, {"epochs": 3, "msteps": 2, "forget_batch": 8, "retain_batch": 100})
    ascents = [ascend for ascend, _ in plan]
    # epochs 0 and 1: ceil(22 / 8) = 3 ascent steps, then ceil(346 / 100) = 4 descent steps; epoch 2: descent only.
    assert ascents == [True] * 3 + [False] * 4 + [True] * 3 + [False] * 4 + [False] * 4


def test_an_empty_deletion_set_is_refused_before_any_loop(poisoned, runtime):
    setting, original, _ = poisoned
    with pytest.raises(ValueError, match="deletion set S_f is empty"):
        make_task(setting, original, torch.tensor([], dtype=torch.int64), RECIPE, runtime)


def test_teacher_logits_are_paid_once_and_reused(task):
    first = METHODS.get("scrub")(task, {"variant": "bench", "steps": 6, "alpha": 0.1}).shared
    (key, seconds), = first.paid.items()
    assert key.startswith("scrub-teacher-logits") and seconds > 0 and first.reused == []
    second = METHODS.get("scrub")(task, {"variant": "bench", "steps": 6, "alpha": 1.0}).shared
    assert second.paid == {} and second.reused == [key]
    other = METHODS.get("scrub")(task, {"variant": "bench", "steps": 7, "alpha": 1.0}).shared  # another plan: its own teacher
    assert list(other.paid) != [key] and other.reused == []
