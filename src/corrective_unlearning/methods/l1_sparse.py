"""L1-sparse: fine-tune on the retain set with a decaying L1 penalty on the weights (SPEC section 5; RUM's
``FT_prune``, from Unlearn-Sparse).

Defaults (SPEC 5 / RUM): 10 epochs over the retain set at lr 0.01, alpha 5e-4, with the recipe's SGD (momentum
0.9, weight decay 5e-4) at a constant rate and the recipe's batch size; an epoch is ceil(|retain| / batch) steps.
The penalty's coefficient decays linearly per step, alpha_t = alpha * (1 - t / steps) for step t = 0 .. steps - 1.
``steps`` overrides the epoch count. Grid: alpha in {1e-4, 5e-4, 1e-3} ("alpha ~ 5e-4, tune").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..training import Batch
from . import method
from .neggrad import unlearning_recipe
from .task import Task, Unlearned


def l1_coefficient(alpha: float, step: int, steps: int) -> float:
    """alpha_t = alpha * (1 - t / steps): alpha at the first step, alpha / steps at the last."""
    return alpha * (1.0 - step / steps)


@method("l1-sparse", params={"alpha": 5e-4, "epochs": 10, "lr": 0.01, "steps": None},
        grid={"alpha": [1e-4, 5e-4, 1e-3]}, style=("tab:gray", "h"))
def l1_sparse(task: Task, hp: dict) -> Unlearned:
    """L1-sparse: fine-tune on the retain set minimising CE + alpha_t * ||theta||_1, alpha_t decaying linearly
    to 0 over the steps (10 epochs, lr 0.01, alpha 5e-4).

    ||theta||_1 sums the absolute values of every parameter of the model, as Unlearn-Sparse does."""
    model = task.copy_original()
    params = list(model.parameters())
    recipe = unlearning_recipe(task, task.retain_idx, hp)

    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        l1 = torch.stack([p.abs().sum() for p in params]).sum()
        coefficient = l1_coefficient(hp["alpha"], batch.step, recipe.steps)
        return F.cross_entropy(forward(batch.x), batch.labels) + coefficient * l1

    task.fit(model, task.retain_idx, recipe, loss_fn=loss, desc="L1-sparse")
    return Unlearned(model)
