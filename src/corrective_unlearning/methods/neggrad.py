"""NegGrad: gradient ascent on the cross-entropy of S_f (SPEC section 5; RUM's ``GA``).

Defaults (SPEC 5 / the RUM and Unlearn-Sparse READMEs): 5 epochs over S_f at lr 1e-4 with the recipe's SGD
(momentum 0.9, weight decay 5e-4), a constant learning rate and the recipe's batch size; an epoch is
ceil(|S_f| / batch) steps. ``steps`` overrides the epoch count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..training import Batch
from . import method
from .task import Task, Unlearned


def unlearning_recipe(task: Task, indices: torch.Tensor, hp: dict, **changes):
    """The recipe's SGD at the constant rate ``hp["lr"]`` for ``hp["steps"]`` steps, or ``hp["epochs"]`` passes
    over ``indices`` of ceil(|indices| / batch) steps each (the trainer's batch never exceeds the set)."""
    batch = min(task.recipe.batch_size, len(indices))
    steps = hp["steps"] or hp["epochs"] * math.ceil(len(indices) / batch)
    return task.recipe.replace(schedule="constant", lr=hp["lr"], steps=steps, **changes)


def ascent(model: nn.Module, batch: Batch) -> torch.Tensor:
    return -F.cross_entropy(model(batch.x), batch.labels)


@method("neggrad", params={"epochs": 5, "lr": 1e-4, "steps": None}, grid={"lr": [1e-4, 5e-4, 1e-3]},
        style=("tab:brown", "v"))
def neggrad(task: Task, hp: dict) -> Unlearned:
    """NegGrad: gradient ascent on CE over S_f with its given labels (5 epochs, lr 1e-4; grid lr 1e-4, 5e-4,
    1e-3).

    The loss is unbounded below: a NaN or infinite loss raises the trainer's DivergenceError."""
    model = task.copy_original()
    task.fit(model, task.forget_idx, unlearning_recipe(task, task.forget_idx, hp), loss_fn=ascent, desc="NegGrad")
    return Unlearned(model)
