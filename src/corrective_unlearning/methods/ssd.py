"""SSD, selective synaptic dampening (SPEC section 5): no training, only a per-weight dampening."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import Param, method
from .task import Task, Unlearned

ALPHAS = [0.1, 1, 10, 50, 100, 500, 1e3, 1e4, 1e5, 1e6]
LAMBDA_RATIOS = [0.1, 0.5, 1, 5, 10]


def gradient_importance(task: Task, model: nn.Module, indices: torch.Tensor, batch_size: int,
                        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        magnitude: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Per-weight ``magnitude(gradient of loss(logits, given labels))`` over batches of ``batch_size``, in eval
    mode, averaged with each batch weighted by its size (the last, partial batch counts for its share of the
    samples, never dropped). ``indices`` are taken as a set (sorted, duplicates removed), so the batches and the
    result do not depend on the order in which they are listed."""
    indices = torch.unique(indices.cpu())
    if len(indices) == 0:
        raise ValueError("importance of an empty set of samples")
    params = list(model.parameters())
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.eval()
    for batch in indices.split(batch_size):
        with task.runtime.autocast():
            logits = model(task.inputs(batch))
        batch_loss = loss(logits.float(), task.labels[batch.to(task.device)])
        for total, grad in zip(totals, torch.autograd.grad(batch_loss, params, allow_unused=True)):
            if grad is not None:
                total.add_(magnitude(grad.float()), alpha=len(batch))
    model.train(was_training)
    return [t / len(indices) for t in totals]


