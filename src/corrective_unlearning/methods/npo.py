"""NPO, negative preference optimisation on S_f with M_o as the reference (SPEC section 5; REM's flush step,
REFERENCE-NOTES 3.3).

Defaults: beta 1, stop when the accuracy on S_f against its given labels is <= stop_acc = 0.2, at most
max_epochs = 100 passes over S_f (REM's flush: "at most 100 passes"), lr 0.005 with the recipe's SGD (momentum
0.9, weight decay 5e-4) at a constant rate and the recipe's batch size; an epoch is ceil(|S_f| / batch) steps.
The rate is REM's unlearning rate for ResNet-9 with SGD, the setting this product reproduces (NPO's own 1e-5 is
for Adam on language models, and GA's 1e-4 would need far more passes to reach the stopping accuracy).
``steps`` replaces max_epochs x epoch as the cap on optimiser steps. Grid: lr in {0.001, 0.005, 0.025}.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..training import Batch, LossFn, Reference
from . import AutoCandidate, Param, method
from .task import Task, Unlearned


def npo_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2 / beta) * mean_i log sigmoid(-beta * (log p_theta(y_i|x_i) - log p_ref(y_i|x_i))).

    It is (2 / beta) log 2 where the model equals the reference and falls towards 0 as log p_theta(y|x) falls
    below the reference's: bounded below, unlike gradient ascent on CE."""
    logp = F.log_softmax(logits.float(), 1).gather(1, labels[:, None]).squeeze(1)
    ref_logp = F.log_softmax(ref_logits.float(), 1).gather(1, labels[:, None]).squeeze(1)
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def npo_objective(beta: float) -> LossFn:
    """The NPO loss of the batch's given labels against the loop's reference (its logits on the same inputs)."""
    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        return npo_loss(forward(batch.x), batch.reference, batch.labels, beta)
    return loss


def forget_accuracy(task: Task, model: nn.Module) -> float:
    """Fraction of S_f predicted as its given label (see :meth:`Task.accuracy`)."""
    return task.accuracy(model, task.forget_idx)


@method("npo", params={"beta": Param(float, 1.0, low=0, closed="neither"), "lr": 0.005,
                       "stop_acc": Param(float, 0.2, low=0, high=1, doc="a fraction of S_f"),
                       "max_epochs": Param(int, 100, low=1), "steps": None},
        grid={"lr": [0.001, 0.005, 0.025]}, style=("gold", "*"),
        auto=AutoCandidate(2, {"grid": {"lr": [0.005]}},
                           "all-to-all and WaNet in the attack map (with an accuracy cost); about a second"))
def npo(task: Task, hp: dict) -> Unlearned:
    """NPO: gradient descent on the NPO loss over S_f with M_o as the reference, epoch by epoch until the
    accuracy on S_f (given labels) is <= stop_acc (beta 1, stop_acc 0.2, at most 100 epochs, lr 0.005).

    The accuracy is measured before the first epoch too (an original already at or below stop_acc is returned
    unchanged) and after every epoch. The reference sees each batch exactly as the student does, batch norm in
    training mode (batch statistics), so at the first step log p_theta - log p_ref is 0 (a model with dropout
    would draw different dropout masks for the two). Its notes record the
    epochs run, the steps, the final forget accuracy and whether stop_acc was reached."""
    beta, stop_acc, max_epochs = hp["beta"], hp["stop_acc"], hp["max_epochs"]
    model = task.copy_original()
    reference = task.copy_original().requires_grad_(False).train()
    batch_size = min(task.recipe.batch_size, len(task.forget_idx))
    epoch_steps = math.ceil(len(task.forget_idx) / batch_size)
    budget = hp["steps"] or max_epochs * epoch_steps  # the loop below takes >= 1 step per pass: it ends
    recipe = task.recipe.replace(schedule="constant", lr=hp["lr"], steps=budget)
    loop = task.loop(model, recipe, reference=Reference(model=reference))
    batches = task.stream(task.forget_idx, budget, batch_size, task.seed)

    accuracy = forget_accuracy(task, model)
    model.train()
    epochs = steps = 0
    while accuracy > stop_acc and steps < budget:
        count = min(epoch_steps, budget - steps)
        loop.run(list(itertools.islice(batches, count)), npo_objective(beta), desc="NPO")
        steps += count
        epochs += 1
        accuracy = forget_accuracy(task, model)
    model.eval()
    return Unlearned(model, {"epochs": epochs, "steps": steps, "forget_acc": accuracy,
                             "stopped": accuracy <= stop_acc})
