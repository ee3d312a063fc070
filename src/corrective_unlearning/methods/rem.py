"""REM, Redirection for Erasing Memory (SPEC section 6; the reference's ``methods.py:class REM``,
REFERENCE-NOTES 3.2-3.3).

Spare capacity is added to a copy of M_o at unlearning time (:func:`..capacity.widen`: ``spare_fraction`` extra
channels per widened layer, each switched on per example with probability ``p_on``, masks seeded by ``task.seed``);
every identified sample (S_f) shares one mask, the redirection channel. The reference model is a frozen deep copy of
the widened model taken *after* the shared mask is set, so student and reference route S_f through the same mask
(avoids REFERENCE-NOTES 3.6 #6). Then, round by round until the repair budget is spent:

1. Flush: spare capacity off, one pass over S_f minimising the NPO loss against the reference's CE through the
   shared mask, repeated while acc(S_f, given labels; spare off, eval mode, no augmentation) > ``threshold`` (0.2),
   at most ``max_flush_passes`` (100) passes. The flush runs with the whole network in eval mode, so batch norm uses
   and keeps its running statistics (avoids 3.6 #7: statistics drifting towards S_f on forget-only batches).
   Flush steps do not count towards the repair budget.
2. Repair and redirect: one pass over the training set (S_f + retain; or the remaining steps) with masks on, in
   train mode. Identified samples: the NPO removal term through the spare-off path,
   ``-(2/beta) log sigmoid(beta (CE_theta^off - CE_ref^mask))``, plus the bounded fitting term through the shared
   mask, ``(2/beta) log sigmoid(beta (CE_theta^mask - CE_ref^mask))``; every other sample: the fitting term through
   its own mask. Loss = batch mean.
3. Selection: ``P = acc(retain) * (1 - max(acc(S_f), 0.2))`` with the given labels, in inference mode (eval, spare
   off); a copy is kept when P improves. The search starts from a copy of the (narrowed) initial model with its
   own P, never an alias of the live model (avoids 3.6 #1, SPEC 9.6).

When M_o was trained with a capacity-restricted recipe (``recipe.spare_capacity``: the reference's ``mem0`` models,
whose spare half was held at zero in training), REM switches those trained spare channels on instead of adding new
ones, and ``spare_fraction`` is not read.

The returned model is the best one narrowed back to the original architecture (spare channels dropped; equal to
the wide model with spare capacity off), so it loads into a fresh ``create_model(...)``.

Defaults: SGD (the recipe's momentum 0.9, weight decay 5e-4) at a constant lr 0.005, the recipe's batch size,
``passes`` 10 repair passes, beta 1, threshold 0.2, max_flush_passes 100, spare_fraction 1.0, p_on 0.2. ``steps``
replaces ``passes`` x (steps per pass) as the repair budget (tests, CPU recipes); there are ceil(budget / steps per
pass) rounds, each taking at least one step, so the loop ends.

Choices of this implementation, beyond the reference:

- The reference model is entirely frozen, batch-norm statistics included: it always runs in eval mode.
- In repair steps the spare-off forward pass for the removal term runs on the *whole* batch (only S_f rows enter the
  loss), so batch norm sees the batch's statistics and not forget-only ones.
- P's retain accuracy uses a seeded subsample of ``retain_eval`` (2000) retain samples, for speed (null: all).
- Augmentation as in training for flush and repair batches; none for accuracies.
"""
from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..capacity import WIDEN_PARAMS, WideModel, narrow, trained_spare, widen
from ..training import Batch, Loop, LossFn, Reference
from . import AutoCandidate, Param, method
from .npo import npo_loss
from .task import Task, Unlearned

FLOOR = 0.2  # acc(S_f) below this earns no more in P (the reference's floor)


def forget_accuracy(task: Task, model: nn.Module) -> float:
    """acc(S_f) as the flush's stopping rule reads it (spare capacity off: a WideModel's default)."""
    return task.accuracy(model, task.forget_idx)


def selection_score(task: Task, model: nn.Module, retain_sample: torch.Tensor) -> tuple[float, float]:
    """(P, acc(S_f)) with P = acc(retain sample) * (1 - max(acc(S_f), 0.2)), in inference mode."""
    forget_acc = task.accuracy(model, task.forget_idx)
    return task.accuracy(model, retain_sample) * (1.0 - max(forget_acc, FLOOR)), forget_acc


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


def flush_objective(wide: WideModel, beta: float) -> LossFn:
    """The NPO loss of the student with spare capacity off against the reference through the shared mask."""
    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        with wide.spare_off():
            logits = forward(batch.x)
        return npo_loss(logits, batch.reference, batch.labels, beta)
    return loss


def flush(task: Task, wide: WideModel, loop: Loop, hp: dict, round_: int) -> int:
    """Passes over S_f minimising the NPO loss (student spare off, reference through the shared mask) while
    acc(S_f) > threshold, at most max_flush_passes; returns the passes run. The whole student runs in eval mode
    (batch norm running statistics neither used from the batch nor updated); its mode is restored."""
    was_training = wide.training
    batch_size = min(task.recipe.batch_size, len(task.forget_idx))
    pass_steps = math.ceil(len(task.forget_idx) / batch_size)
    passes = 0
    wide.eval()
    try:
        while forget_accuracy(task, wide) > hp["threshold"] and passes < hp["max_flush_passes"]:
            seed = task.seed + 100_003 * (round_ + 1) + passes
            batches = list(task.stream(task.forget_idx, pass_steps, batch_size, seed))
            loop.run(batches, flush_objective(wide, hp["beta"]), desc="REM")
            passes += 1
    finally:
        wide.train(was_training)
    return passes