def importance(task: Task, model: nn.Module, indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """SSD's importance: the squared gradient of the batch-mean cross-entropy (see :func:`gradient_importance`).

    Both passes of SSD use the same ``batch_size``: the squared gradient of a batch mean grows as the batch
    shrinks, so mixing sizes would shift what alpha means with |S_f| (a defect of the reference code, SPEC 9.8).
    """
    return gradient_importance(task, model, indices, batch_size, F.cross_entropy, torch.square)


def importance_pool(task: Task, hp: dict) -> torch.Tensor:
    """The samples of I_D: the whole retain set (or training set) unless ``importance_samples`` asks for a
    seeded subsample of that many."""
    pool = task.retain_idx if hp["importance_data"] == "retain" else task.train_idx
    samples = hp["importance_samples"]
    if samples is None or samples >= len(pool):
        return pool
    generator = torch.Generator().manual_seed(task.seed)
    return pool[torch.randperm(len(pool), generator=generator)[:samples]]


def importances(task: Task, hp: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(I_f, I_D), computed once per deletion set and shared by the whole alpha/lambda grid."""
    batch_size, samples = hp["batch_size"], hp["importance_samples"]
    key = ("ssd-importances", hp["importance_data"], batch_size, samples)
    return task.shared(key, lambda: (importance(task, task.original, task.forget_idx, batch_size),
                                     importance(task, task.original, importance_pool(task, hp), batch_size)))


def importance_ratio(forget_imp: list[torch.Tensor], data_imp: list[torch.Tensor]) -> float:
    """sum(I_f) / sum(I_D): how hard S_f pulls on the weights, relative to the data.

    It tracks how tightly the original fits S_f (squared gradients shrink with the loss): on Fashion-MNIST
    originals that differ only in their seed it spans 6.6e-4 to 0.16, and the absolute alpha that heals moves
    with it (0.01 to 7), while alpha / ratio stayed within 14-71 for every seed and rate measured.
    """
    forget = sum(float(t.sum()) for t in forget_imp)
    data = sum(float(t.sum()) for t in data_imp)
    return forget / data if data > 0 else math.nan


@torch.no_grad()
def dampen(model: nn.Module, forget_imp, data_imp, alpha: float, lam: float) -> int:
    """``theta *= min(lam * I_D / I_f, 1)`` where ``I_f > alpha * I_D``; returns how many weights changed value.

    That is not how many passed the threshold: with ``lam >= alpha`` a selected weight whose ``I_f <= lam * I_D``
    gets factor 1 and keeps its value (and a zero weight stays zero), so the count can be far below the number
    selected.

    Computed exactly as written (``alpha * I_D`` and ``lam * I_D``, a Python float times a float32 tensor; the
    quotient's divisor is ``I_f`` itself wherever ``I_f > 0``, the smallest float32 only where ``I_f = 0``), which
    :func:`equivalence_key` relies on: a change here must keep its proof."""
    changed = 0
    for param, i_f, i_d in zip(model.parameters(), forget_imp, data_imp):
        selected = i_f > alpha * i_d
        divisor = torch.where(i_f > 0, i_f, torch.full_like(i_f, torch.finfo(torch.float32).tiny))
        factor = (lam * i_d / divisor).clamp(max=1.0)
        dampened = param * torch.where(selected, factor, torch.ones_like(factor)).to(param.dtype)
        changed += int((dampened != param).sum())
        param.copy_(dampened)
    return changed


def effective_lambda(hp: dict) -> float:
    """lambda as SSD uses it: ``lambda`` when given, else ``alpha * lambda_ratio`` (in alpha's units)."""
    return hp["lambda"] if hp["lambda"] is not None else hp["alpha"] * hp["lambda_ratio"]


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def equivalence_key(hp: dict) -> tuple | None:
    """A key shared by exactly the settings that give the same model on one deletion set, or None when this
    setting is not known to equal any other. ``hp``: resolved hyperparameters (defaults filled in).

    With ``0 <= alpha <= lambda`` the model depends on lambda alone (and the importances): every weight with
    ``I_f > lambda I_D`` is multiplied by ``min(lambda I_D / I_f, 1)``, and every other weight keeps its value.
    Proof, per weight, for ``dampen`` as written (float32 importances ``I_f, I_D >= 0``; ``a = alpha * unit``,
    ``l = lambda * unit`` as Python floats with ``unit`` > 0 the same for both settings, 1 or the importance
    ratio): ``alpha <= lambda`` gives ``a <= l`` (rounding is monotone), so ``q = fl(a I_D) <= p = fl(l I_D)``.
    The weight is selected when ``I_f > q``; the setting ``(l, l)`` selects ``I_f > p``, a subset. Both compute
    the same ``p`` (the same operation on the same operands) and so the same factor ``fl(p / I_f)`` clamped at 1.
    A weight selected here but not by ``(l, l)`` has ``0 <= q < I_f <= p``: its divisor is ``I_f`` itself (> 0)
    and ``p / I_f >= 1`` rounds to a value >= 1, so its factor is exactly 1 and ``w * 1 == w``, as in ``(l, l)``
    where it is multiplied by 1 too. NaN importances select nothing in either. Hence equal bits.

    So two settings with ``0 <= alpha <= lambda`` share a key when their lambdas are equal floats (``alpha *
    lambda_ratio`` computed as :func:`effective_lambda` does, e.g. ``10 * 5 == 50.0 == 50 * 1``) and every other
    hyperparameter (importance data, batch size, samples, alpha scale) is equal. Settings with alpha above lambda
    (lambda ratios below 1) depend on both and get None."""
    alpha, lam = hp.get("alpha"), effective_lambda(hp)
    if not (_real(alpha) and _real(lam) and 0 <= alpha <= lam):
        return None
    rest = tuple(sorted((k, repr(v)) for k, v in hp.items() if k not in ("alpha", "lambda", "lambda_ratio")))
    return "ssd", float(lam), rest


@method(
    "ssd",
    params={"alpha": 10.0, "lambda": None, "lambda_ratio": 0.1,
            "alpha_scale": Param(str, "absolute", choices=("absolute", "relative")),
            "importance_data": Param(str, "retain", choices=("retain", "train")), "batch_size": Param(int, 64, low=1),
            "importance_samples": Param(int, None, low=1, nullable=True, doc="null: every sample")},
    grid={"alpha": ALPHAS, "lambda_ratio": LAMBDA_RATIOS},
    style=("tab:green", "D"),
)
def selective_synaptic_dampening(task: Task, hp: dict) -> Unlearned:
    """Selective synaptic dampening: shrink weights far more important to S_f than to the data (alpha,
    lambda = lambda or alpha x lambda_ratio; importance from the retain set or, as in the original SSD, the
    whole training set; original defaults alpha 10, lambda 1).

    ``alpha_scale="relative"`` (an extension, not the paper's SSD) measures alpha and lambda in units of
    :func:`importance_ratio`, so one grid transfers between models that fit S_f more or less tightly.
    """
    forget_imp, data_imp = importances(task, hp)
    lam = effective_lambda(hp)
    ratio = importance_ratio(forget_imp, data_imp)
    if hp["alpha_scale"] == "relative" and not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ssd alpha_scale='relative' needs a positive importance ratio sum(I_f) / sum(I_D), got "
                         f"{ratio} (are the gradients zero or NaN on S_f or on the data?)")
    unit = ratio if hp["alpha_scale"] == "relative" else 1.0
    model = task.copy_original()
    dampened = dampen(model, forget_imp, data_imp, hp["alpha"] * unit, lam * unit)
    # Zero dampened weights (weights whose value changed) means max(alpha, lambda) is above every weight's
    # I_f / I_D: the ratio says where to look.
    return Unlearned(model, {"dampened_weights": dampened,
                             "importance_ratio": ratio if math.isfinite(ratio) else None})
