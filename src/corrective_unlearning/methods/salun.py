"""SalUn: Random-label training restricted to the weights most salient for S_f (SPEC section 5; RUM's ``RL``
with a mask from ``generate_mask.py``).

Defaults: threshold 0.5 (the fraction of weights kept trainable), 10 epochs at lr 0.1 (RUM's README; SalUn's own
example uses 0.013), the recipe's SGD (momentum 0.9, weight decay 5e-4) at a constant rate and the recipe's batch
size, epochs as in Random-label. ``steps`` overrides the epoch count. Grid: lr in {0.1, 0.025, 0.013} (RUM's,
recipe A's peak, SalUn's own).

Two departures from RUM's code (SPEC 9.7): the mask keeps the *largest* gradient magnitudes (RUM's kept the
smallest), and masked-out weights do not move at all. Their gradient is zeroed by a hook and weight decay, which
torch's SGD would add to every weight, is applied by the same hook to the kept weights only (the optimiser's own
weight decay is 0), so masked-out weights get no gradient, no weight decay and a momentum buffer of exact zeros;
after every step they are also copied back from M_o, so they are bit-identical to M_o's at every forward pass and
at the end. Batch-norm running statistics are buffers, not weights: they are not masked and move as in any
fine-tuning (as in the official SalUn), over batches of S_f and the retain set alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Param, method
from .random_label import fit_random_labels
from .task import Task, Unlearned


def forget_saliency(task: Task) -> list[torch.Tensor]:
    """|d CE / d theta| per weight of M_o, CE summed over S_f with its given labels, in eval mode (batches of the
    recipe's size; in eval mode the sum does not depend on how S_f is cut). M_o's mode is restored and its
    ``.grad`` never touched."""
    model = task.original
    params = list(model.parameters())
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.eval()
    for batch in task.forget_idx.split(task.recipe.batch_size):
        with task.runtime.autocast():
            loss = F.cross_entropy(model(task.inputs(batch)).float(), task.labels[batch.to(task.device)],
                                   reduction="sum")
        for total, grad in zip(totals, torch.autograd.grad(loss, params, allow_unused=True)):
            if grad is not None:
                total.add_(grad.float())
    model.train(was_training)
    return [t.abs() for t in totals]


def saliency_mask(saliency: list[torch.Tensor], threshold: float) -> list[torch.Tensor]:
    """Boolean masks keeping the ``round(threshold * n)`` weights of largest saliency, ranked over all n weights
    of the model together (ties broken by position, so the mask is deterministic)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"salun threshold (the fraction of weights kept) must be in [0, 1], got {threshold!r}")
    flat = torch.cat([s.flatten() for s in saliency])
    kept = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    kept[torch.argsort(flat, descending=True, stable=True)[: round(threshold * len(flat))]] = True
    return [m.view_as(s) for m, s in zip(kept.split([s.numel() for s in saliency]), saliency)]


@method("salun", params={"threshold": Param(float, 0.5, low=0, high=1, doc="the fraction of weights kept"),
                         "epochs": 10, "lr": 0.1, "steps": None},
        grid={"lr": [0.1, 0.025, 0.013]}, style=("tab:cyan", "p"))
def salun(task: Task, hp: dict) -> Unlearned:
    """SalUn: Random-label training of only the top `threshold` fraction of weights by forget-loss gradient
    magnitude; the others stay bit-identical to M_o (threshold 0.5, 10 epochs, lr 0.1).

    The saliency is computed once per deletion set and shared by the grid."""
    masks = saliency_mask(task.shared(("salun-saliency",), lambda: forget_saliency(task)), hp["threshold"])
    model = task.copy_original()
    params = list(model.parameters())
    anchors = [p.detach() for p in task.original.parameters()]
    decay = task.recipe.weight_decay

    def hook(param: torch.Tensor, mask: torch.Tensor):
        return lambda grad: torch.where(mask, grad + decay * param.detach(), torch.zeros_like(grad))

    @torch.no_grad()
    def hold(_step: int) -> None:
        for param, anchor, mask in zip(params, anchors, masks):
            param.copy_(torch.where(mask, param, anchor))

    handles = [p.register_hook(hook(p, m)) for p, m in zip(params, masks)]
    try:
        fit_random_labels(task, model, hp, desc="SalUn", after_step=hold, weight_decay=0.0)
    finally:
        for handle in handles:
            handle.remove()
    kept = sum(int(m.sum()) for m in masks)
    return Unlearned(model, {"kept_weights": kept, "kept_fraction": kept / sum(m.numel() for m in masks)})
