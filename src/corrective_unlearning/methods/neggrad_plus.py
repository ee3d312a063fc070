"""NegGrad+: descent on the retain set and ascent on S_f in one loss (SPEC section 5; RUM's ``NG``).

Defaults (SPEC 5 / RUM): beta 0.99, 5 epochs over the retain set at lr 0.01 with the recipe's SGD (momentum 0.9,
weight decay 5e-4), a constant learning rate and the recipe's batch size; an epoch is ceil(|retain| / batch)
steps, each pairing a retain batch with the next batch of S_f (S_f is cycled, epoch by epoch, in seeded orders).
``steps`` overrides the epoch count. The grid is RUM's: beta in {0.97, 0.99} x lr in {0.01, 0.001}.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..training import Batch
from . import Param, method
from .neggrad import unlearning_recipe
from .task import Task, Unlearned


@method("neggrad+", params={"beta": Param(float, 0.99, low=0, high=1), "epochs": 5, "lr": 0.01, "steps": None},
        grid={"beta": [0.97, 0.99], "lr": [0.01, 0.001]}, style=("tab:pink", "<"))
def neggrad_plus(task: Task, hp: dict) -> Unlearned:
    """NegGrad+: minimise beta * CE(retain batch) - (1 - beta) * CE(forget batch) (beta 0.99, 5 epochs over the
    retain set, lr 0.01).

    With beta = 1 the forget term has weight zero and is not computed at all (its forward pass would still move
    the batch-norm statistics), so the method is exactly fine-tuning on the retain set. The forget batch runs
    through the uncompiled model: CUDA graphs allow one compiled forward per step."""
    beta = hp["beta"]
    model = task.copy_original()
    recipe = unlearning_recipe(task, task.retain_idx, hp)
    forget_batches = task.stream(task.forget_idx, recipe.steps, recipe.batch_size, task.seed + 1)
    generator = torch.Generator(device=task.device).manual_seed(task.seed + 2)

    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        total = beta * F.cross_entropy(forward(batch.x), batch.labels)
        if beta < 1.0:
            forget = next(forget_batches)
            forget_x = task.inputs(forget, augment=True, generator=generator)
            total = total - (1.0 - beta) * F.cross_entropy(model(forget_x), task.labels[forget])
        return total

    task.fit(model, task.retain_idx, recipe, loss_fn=loss, desc="NegGrad+")
    return Unlearned(model)
