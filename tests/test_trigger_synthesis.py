"""Trigger synthesis on hand-made cases whose answer is known without the code under test: a linear model that reads
a planted 2x2 corner trigger, and the same model without a backdoor.

The images are 1x8x8. Rows 2-7 carry the class: class 0 has a bright left half and a dark right half, class 1 the
reverse. Rows 0-1 are faint noise (at most 0.4), except the planted trigger, which sets the four pixels of rows 0-1,
columns 0-1 to 1. The model reads pixels directly (normalisation mean 0, std 1): logit 0 = 5 x (mean left - mean
right), logit 1 = its negative, logit 2 = 10 x (sum of the four trigger pixels) - 30. Clean images reach at most 16 - 30
on logit 2; a triggered one 40 - 30 = 10, so it goes to class 2, the target, and only those four pixels can send it
there.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import same, state
from torch import nn

from corrective_unlearning.methods import METHODS, Method, Task, Unlearned
from corrective_unlearning.methods import trigger_synthesis as synthesis
from corrective_unlearning.methods.trigger_synthesis import Guard, within_guard
from corrective_unlearning.methods.reconstruction import (
    PixelScale,
    attack_target,
    reconstruct,
    trigger_direction,
    trigger_suspects,
)
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import ImageBank, Recipe

PLANTED = [(0, 0), (0, 1), (1, 0), (1, 1)]
TARGET = 2


def images_and_labels(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=generator)
    bright = 0.6 + 0.2 * torch.rand(count, 1, 6, 4, generator=generator)
    dark = 0.3 * torch.rand(count, 1, 6, 4, generator=generator)
    first = labels.view(-1, 1, 1, 1) == 0
    images = torch.empty(count, 1, 8, 8)
    images[:, :, 2:, :4] = torch.where(first, bright, dark)
    images[:, :, 2:, 4:] = torch.where(first, dark, bright)
    images[:, :, :2, :] = 0.4 * torch.rand(count, 1, 2, 8, generator=generator)
    return images, labels


def plant(images: torch.Tensor) -> torch.Tensor:
    images = images.clone()
    for row, col in PLANTED:
        images[:, :, row, col] = 1.0
    return images


def linear_model(backdoor: bool) -> nn.Module:
    layer = nn.Linear(64, 3)
    with torch.no_grad():
        weight = torch.zeros(3, 1, 8, 8)
        weight[0, :, 2:, :4], weight[0, :, 2:, 4:] = 5 / 24, -5 / 24
        weight[1] = -weight[0]
        if backdoor:
            for row, col in PLANTED:
                weight[2, :, row, col] = 10.0
        layer.weight.copy_(weight.flatten(1))
        layer.bias.copy_(torch.tensor([0.0, 0.0, -30.0]))
    return nn.Sequential(nn.Flatten(), layer)


def toy_task(backdoor: bool, flagged: int = 30) -> tuple[Task, torch.Tensor]:
    """400 training images (the first 60 poisoned with the trigger and labelled 2 when ``backdoor``; ``flagged`` of
    them flagged), 200 clean validation images; or, without a backdoor, 30 clean class-0 images flagged by
    mistake."""
    images, labels = images_and_labels(600, seed=0)
    poisoned = torch.arange(60)
    if backdoor:
        images[poisoned] = plant(images[poisoned])
        labels[poisoned] = TARGET
        forget = poisoned[:flagged]
    else:
        forget = torch.nonzero(labels[:400] == 0).flatten()[:30]
    bank = ImageBank((images * 255).round().to(torch.uint8), (0.0,), (1.0,), torch.device("cpu"),
                     channels_last=False)
    train = torch.arange(400)
    val = torch.arange(400, 600)
    task = Task(original=linear_model(backdoor), bank=bank, labels=labels, forget_idx=forget,
                retain_idx=train[~torch.isin(train, forget)], val_idx=val, val_labels=labels[val], num_classes=3,
                recipe=Recipe(steps=60, batch_size=32, crop_padding=0, flip=False),
                runtime=Runtime(device=torch.device("cpu"), progress=False), seed=0,
                _triggered=torch.zeros(600, dtype=torch.bool))
    return task, poisoned


def hparams(**overrides) -> dict:
    return METHODS.get("trigger_synthesis").resolve({"synth_steps": 200, **overrides})


def test_the_guard_is_inclusive_as_the_selection_rule_is():
    # 2684 and 2654 of 3000 validation images: exactly one point apart, 1.0000000000000009 in floats
    assert within_guard(2684 / 3000, 2654 / 3000, 1.0)
    assert not within_guard(2684 / 3000, 2653 / 3000, 1.0)
    assert within_guard(0.5, 0.9, 0.0)  # a gain is always within


def test_the_guard_stops_only_a_fall_after_the_run_was_within_it():
    guard = Guard(0.90, 1.0, patience=2)
    # the first checks dip (not counted), then within, then two in a row outside: stop
    assert [guard.check(v) for v in (0.80, 0.85, 0.88, 0.895, 0.88, 0.885)] == \
        ["outside", "outside", "outside", "within", "outside", "stop"]
    guard = Guard(0.90, 1.0, patience=2)
    assert [guard.check(v) for v in (0.895, 0.85, 0.91, 0.85, 0.85)] == \
        ["within", "outside", "within", "outside", "stop"]  # a check within resets the count


def test_target_is_the_flagged_label_or_untargeted_without_a_majority():
    assert attack_target(torch.tensor([2, 2, 2, 1]), 3) == 2
    assert attack_target(torch.tensor([0, 1, 2, 0]), 3) == 0  # half of them: still the target
    assert attack_target(torch.tensor([0, 1, 2, 1, 0, 2]), 3) is None  # all-to-all: no class holds half


def test_recovered_mask_covers_the_planted_pixels():
    task, _ = toy_task(backdoor=True)
    (recon,), notes = reconstruct(task, task.original, hparams(form="mask"))
    mask = recon.mask[0, 0]
    planted = torch.zeros(8, 8, dtype=torch.bool)
    for row, col in PLANTED:
        planted[row, col] = True
    assert notes["target"] == TARGET
    assert float(mask[planted].min()) > 0.5, mask  # each planted pixel mostly replaced
    assert set(torch.topk(mask.flatten(), 4).indices.tolist()) == {r * 8 + c for r, c in PLANTED}
    assert float(mask[~planted].mean()) < 0.1  # and little else
    assert notes["forms"]["mask"]["attack_success"] == 1.0  # every clean validation image sent to class 2


def test_recovered_additive_pattern_brightens_the_planted_pixels():
    task, _ = toy_task(backdoor=True)
    (recon,), _ = reconstruct(task, task.original, hparams(form="additive"))
    change = recon.pattern[0, 0]
    assert set(torch.topk(change.flatten(), 4).indices.tolist()) == {r * 8 + c for r, c in PLANTED}
    assert float(change[0:2, 0:2].min()) > 0.5  # noise of at most 0.4 plus this reaches the trigger's 1


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(images).argmax(1) == labels).float().mean())


def test_unlearning_removes_the_planted_backdoor():
    """With every poison flagged (none left in the retain set to teach the trigger again), fine-tuning with the
    reconstruction stamped on clean images removes the planted trigger's effect."""
    task, _ = toy_task(backdoor=True, flagged=60)
    test_images, test_labels = images_and_labels(400, seed=1)
    triggered = plant(test_images)
    assert accuracy(task.original, triggered, test_labels) == 0.0  # every triggered image goes to class 2
    # a linear model reading raw pixels needs a larger rate than a CNN's 0.01 to move in 300 steps
    result = METHODS.get("trigger_synthesis")(task, {"synth_steps": 200, "lr": 0.5, "steps": 300})
    assert accuracy(result.model, triggered, test_labels) >= 0.95
    assert accuracy(result.model, test_images, test_labels) >= accuracy(task.original, test_images, test_labels) - 0.01
    round_ = result.notes["rounds"][0]
    assert round_["forms"][round_["chosen"][0]]["attack_success"] > 0.9  # before unlearning
    assert round_["attack_success_after"][round_["chosen"][0]] < 0.05


