"""Spectral signatures (Tran, Li and Madry, NeurIPS 2018), and the flag-aware variant ``spectral_flagged``.

``spectral`` (a detector: it does **not** use the flagged set; flagged rows get the same score as any other row, so
the self-check still measures how well it separates the known bad samples): per given label, centre the class's
penultimate embeddings of the original model, take the top right singular vector ``v`` of the centred matrix, and
score each sample by its squared projection ``((z - mean) . v)^2``. The paper removes the top ``1.5 eps n_c`` of
each class; a single ranking over every class needs one scale, so by default (``normalize``) each class's scores are
divided by their class mean (the variance along ``v``): a poisoned class's poisons then stand out by the same
yardstick as a clean class's tail (``normalize: false`` gives the paper's raw squared projections).

``spectral_flagged`` (flag-aware): the same projection, but along the direction that separates the flagged samples
of a class from their class, ``d_c = mean(flagged of c) - mean(c)``, signed (the flagged side is suspect) and in
units of the class's standard deviation along ``d_c``. A flagged row's direction leaves itself out. Samples whose
given label no flagged sample carries (or a flagged sample alone in its class) score below every other
(``NO_DIRECTION``). This is the comparison no detector paper makes: what knowing some of S_m buys over the top
singular vector.
"""
from __future__ import annotations

import numpy as np
import torch

from . import Features, ranking

NO_DIRECTION = -1e6  # below any standardised projection


def top_direction(centred: np.ndarray) -> np.ndarray:
    """The top right singular vector of ``centred`` [n, d] (sign fixed: its largest |entry| positive)."""
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    v = vt[0]
    return v if v[np.argmax(np.abs(v))] >= 0 else -v


@ranking("spectral", params={"normalize": True})
def spectral_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict,
                    normalize: bool) -> torch.Tensor:
    """Spectral signatures: per class, the squared projection of the centred embedding on the class's top singular
    vector (divided by the class mean with ``normalize``). A detector: it does not use the flagged set."""
    z = features.embeddings.double().numpy()
    labels = features.labels.numpy()
    scores = np.zeros(len(z))
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue  # a single sample has no spread: score 0
        centred = z[rows] - z[rows].mean(0)
        s = (centred @ top_direction(centred)) ** 2
        if normalize:
            s = s / max(s.mean(), 1e-300)
        scores[rows] = s
    notes["spectral_uses_flagged"] = False
    return torch.from_numpy(scores)


@ranking("spectral_flagged", params={})
def spectral_flagged_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict) -> torch.Tensor:
    """Flag-aware spectral score: per class, the standardised projection of the centred embedding on the
    flagged-minus-class mean difference (leave-one-out for flagged rows)."""
    z = features.embeddings.double().numpy()
    labels = features.labels.numpy()
    flagged = np.asarray(flagged, dtype=bool)
    scores = np.full(len(z), NO_DIRECTION)
    for c in np.unique(labels[flagged]):
        rows = np.flatnonzero(labels == c)
        zc = z[rows]
        mean = zc.mean(0)
        centred = zc - mean
        f_rows = flagged[rows]
        n_f = int(f_rows.sum())
        f_sum = zc[f_rows].sum(0)
        direction = f_sum / n_f - mean
        projection = centred @ direction
        spread = projection.std()
        s = projection / spread if spread > 0 else np.zeros(len(rows))
        # flagged rows: the direction of the other flagged samples of the class
        for j in np.flatnonzero(f_rows):
            if n_f < 2:
                s[j] = NO_DIRECTION
                continue
            d = (f_sum - zc[j]) / (n_f - 1) - mean
            p = centred @ d
            sd = p.std()
            s[j] = p[j] / sd if sd > 0 else 0.0
        scores[rows] = s
    return torch.from_numpy(scores)
