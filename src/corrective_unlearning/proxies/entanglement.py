"""The entanglement score (SPEC 7; RUM's ``surgical_plugins/overlap.py``) of two index sets in the original model's
penultimate embedding space: within-set spread over between-set separation,

    ES = [mean_{i in retain} ||phi_i - mu_r||^2 + mean_{j in forget} ||phi_j - mu_f||^2]
         / [0.5 (||mu_r - mu||^2 + ||mu_f - mu||^2)],   mu = (mu_r + mu_f) / 2.

Higher = more entangled = harder to unlearn. The means are exact means over each set (RUM averages batch means,
which differs when the last batch is short).
"""
from __future__ import annotations

import torch
from torch import nn

from ..evaluation.predict import logits
from ..training import ImageBank


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's classifier: its last ``nn.Linear`` module (in registration order)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take the penultimate embedding from")
    return linears[-1]


@torch.no_grad()
def penultimate_embeddings(model: nn.Module, bank: ImageBank, indices: torch.Tensor, runtime,
                           stamp: torch.Tensor | bool = False, batch_size: int | None = None) -> torch.Tensor:
    """The input of the last linear layer for ``bank[indices]`` (eval mode, unshuffled): float32 CPU ``[N, D]``,
    row ``k`` for ``indices[k]``. ``stamp`` as in :func:`~corrective_unlearning.evaluation.predict.logits`."""
    return embeddings_and_logits(model, bank, indices, runtime, stamp, batch_size)[0]


@torch.no_grad()
def embeddings_and_logits(model: nn.Module, bank: ImageBank, indices: torch.Tensor, runtime,
                          stamp: torch.Tensor | bool = False,
                          batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate embeddings ``[N, D]``, the model's outputs ``[N, C]``) of ``bank[indices]`` from one
    forward pass, both float32 on the CPU, row ``k`` for ``indices[k]``; as :func:`penultimate_embeddings`."""
    captured: list[torch.Tensor] = []
    hook = last_linear(model).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].detach().flatten(1).float().cpu()))
    try:
        outputs = logits(model, bank, indices, runtime, stamp, batch_size)
    finally:
        hook.remove()
    if not captured:
        return torch.empty(0, last_linear(model).in_features), outputs
    return torch.cat(captured), outputs


def entanglement_score(embeddings_retain: torch.Tensor, embeddings_forget: torch.Tensor) -> float:
    """SPEC 7's ES of two embedding sets ``[N_r, D]`` and ``[N_f, D]`` (computed in float64); ``inf`` when the two
    means coincide."""
    if len(embeddings_retain) == 0 or len(embeddings_forget) == 0:
        raise ValueError(f"the entanglement score needs two non-empty sets, got {len(embeddings_retain)} retain "
                         f"and {len(embeddings_forget)} forget embeddings")
    retain, forget = embeddings_retain.double().flatten(1), embeddings_forget.double().flatten(1)
    mu_r, mu_f = retain.mean(0), forget.mean(0)
    mu = (mu_r + mu_f) / 2
    spread = (retain - mu_r).pow(2).sum(1).mean() + (forget - mu_f).pow(2).sum(1).mean()
    separation = 0.5 * ((mu_r - mu).pow(2).sum() + (mu_f - mu).pow(2).sum())
    return float(spread / separation) if separation > 0 else float("inf")


def entanglement(model: nn.Module, setting, retain_idx: torch.Tensor, forget_idx: torch.Tensor, runtime) -> float:
    """ES between two sets of training indices of ``setting``, in ``model``'s penultimate space (each sample with
    its trigger where it carries one)."""
    triggered = setting.manipulated.triggered

    def embed(idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long).cpu()
        return penultimate_embeddings(model, setting.train_bank, idx, runtime, stamp=triggered[idx])

    return entanglement_score(embed(retain_idx), embed(forget_idx))
