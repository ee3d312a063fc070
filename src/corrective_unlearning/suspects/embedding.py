"""Nearest flagged neighbours in the original model's penultimate embedding.

A sample's score is the mean cosine similarity of its embedding to its ``k`` most similar flagged samples, among
the flagged samples that carry the *same given label* (``same_label``, default on). The label matters: an
interclass-swapped cat labelled "dog" sits among the clean cats in the embedding; what sets it apart is that it
resembles flagged cats labelled "dog". A poison resembles the flagged poisons (all labelled with the target
class) through its trigger. Samples whose label no flagged sample carries score -2, below any cosine.
A flagged sample's own score (its self-check) leaves itself out.
"""
from __future__ import annotations

import torch

from ..checks import Param
from . import Features, ranking

NO_NEIGHBOUR = -2.0  # below any cosine similarity


@ranking("embedding", params={"k": Param(int, 5, low=1), "same_label": True, "chunk": Param(int, 4096, low=1)})
def embedding_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, k: int,
                     same_label: bool, chunk: int) -> torch.Tensor:
    """Mean cosine similarity to the k nearest flagged samples of the same given label, in the penultimate
    embedding of the original model."""
    z = torch.nn.functional.normalize(features.embeddings.double(), dim=1)
    flagged_rows = torch.nonzero(flagged).flatten()
    z_f, y_f = z[flagged_rows], features.labels[flagged_rows]
    kk = min(k, len(flagged_rows))
    scores = torch.empty(len(z), dtype=torch.float64)
    for start in range(0, len(z), chunk):
        rows = torch.arange(start, min(start + chunk, len(z)))
        sim = z[rows] @ z_f.T  # [rows, flagged]
        if same_label:
            sim = sim.masked_fill(features.labels[rows][:, None] != y_f[None, :], float("-inf"))
        sim = sim.masked_fill(rows[:, None] == flagged_rows[None, :], float("-inf"))  # leave itself out
        top = sim.topk(kk, dim=1).values
        finite = torch.isfinite(top)
        count = finite.sum(1)
        mean = torch.where(finite, top, torch.zeros_like(top)).sum(1) / count.clamp_min(1)
        scores[rows] = torch.where(count > 0, mean, torch.full_like(mean, NO_NEIGHBOUR))
    return scores
