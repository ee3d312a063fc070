"""Pieces several methods share: distillation losses and teachers, last-k-block parameter selection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import fold_batchnorm
from ..runtime import Runtime


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  reduction: str = "batchmean"):
    """KL(teacher || student) on temperature-softened outputs.

    ``batchmean`` (SCRUB): the sum over a row, averaged over the batch, scaled by T^2 as in distillation.
    ``mean`` (BadT): ``F.kl_div``'s default, as the reference's bad teacher calls it: the average over all B x C
    entries, i.e. the batch mean divided by the number of classes, not scaled by T^2.
    """
    if reduction not in ("batchmean", "mean"):
        raise ValueError(f"kl_to_teacher reduction must be 'batchmean' or 'mean', got {reduction!r}")
    t = temperature
    log_q, p = F.log_softmax(student_logits.float() / t, 1), F.softmax(teacher_logits.float() / t, 1)
    if reduction == "batchmean":
        return F.kl_div(log_q, p, reduction="batchmean") * t * t
    # the sum over the entries divided by their number: F.kl_div's reduction="mean", spelled out because torch
    # warns that it will change that reduction's meaning
    return F.kl_div(log_q, p, reduction="sum") / p.numel()


def frozen_teacher(model: nn.Module, runtime: Runtime) -> nn.Module:
    """An inference-only copy of ``model`` for distillation targets: eval mode, no gradients, batch norm folded
    into its convolutions (one forward pass per training step, so the saved kernels count)."""
    return runtime.prepare(fold_batchnorm(model))


def reinitialise(modules: list[nn.Module], seed: int) -> None:
    torch.manual_seed(seed)
    for block in modules:
        for module in block.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