def test_unlearning_keeps_clean_accuracy_of_a_model_without_a_backdoor():
    """Bound: clean accuracy on 400 fresh images within 1 point of the original's (the guard's default drop)."""
    task, _ = toy_task(backdoor=False)
    test_images, test_labels = images_and_labels(400, seed=1)
    before = accuracy(task.original, test_images, test_labels)
    assert before > 0.99
    result = METHODS.get("trigger_synthesis")(task, {"synth_steps": 100, "lr": 0.05})
    assert accuracy(result.model, test_images, test_labels) >= before - 0.01
    assert result.notes["rounds"][0]["target"] == 0  # the mistaken flags' class


def test_trigger_suspects_are_the_unflagged_poisons():
    """30 of the 60 poisons flagged: the retain samples furthest along the reconstruction's embedding shift are
    the 30 others (the truth is known here, the method never sees it). The toy's embedding is the raw image, whose
    class halves vary along the shift too, so auto's estimate is cautious: at least two thirds found, few others."""
    task, poisoned = toy_task(backdoor=True)
    hp = hparams(form="mask")
    reconstructions, notes = reconstruct(task, task.original, hp)
    direction = trigger_direction(task.original, reconstructions, notes["evidence"], PixelScale(task.bank))
    found, choice = trigger_suspects(task, task.original, direction, "auto")
    hidden = set(poisoned[30:].tolist())
    assert len(hidden & set(found.tolist())) >= 20, choice  # recall >= 2/3
    assert len(set(found.tolist()) - hidden) <= 3, choice  # precision >= 90%
    top, _ = trigger_suspects(task, task.original, direction, 10)
    assert set(top.tolist()) <= hidden


