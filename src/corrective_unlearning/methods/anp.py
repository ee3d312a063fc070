"""ANP, Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021). Needs no flagged sample; needs batch norm.

Every batch-norm channel ("neuron") k of M_o gets a mask m_k in [0, 1] (initially 1) and, while perturbed, relative
perturbations d_k of its scale and e_k of its shift in [-eps, eps]: the channel computes
``gamma_k (m_k + d_k) x_hat + beta_k (1 + e_k)`` (:class:`MaskedBatchNorm`; at m = 1 and d = e = 0 exactly M_o).
On batches of the clean reserve (train mode, batch statistics, as the reference):

1. perturbation: d, e drawn uniformly in [-eps, eps], then ``anp_steps`` signed-gradient ascent steps of size
   eps / anp_steps on the cross-entropy, clipped to [-eps, eps];
2. masks: one SGD step (lr, momentum 0.9) on ``alpha * CE(clean) + (1 - alpha) * CE(perturbed)``, clipped to [0, 1].

Then M_o (with its own running statistics) is pruned: the batch-norm scale of every channel whose mask is below
``threshold`` is set to 0. A model without batch norm is refused.

Defaults, BackdoorBench's ANP (config/defense/anp/config.yaml): 5% clean data, ``nb_iter`` 2000 iterations at batch
256 (the ANP code: 128), mask lr 0.2, anp_eps 0.4, anp_steps 1, anp_alpha 0.2, pruning by threshold. BackdoorBench
sweeps thresholds up to 0.9 in steps of 0.05 and keeps the model with the lowest test ASR, which reads test data;
here the threshold is fixed at 0.2, the value the ANP paper reports with. ``iterations`` scales the budget.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..reserve import CLEAN_SAMPLES, reserve_samples
from . import Param, method
from .task import Task, Unlearned


class MaskedBatchNorm(nn.Module):
    """A batch-norm layer with per-channel mask and relative perturbations of its affine parameters."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        if not bn.affine:
            raise ValueError("anp: a batch-norm layer without affine parameters has no neurons to mask")
        self.bn = bn
        c = bn.num_features
        self.mask = nn.Parameter(torch.ones(c, device=bn.weight.device))
        self.noise_weight = nn.Parameter(torch.zeros(c, device=bn.weight.device))
        self.noise_bias = nn.Parameter(torch.zeros(c, device=bn.weight.device))
        self.perturbed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        scale = self.mask + self.noise_weight if self.perturbed else self.mask
        shift = 1.0 + self.noise_bias if self.perturbed else 1.0
        use_batch = bn.training or bn.running_mean is None
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(x, bn.running_mean if not bn.training or bn.track_running_stats else None,
                            bn.running_var if not bn.training or bn.track_running_stats else None,
                            bn.weight * scale, bn.bias * shift, use_batch, momentum, bn.eps)


def mask_model(model: nn.Module) -> list[MaskedBatchNorm]:
    """Replace, in place, every batch-norm layer of ``model`` by a :class:`MaskedBatchNorm` around it; the layers
    in module order. Refuses a model without batch norm."""
    wrapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                layer = MaskedBatchNorm(child)
                setattr(parent, name, layer)
                wrapped.append(layer)
    if not wrapped:
        raise ValueError("anp perturbs and masks batch-norm neurons, and this model has no batch-norm layer: "
                         "choose another defence (ft_clean, nad, i-bau)")
    return wrapped


def set_perturbed(layers: list[MaskedBatchNorm], on: bool) -> None:
    for layer in layers:
        layer.perturbed = on


@method("anp", params={"clean_samples": CLEAN_SAMPLES, "iterations": Param(int, 2000, low=1),
                       "batch_size": Param(int, 256, low=1), "lr": 0.2, "eps": Param(float, 0.4, low=0),
                       "anp_steps": Param(int, 1, low=1), "alpha": Param(float, 0.2, low=0, high=1),
                       "threshold": Param(float, 0.2, low=0, high=1, doc="masks below it are pruned")},
        grid={}, style=("crimson", "v"),
        reads_reserve=True, needs_flagged=False)
def anp(task: Task, hp: dict) -> Unlearned:
    """Adversarial Neuron Pruning: batch-norm neuron masks learned on the clean reserve under adversarial
    perturbation of the neurons (eps 0.4, one step, alpha 0.2; 2000 iterations of batch 256, mask lr 0.2), then
    the neurons whose mask is below 0.2 pruned from M_o. Refuses models without batch norm."""
    eps, steps, alpha = float(hp["eps"]), int(hp["anp_steps"]), float(hp["alpha"])
    clean = reserve_samples(task, hp["clean_samples"], "anp")
    model = task.copy_original()
    layers = mask_model(model)  # raises without batch norm, before any work
    for p in model.parameters():
        p.requires_grad_(False)
    masks = [layer.mask for layer in layers]
    noises = [t for layer in layers for t in (layer.noise_weight, layer.noise_bias)]
    for t in masks + noises:
        t.requires_grad_(True)
    mask_opt = torch.optim.SGD(masks, lr=hp["lr"], momentum=0.9)
    generator = torch.Generator(device="cpu").manual_seed(task.seed + 23)
    model.train()
    labels = task.labels
    for batch in task.stream(clean, hp["iterations"], hp["batch_size"], task.seed + 23):
        x, y = task.inputs(batch), labels[batch]
        if eps > 0:
            with torch.no_grad():  # random start in [-eps, eps]
                for t in noises:
                    t.copy_((torch.rand(t.shape, generator=generator) * 2 - 1).to(t.device) * eps)
            for _ in range(steps):
                set_perturbed(layers, True)
                loss = -F.cross_entropy(model(x), y)
                grads = torch.autograd.grad(loss, noises)
                with torch.no_grad():  # descend on -CE: a signed ascent step on CE
                    for t, g in zip(noises, grads):
                        t.sub_(eps / steps * g.sign()).clamp_(-eps, eps)
        mask_opt.zero_grad(set_to_none=True)
        if eps > 0:
            set_perturbed(layers, True)
            loss_rob = F.cross_entropy(model(x), y)
        else:
            loss_rob = 0.0
        set_perturbed(layers, False)
        loss_nat = F.cross_entropy(model(x), y)
        (alpha * loss_nat + (1 - alpha) * loss_rob).backward(inputs=masks)
        mask_opt.step()
        with torch.no_grad():
            for m in masks:
                m.clamp_(0.0, 1.0)
    values = [layer.mask.detach().cpu() for layer in layers]
    pruned = task.copy_original()
    bns = [m for m in pruned.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    count = 0
    with torch.no_grad():
        for bn, mask in zip(bns, values):
            off = mask < hp["threshold"]
            bn.weight[off.to(bn.weight.device)] = 0.0
            count += int(off.sum())
    total = sum(len(v) for v in values)
    quantiles = torch.quantile(torch.cat(values), torch.tensor([0.0, 0.1, 0.5]))
    return Unlearned(pruned, {"clean_samples": len(clean), "pruned_neurons": count, "neurons": total,
                              "mask_quantiles": [round(float(q), 4) for q in quantiles]})
