"""SSD's importances see all of S_f, with one batch size for both passes (SPEC 5 and 9.8)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods.ssd import importance, importance_pool
from corrective_unlearning.training import Recipe

RECIPE = Recipe(steps=30, batch_size=32, crop_padding=1, flip=False)


@pytest.fixture(scope="module")
def task(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 40, 0, runtime, val_size=16)
    original, _ = train_original(setting, "small_cnn", RECIPE, runtime)
    return make_task(setting, original, deletion_set(setting, 0.55), RECIPE, runtime)  # |S_f| = 22


def _slow_importance(task, indices: list[int], batch_size: int) -> list[torch.Tensor]:
    """Independent path: each sample's own gradient, averaged into its batch's mean gradient, squared, and
    weighted by the batch's share of the samples."""
    model = task.original.eval()
    params = list(model.parameters())
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    totals = [torch.zeros_like(p) for p in params]
    for batch in batches:
        per_sample = []
        for i in batch:
            index = torch.tensor([i])
            loss = F.cross_entropy(model(task.inputs(index)), task.labels[index])
            per_sample.append(torch.autograd.grad(loss, params))
        for total, grads in zip(totals, zip(*per_sample)):
            total += len(batch) * (sum(grads) / len(batch)) ** 2
    return [t / len(indices) for t in totals]


def _close(a, b, rtol=1e-4):
    return all(torch.allclose(x, y, rtol=rtol, atol=1e-10) for x, y in zip(a, b))


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_importance_matches_a_per_sample_computation_with_the_partial_batch_weighted(task):
    forget = task.forget_idx.tolist()
    assert len(forget) % 8 != 0  # 22 = 8 + 8 + 6: the last batch is partial
    assert _close(importance(task, task.original, task.forget_idx, 8), _slow_importance(task, sorted(forget), 8))


def test_importance_does_not_depend_on_the_order_of_S_f(task):
    shuffled = task.forget_idx[torch.randperm(len(task.forget_idx), generator=torch.Generator().manual_seed(1))]
    assert not torch.equal(shuffled, task.forget_idx)
    assert _equal(importance(task, task.original, shuffled, 8), importance(task, task.original, task.forget_idx, 8))


def test_the_sample_placed_last_counts(task):
    forget = torch.sort(task.forget_idx).values
    without_last = importance(task, task.original, forget[:-1], 7)  # 21 = 3 x 7: the last one alone in a batch
    assert not _close(without_last, importance(task, task.original, forget, 7), rtol=1e-3)


def test_duplicating_every_sample_leaves_importance_unchanged(task):
    twice = torch.cat([task.forget_idx, task.forget_idx])
    assert _equal(importance(task, task.original, twice, 8), importance(task, task.original, task.forget_idx, 8))


def test_data_importance_uses_the_whole_retain_set_unless_a_subsample_is_asked_for(task):
    hp = METHODS.get("ssd").resolve({})
    assert hp["importance_samples"] is None
    assert torch.equal(importance_pool(task, hp), task.retain_idx)
    sample = importance_pool(task, {**hp, "importance_samples": 50})
    assert len(sample) == len(set(sample.tolist())) == 50 and set(sample.tolist()) <= set(task.retain_idx.tolist())
    assert torch.equal(importance_pool(task, {**hp, "importance_data": "train"}), task.train_idx)


def test_one_batch_size_for_both_passes_whatever_the_size_of_S_f(task, monkeypatch):
    from corrective_unlearning.methods import ssd

    sizes = []
    monkeypatch.setattr(ssd, "importance", lambda task, model, indices, batch_size: sizes.append(batch_size) or
                        [torch.ones_like(p) for p in model.parameters()])
    task.cache.clear()
    METHODS.get("ssd")(task, {"batch_size": 512})  # |S_f| = 22 < 512: the batch size stays 512 for both
    assert sizes == [512, 512]
    task.cache.clear()


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"batch_size": 2.5}, {"importance_samples": 0}])
def test_bad_importance_settings_are_refused(task, bad):
    task.cache.clear()
    with pytest.raises(ValueError, match="ssd.*(batch_size|importance_samples)"):
        METHODS.get("ssd")(task, bad)
