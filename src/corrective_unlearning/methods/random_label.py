"""Random-label: fine-tune on S_f with fresh wrong labels each epoch, together with the retain set (SPEC
section 5; RUM's ``RL_og``).

Defaults (SPEC 5 / RUM): 10 epochs at lr 0.1 with the recipe's SGD (momentum 0.9, weight decay 5e-4), a constant
learning rate and the recipe's batch size, over S_f and the retain set in one shuffled stream; an epoch is
ceil((|S_f| + |retain|) / batch) steps. ``steps`` overrides the epoch count. Grid: lr in {0.1, 0.025, 0.01}
(RUM's rate, recipe A's peak rate, RUM's fine-tuning rate).

Unlike RUM's code (REFERENCE-NOTES 2.9.5), a random label is never the given one: it is drawn uniformly from the
other C - 1 classes, C = the task's class count (never a hard-coded 10, SPEC 9.9).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from . import method
from .neggrad import unlearning_recipe
from .task import Task, Unlearned


def wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``(y + U{1..C-1}) mod C`` per element: uniform over the C - 1 classes other than ``y``."""
    if num_classes < 2:
        raise ValueError(f"random labels need at least 2 classes, got {num_classes}")
    offsets = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offsets.to(labels.device)) % num_classes


def fit_random_labels(task: Task, model: nn.Module, hp: dict, desc: str,
                      after_step: Callable[[int], None] | None = None, **recipe_changes) -> None:
    """Train ``model`` on S_f and the retain set, S_f relabelled with :func:`wrong_labels` afresh each epoch
    (seeded). The labels live in a copy of ``task.labels`` handed to the trainer, which reads ``labels[batch]``
    at every step; after an epoch's last step the copy's S_f entries are redrawn in place. An epoch is
    ceil(N / batch) steps of the trainer's full batches, which run across its passes over the data, so a sample
    near a pass boundary can be seen twice under one epoch's labels."""
    indices = task.train_idx
    recipe = unlearning_recipe(task, indices, hp, **recipe_changes)
    epoch_steps = math.ceil(len(indices) / min(recipe.batch_size, len(indices)))
    forget = task.forget_idx.to(task.device)
    given = task.labels[forget]
    labels = task.labels.clone()  # never task.labels itself (SPEC 9.2)
    generator = torch.Generator().manual_seed(task.seed + 3)

    def relabel() -> None:
        labels[forget] = wrong_labels(given, task.num_classes, generator)

    def each_step(step: int) -> None:
        if after_step is not None:
            after_step(step)
        if (step + 1) % epoch_steps == 0:
            relabel()

    relabel()
    task.fit(model, indices, recipe, labels=labels, after_step=each_step, desc=desc)


@method("random-label", params={"epochs": 10, "lr": 0.1, "steps": None}, grid={"lr": [0.1, 0.025, 0.01]},
        style=("tab:olive", ">"))
def random_label(task: Task, hp: dict) -> Unlearned:
    """Random-label: fine-tune on S_f, relabelled each epoch with labels drawn from the other classes, together
    with the retain set (10 epochs, lr 0.1)."""
    model = task.copy_original()
    fit_random_labels(task, model, hp, desc="Random-label")
    return Unlearned(model)
