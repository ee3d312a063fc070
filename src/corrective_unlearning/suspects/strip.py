"""STRIP (Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC 2019). A detector:
it does **not** use the flagged set (flagged rows are scored like every other row; the self-check still compares
them with the unflagged ones), except that blend partners are drawn among the unflagged rows.

Each sample is superimposed on ``n`` images drawn at random (seeded) from the unflagged scored samples, which are
mostly clean (the paper draws from held-out clean images; the owner has none it can vouch for), as the convex blend
``(1 - alpha) x + alpha x_partner`` of the normalised images (the same as blending the pixels, the normalisation
being affine); the original model predicts each blend. A trojaned input keeps predicting the target whatever it
is blended with, so its predictions have *low entropy*. The score is minus the mean Shannon entropy (nats) of the
``n`` blends' softmax predictions: higher = more suspect. The paper uses ``n = 100`` and an equal-weight
superimposition (``alpha = 0.5``); ``n`` bounds the cost (``n`` forward passes per sample).

Model forwards on blended images need more than the embeddings: :class:`~corrective_unlearning.suspects.Features`
carries an optional ``blend`` callable (``blend(rows, partners, alpha) -> probabilities``, feature rows in, one
row of class probabilities per pair out) that :func:`~corrective_unlearning.suspects.features_of` builds from the
model and image bank; features made without it (e.g. by hand) cannot be ranked by ``strip``.
"""
from __future__ import annotations

import torch

from ..checks import Param
from . import Features, ranking


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probabilities`` (0 log 0 = 0), float64."""
    p = probabilities.double()
    return -(p * torch.log(p.clamp_min(1e-300))).where(p > 0, torch.zeros_like(p)).sum(-1)


@ranking("strip", params={"n": Param(int, 20, low=1), "alpha": Param(float, 0.5, low=0, high=1, closed="neither"),
                          "chunk": Param(int, 8192, low=1)})
def strip_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, n: int, alpha: float,
                 chunk: int) -> torch.Tensor:
    """STRIP: minus the mean prediction entropy of the sample blended with n random unflagged samples (low
    entropy = suspect). A detector: it does not use the flagged set (beyond drawing partners among the others)."""
    if features.blend is None:
        raise ValueError("strip needs model forwards on blended images: features without a blend function (make "
                         "them with features_of, or rank with suspects()/rank_suspects())")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"strip: n must be a positive integer, got {n!r}")
    rows = len(features.labels)
    pool = torch.nonzero(~torch.as_tensor(flagged, dtype=torch.bool)).flatten()
    generator = torch.Generator().manual_seed(int(seed))
    partners = pool[torch.randint(len(pool), (rows, n), generator=generator)]  # [rows, n]
    total = torch.zeros(rows, dtype=torch.float64)
    per = max(1, chunk // n)
    for start in range(0, rows, per):
        a = torch.arange(start, min(start + per, rows))
        b = partners[a]  # [m, n]
        probs = features.blend(a.repeat_interleave(n), b.flatten(), alpha)
        total[a] = entropy(probs).view(len(a), n).mean(1)
    return -total
