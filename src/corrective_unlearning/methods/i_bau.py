"""I-BAU, Implicit Backdoor Adversarial Unlearning (Zeng et al., ICLR 2022). Needs no flagged sample.

The minimax ``min_theta max_delta L(theta, delta)`` over one universal input perturbation delta, on the clean
reserve, round by round (``rounds``):

1. Inner maximisation: delta from 0, one pass over the reserve's batches of SGD (lr ``pert_lr``) on
   ``-CE(f(x + delta), y) + pert_reg * ||delta||^2``; then delta projected into the L2 ball of radius ``radius``.
2. Outer minimisation, per batch: the implicit hypergradient of the outer loss ``CE(f(x + P delta), y)`` (P puts
   delta on a random ``outer_portion`` of the batch's images) through the inner fixed point
   ``delta = Phi(delta, theta) = delta - inner_lr * grad_delta L_in(delta, theta)``, ``L_in = -CE(f(x + delta), y)
   + inner_reg * ||delta||^2`` (:func:`inner_step`): ``d/dtheta = grad_theta L_out + (dPhi/dtheta)^T v`` with
   ``v = sum_{k<K} (dPhi/ddelta^T)^k grad_delta L_out`` (K fixed-point iterations; :func:`hypergradient`), then an
   Adam step on theta.

Defaults: BackdoorBench's I-BAU (config/defense/i-bau/config.yaml): 5% clean data, batch 256, Adam lr 1e-4,
n_rounds 5, K 5. From the I-BAU reference code: inner SGD lr 10 with regulariser 0.001, radius 10 (32x32x3 inputs:
here scaled by sqrt(input size / 3072), the same radius per pixel), fixed-point map step 0.1 with regulariser 1e-4,
outer portion 0.01 of a batch (at least one image). The model is in train mode for the outer steps, eval mode for
the inner maximisation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..reserve import CLEAN_SAMPLES, reserve_samples
from . import Param, method
from .task import Task, Unlearned


def inner_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, reg: float) -> torch.Tensor:
    return -F.cross_entropy(model(x + delta), y) + reg * delta.pow(2).sum()


def inner_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, step: float,
               reg: float) -> torch.Tensor:
    """Phi(delta, theta) = delta - step * grad_delta L_in(delta, theta), differentiable in delta and theta."""
    grad = torch.autograd.grad(inner_loss(model, x, y, delta, reg), delta, create_graph=True)[0]
    return delta - step * grad


def hypergradient(model: nn.Module, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                  delta: torch.Tensor, outer, K: int, step: float, reg: float) -> list[torch.Tensor]:
    """d L_out / d theta through the fixed point of :func:`inner_step` (the hypergrad library's ``fixed_point``:
    v from 0, K iterations of ``v <- (dPhi/ddelta)^T v + grad_delta L_out``)."""
    delta = delta.detach().requires_grad_(True)
    loss = outer(delta)
    grads = torch.autograd.grad(loss, [delta, *params], allow_unused=True)
    g_delta, g_theta = grads[0], grads[1:]
    mapped = inner_step(model, x, y, delta, step, reg)
    v = torch.zeros_like(delta)
    for _ in range(K):
        v = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)[0] + g_delta
    indirect = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [(a if a is not None else torch.zeros_like(p)) + (b if b is not None else 0.0)
            for p, a, b in zip(params, g_theta, indirect)]


@method("i-bau", params={"clean_samples": CLEAN_SAMPLES, "rounds": Param(int, 5, low=1), "K": Param(int, 5, low=1),
                         "batch_size": Param(int, 256, low=1), "lr": 1e-4, "pert_lr": 10.0, "pert_reg": 1e-3,
                         "radius": Param(float, 10.0, low=0), "inner_lr": 0.1, "inner_reg": 1e-4,
                         "outer_portion": Param(float, 0.01, low=0, high=1, closed="right")},
        grid={}, style=("darkviolet", "P"),
        reads_reserve=True, needs_flagged=False)
def i_bau(task: Task, hp: dict) -> Unlearned:
    """Implicit Backdoor Adversarial Unlearning: 5 rounds of (a universal adversarial perturbation found on the
    clean reserve; one pass of Adam steps, lr 1e-4, batch 256, on the implicit hypergradient with K = 5
    fixed-point iterations). No flagged sample is read."""
    clean = reserve_samples(task, hp["clean_samples"], "i-bau")
    model = task.copy_original()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=hp["lr"])
    labels = task.labels
    batch_size = min(hp["batch_size"], len(clean))
    per_round = math.ceil(len(clean) / batch_size)
    shape = task.inputs(clean[:1]).shape[1:]
    radius = hp["radius"] * math.sqrt(shape.numel() / 3072.0)
    picker = torch.Generator().manual_seed(task.seed + 24)
    seen = []
    for r in range(hp["rounds"]):
        batches = list(task.stream(clean, per_round, batch_size, task.seed + 24 + r))
        model.eval()
        for p in params:
            p.requires_grad_(False)
        delta = torch.zeros((1, *shape), device=task.device, requires_grad=True)
        pert_opt = torch.optim.SGD([delta], lr=hp["pert_lr"])
        for batch in batches:
            pert_opt.zero_grad(set_to_none=True)
            inner_loss(model, task.inputs(batch), labels[batch], delta, hp["pert_reg"]).backward()
            pert_opt.step()
        with torch.no_grad():
            norm = float(delta.norm())
            delta = delta * min(1.0, radius / norm) if norm > 0 else delta
        for p in params:
            p.requires_grad_(True)
        model.train()
        for batch in batches:
            x, y = task.inputs(batch), labels[batch]
            count = max(1, int(len(batch) * hp["outer_portion"]))
            rows = torch.randperm(len(batch), generator=picker)[:count].to(task.device)
            patch_mask = torch.zeros((len(batch), 1, 1, 1), device=task.device)
            patch_mask[rows] = 1.0

            def outer(d, x=x, y=y, patch_mask=patch_mask):
                return F.cross_entropy(model(x + patch_mask * d), y)

            grads = hypergradient(model, params, x, y, delta, outer, hp["K"], hp["inner_lr"], hp["inner_reg"])
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(params, grads):
                p.grad = g.detach()
            optimizer.step()
        seen.append(round(float(delta.norm()), 4))
    return Unlearned(model, {"clean_samples": len(clean), "steps": hp["rounds"] * per_round,
                             "perturbation_norms": seen, "radius": round(radius, 4)})
