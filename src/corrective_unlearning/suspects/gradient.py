"""Agreement of per-sample loss gradients with the flagged set's, at the last layer.

For cross-entropy on logits ``W z + b`` the gradient of one sample with respect to the last layer is closed form:
``dL/dW = r z^T`` and ``dL/db = r`` with ``r = softmax(logits) - onehot(given label)``. A sample's score is the
cosine of its gradient with the sum (equivalently the mean) of the flagged samples' gradients. Nothing is
materialised per sample: ``<r_i z_i^T, S> = r_i^T S z_i`` and ``||r_i z_i^T|| = ||r_i|| ||z_i||``. A flagged
sample is scored against the sum of the *other* flagged gradients (leave-one-out). The model's output is taken as
the output of its last linear layer (true of every classifier whose head is its last layer).
"""
from __future__ import annotations

import torch

from . import Features, ranking


def residuals(features: Features) -> torch.Tensor:
    """``softmax(logits) - onehot(label)``: the gradient of the cross-entropy with respect to the logits, float64."""
    r = torch.softmax(features.logits.double(), dim=1)
    r[torch.arange(len(r)), features.labels] -= 1.0
    return r


def last_layer_gradients(features: Features) -> torch.Tensor:
    """Per-sample gradients of the cross-entropy with respect to the last layer, flattened ``[N, C*D (+C)]``
    (weight row-major, then the bias where there is one): the slow path the scores never build."""
    r, z = residuals(features), features.embeddings.double()
    grads = (r[:, :, None] * z[:, None, :]).flatten(1)
    return torch.cat([grads, r], dim=1) if features.bias else grads


@ranking("gradient", params={})
def gradient_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict) -> torch.Tensor:
    """Cosine of each sample's last-layer loss gradient with the flagged set's mean gradient."""
    r, z = residuals(features), features.embeddings.double()
    bias = 1.0 if features.bias else 0.0
    s_w = r[flagged].T @ z[flagged]  # [C, D]: the sum of the flagged gradients' weight parts
    s_b = r[flagged].sum(0)
    inner = ((r @ s_w) * z).sum(1) + bias * (r @ s_b)  # <g_i, S>
    own = r.pow(2).sum(1) * (z.pow(2).sum(1) + bias)  # ||g_i||^2
    total = s_w.pow(2).sum() + bias * s_b.pow(2).sum()  # ||S||^2
    # flagged rows: against S - g_i
    inner = torch.where(flagged, inner - own, inner)
    total = torch.where(flagged, total - 2 * (inner + own) + own, total.expand(len(r)))
    denominator = own.sqrt() * total.clamp_min(0).sqrt()
    return torch.where(denominator > 0, inner / denominator.clamp_min(1e-300), torch.zeros_like(inner))
