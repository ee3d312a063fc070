"""BadT, the bad-teacher distillation (SPEC section 5)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..training import Batch, LossFn
from . import Param, method
from .common import frozen_teacher, kl_to_teacher
from .task import Task, Unlearned


def bad_teacher_loss(is_forget: torch.Tensor, good: nn.Module, bad: nn.Module, temperature: float = 1.0) -> LossFn:
    """The loss BadT minimises: KL(teacher softmax || student log-softmax) with ``F.kl_div``'s default elementwise
    mean over the B x C entries, as the reference and the original BadT compute it (a batch mean would be C times
    larger: under the SGD bench recipe, another learning rate). The teacher is ``bad`` on rows whose training
    index is flagged in ``is_forget`` (S_f), ``good`` (M_o) elsewhere."""

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            target = torch.where(is_forget[batch.indices][:, None], bad(batch.x), good(batch.x))
        return kl_to_teacher(model(batch.x), target, temperature, reduction="mean")

    return loss


@method("badt", params={"variant": Param(str, "original", choices=("original", "bench")), "lr": None, "steps": None,
                        "retain_fraction": 0.3, "batch_size": 256, "temperature": 1.0},
        grid={"variant": ["bench"]}, style=("tab:red", "X"))
def bad_teacher(task: Task, hp: dict) -> Unlearned:
    """Bad teacher: distil into a copy of M_o, towards a random teacher on S_f and towards M_o elsewhere
    (variant original: Adam lr 1e-4, one epoch over S_f + 30% of the retain set; bench: recipe A's SGD,
    a quarter of its steps, on all training data)."""
    student = task.copy_original()
    good = frozen_teacher(task.original, task.runtime)
    bad = frozen_teacher(task.fresh_model(seed=task.seed + 1), task.runtime)
    is_forget = torch.zeros(len(task.labels), dtype=torch.bool, device=task.device)
    is_forget[task.forget_idx.to(task.device)] = True
    loss = bad_teacher_loss(is_forget, good, bad, hp["temperature"])

    if hp["variant"] == "original":
        generator = torch.Generator().manual_seed(task.seed)
        retain = task.retain_idx[torch.randperm(len(task.retain_idx), generator=generator)]
        indices = torch.cat([task.forget_idx, retain[: round(hp["retain_fraction"] * len(retain))]])
        steps = hp["steps"] or math.ceil(len(indices) / hp["batch_size"])
        recipe = task.recipe.replace(optimizer="adam", lr=hp["lr"] or 1e-4, weight_decay=0.0, schedule="constant",
                                     steps=steps, batch_size=hp["batch_size"])
    else:  # bench
        indices = task.train_idx
        recipe = task.recipe.replace(steps=hp["steps"] or max(1, task.recipe.steps // 4), lr=hp["lr"] or task.recipe.lr)
    task.fit(student, indices, recipe, loss_fn=loss, desc="BadT")
    return Unlearned(student)