def repair_objective(task: Task, wide: WideModel, beta: float) -> LossFn:
    """Batch mean of the per-sample repair-and-redirect loss (module docstring, step 2); the reference's logits
    are through each example's mask."""
    forget = task.forget_idx

    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        ref_ce = _ce(batch.reference, batch.labels)
        with wide.masks(batch.indices):
            masked_ce = _ce(forward(batch.x), batch.labels)
        per_sample = (2.0 / beta) * F.logsigmoid(beta * (masked_ce - ref_ce))
        identified = torch.isin(batch.indices, forget.to(batch.indices.device))
        if bool(identified.any()):
            with wide.spare_off():
                off_ce = _ce(forward(batch.x), batch.labels)  # whole batch: batch norm sees the batch, not S_f alone
            removal = -(2.0 / beta) * F.logsigmoid(beta * (off_ce - ref_ce))
            per_sample = per_sample + torch.where(identified, removal, torch.zeros_like(removal))
        return per_sample.mean()
    return loss


def spare_capacity(task: Task, hp: dict) -> tuple[WideModel, str]:
    """M_o with spare capacity, and where it comes from (for the notes): the spare channels it was trained with
    when its recipe was capacity-restricted (``spare_fraction`` is then the trained one), else ``spare_fraction``
    new channels added now."""
    trained = trained_spare(task.original)
    if trained is None:
        return (widen(task.copy_original(), hp["spare_fraction"], hp["p_on"], seed=task.seed),
                "added at unlearning time")
    wide = copy.deepcopy(trained)
    wide.state.reset(hp["p_on"], task.seed)
    return wide, "trained with the original (capacity-restricted recipe)"


@method("rem", params={"lr": 0.005, "passes": Param(int, 10, low=1), "steps": Param(int, None, low=1, nullable=True),
                       "beta": Param(float, 1.0, low=0, closed="neither"),
                       "threshold": Param(float, 0.2, low=0, high=1, doc="a fraction of S_f"),
                       "max_flush_passes": Param(int, 100, low=0), "spare_fraction": WIDEN_PARAMS["spare_fraction"],
                       "p_on": WIDEN_PARAMS["p_on"], "retain_eval": 2000},
        grid={"lr": [0.001, 0.005, 0.025]}, style=("navy", "d"),
        auto=AutoCandidate(1, {"grid": {"lr": [0.005]}}, "poison at 10-50% discovery (patch, BPP, "
                                                                "label-consistent); the attack map's setting"))
def rem(task: Task, hp: dict) -> Unlearned:
    """REM: spare capacity added to M_o; rounds of an NPO flush of S_f with spare capacity off (until acc(S_f) <=
    0.2, at most 100 passes) and a repair pass over the training set redirecting S_f to one shared spare mask;
    the best round by acc(retain) * (1 - max(acc(S_f), 0.2)) (the initial model included), narrowed back to the
    original architecture (SPEC 6).

    Its notes record the rounds, the flush passes and P of every round, the selected round (0 = the initial
    model), the repair steps and the final acc(S_f)."""
    beta, passes_ = hp["beta"], hp["passes"]

    wide, origin = spare_capacity(task, hp)
    wide.shared_mask_for(task.forget_idx)
    reference = copy.deepcopy(wide).requires_grad_(False).eval()  # same shared mask, same per-example masks

    generator = torch.Generator().manual_seed(task.seed)
    retain = task.retain_idx.cpu()
    if hp["retain_eval"] is not None and hp["retain_eval"] < len(retain):
        retain = torch.sort(retain[torch.randperm(len(retain), generator=generator)[: hp["retain_eval"]]]).values

    best = narrow(wide).eval()  # a copy of the initial model, never the live one
    best_score, best_forget = selection_score(task, best, retain)
    initial_score, selected = best_score, 0

    train_idx = task.train_idx
    batch_size = min(task.recipe.batch_size, len(train_idx))
    pass_steps = math.ceil(len(train_idx) / batch_size)
    budget = hp["steps"] or passes_ * pass_steps
    recipe = task.recipe.replace(schedule="constant", lr=hp["lr"], steps=budget)
    # one optimiser and one augmentation stream for flush and repair steps alike; the uncompiled model, as the
    # losses switch its masks between forward passes
    loop = task.loop(wide, recipe, reference=Reference(model=reference, route=reference.masks), compile=False)
    batches = task.stream(train_idx, budget, batch_size, task.seed)
    repair = repair_objective(task, wide, beta)

    flush_passes, scores, forget_accs = [], [], []
    steps = rounds = 0
    wide.train()
    while steps < budget:  # every round takes >= 1 repair step: at most ceil(budget / pass_steps) rounds
        rounds += 1
        flush_passes.append(flush(task, wide, loop, hp, rounds))
        count = min(pass_steps, budget - steps)
        loop.run(list(itertools.islice(batches, count)), repair, desc="REM")
        steps += count
        score, forget_acc = selection_score(task, wide, retain)
        scores.append(score)
        forget_accs.append(forget_acc)
        if score > best_score:
            best, best_score, best_forget, selected = narrow(wide).eval(), score, forget_acc, rounds
    return Unlearned(best.eval(), {
        "spare_capacity": origin, "rounds": rounds, "flush_passes": flush_passes, "scores": scores,
        "forget_accs": forget_accs, "initial_score": initial_score, "selected_round": selected,
        "selected_score": best_score, "steps": steps, "forget_acc": best_forget, "retain_eval": len(retain)})