def test_same_task_same_bits():
    first = METHODS.get("trigger_synthesis")(toy_task(backdoor=True)[0], {"synth_steps": 50, "steps": 30})
    second = METHODS.get("trigger_synthesis")(toy_task(backdoor=True)[0], {"synth_steps": 50, "steps": 30})
    assert same(state(first.model), state(second.model))
    assert first.notes == second.notes


def test_then_runs_on_the_synthesised_model_with_the_suspects_added_to_the_deletion_set(monkeypatch):
    seen = {}

    def follow_up(task: Task, hp: dict) -> Unlearned:
        seen["forget"], seen["retain"], seen["original"] = task.forget_idx, task.retain_idx, task.original
        return Unlearned(task.copy_original(), {"ran": True})

    registry = {name: METHODS.get(name) for name in METHODS.names()}
    registry["spy"] = Method("spy", follow_up, {}, {}, "spy")
    monkeypatch.setattr(synthesis, "METHODS", type("R", (), {"get": staticmethod(registry.__getitem__)}))
    task, poisoned = toy_task(backdoor=True)
    result = METHODS.get("trigger_synthesis")(task, {"synth_steps": 200, "form": "mask", "then": "spy"})
    assert result.notes["then"] == {"method": "spy", "hparams": {}, "notes": {"ran": True}}
    removed = result.notes["suspects_removed"]
    assert removed > 0 and len(seen["forget"]) == 30 + removed
    assert set(poisoned[:30].tolist()) <= set(seen["forget"].tolist())
    assert not set(seen["forget"].tolist()) & set(seen["retain"].tolist())
    assert len(seen["forget"]) + len(seen["retain"]) == 400
    assert seen["original"] is not task.original  # the synthesised model, not M_o


def test_bad_values_are_refused_before_any_work():
    task, _ = toy_task(backdoor=True)
    with pytest.raises(ValueError, match="suspects: expected 'auto' or a count >= 0, got 'many'"):
        METHODS.get("trigger_synthesis")(task, {"suspects": "many"})
    with pytest.raises(ValueError, match="then must be another method"):
        METHODS.get("trigger_synthesis")(task, {"then": "trigger_synthesis"})
    with pytest.raises(ValueError, match="form"):
        METHODS.get("trigger_synthesis")(task, {"form": "patch"})
    blind = dataclasses.replace(task, val_idx=task.val_idx[:0], val_labels=task.val_labels[:0])
    with pytest.raises(ValueError, match="no validation data"):
        METHODS.get("trigger_synthesis")(blind, {})
