"""The loss-curvature proxy (SPEC 7c; RUM's ``loss_curvature.py``, CURE-style): how fast the input gradient of
the loss turns around a training example,

    curvature(x) = ||grad_x L(x + z) - grad_x L(x)||^2,   z = h * sign(grad_x L(x)) / ||sign(grad_x L(x))||,

with L the cross-entropy against the given (possibly corrupted) label, h = 0.01, on the original model in eval
mode. ``z`` is CURE's step: it already carries ``h``, so the perturbation has norm ``h`` (the notes' "x + h z"
would apply ``h`` twice). Higher = more memorized (memorized examples sit in sharp regions of the loss).

Computed in float32 without autocast (and without TF32 convolutions on CUDA): the gradient difference over a
step of 0.01 is small, and reduced precision would drown it. Each sample carries its trigger where it was
trained with one.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import proxy
from .store import over_training_split


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``grad_x`` of the cross-entropy (summed over the batch: in eval mode examples do not mix)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def input_curvature(model: nn.Module, x: torch.Tensor, y: torch.Tensor, h: float = 0.01) -> torch.Tensor:
    """Per-example CURE curvature of a batch (see the module docstring); ``model`` should be in eval mode."""
    g = _input_gradient(model, x, y)
    direction = torch.sign(g)
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    z = h * direction / norm
    g_step = _input_gradient(model, x.detach() + z, y)
    return (g_step - g).flatten(1).pow(2).sum(1)


def _full_precision(runtime):
    """No TF32 convolutions on CUDA (the default allows them); nothing to do on the CPU."""
    return torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if runtime.cuda else contextlib.nullcontext()


def curvature_scores(original: nn.Module, setting, runtime, h: float = 0.01,
                     batch_size: int | None = None) -> torch.Tensor:
    """CURE curvature of ``original`` at every training sample (given label, trigger where carried), over the
    training split (NaN outside ``setting.train_idx``)."""
    idx, m = setting.train_idx, setting.manipulated
    batch_size = batch_size or (512 if runtime.cuda else 256)
    was_training = original.training
    original.eval()
    values = []
    with _full_precision(runtime):
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            x = setting.train_bank.batch(chunk, m.triggered[chunk])
            y = m.labels[chunk].to(x.device)
            values.append(input_curvature(original, x, y, h).detach().cpu())
    original.train(was_training)
    return over_training_split(torch.cat(values) if values else torch.empty(0), idx, len(m.labels))


@proxy("curvature", params={"h": 0.01},
       summary="CURE input loss curvature ||grad L(x + z) - grad L(x)||^2 of the original")
def _curvature(original: nn.Module, setting, runtime, info: dict, h: float) -> torch.Tensor:
    del info
    return curvature_scores(original, setting, runtime, h)
