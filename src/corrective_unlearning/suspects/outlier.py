"""cleanlab's outlier score (the score Datalab reports for issue type ``outlier``, from its ``OutOfDistribution``
estimator) on the original model's penultimate embeddings.
A detector: it does **not** use the flagged set or the labels (flagged rows are scored like every other row; the
self-check still compares them with the unflagged ones).

Datalab scores each sample by the average distance to its ``k`` nearest neighbours in the embedding (cosine for
more than 3 dimensions), turned into a score in [0, 1] by cleanlab's ``exp(-t d / median d)`` (low = outlier); the
ranking's score is ``1 - outlier_score`` (higher = more suspect). The neighbours are found here exactly by chunked
matrix products (itself left out) and the transform is cleanlab's own: scikit-learn's brute-force search inside
``OutOfDistribution`` (run twice there) took 35 s on 8,600 rows of a loaded 2-core machine and grows with the
square of the rows. (Datalab itself would also need the ``datasets`` package.) A poison
sits in a tight cluster of its own copies, so it is rarely an outlier; this ranking is the natural baseline for
mislabelled and atypical samples. Needs the optional package ``cleanlab`` (``pip install
'corrective-unlearning[suspects]'``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..checks import Param
from . import Features, ranking


def mean_knn_distances(embeddings: torch.Tensor, k: int, chunk: int = 2048) -> np.ndarray:
    """Each row's mean distance to its ``k`` nearest other rows (itself left out): cosine distance for more than 3
    dimensions, euclidean otherwise (cleanlab's choice of metric). Exact, by chunked matrix products."""
    z = embeddings.float()
    cosine = z.shape[1] > 3
    if cosine:
        z = torch.nn.functional.normalize(z, dim=1)
    squared = (z * z).sum(1)
    out = np.empty(len(z))
    kk = min(k, len(z) - 1)
    for start in range(0, len(z), chunk):
        rows = torch.arange(start, min(start + chunk, len(z)))
        sim = z[rows] @ z.T
        if cosine:
            distance = (1.0 - sim).clamp_min(0)
        else:
            distance = (squared[rows, None] + squared[None, :] - 2 * sim).clamp_min(0).sqrt()
        distance[torch.arange(len(rows)), rows] = float("inf")  # leave itself out
        out[rows.numpy()] = distance.topk(kk, dim=1, largest=False).values.double().mean(1).numpy()
    return out


@ranking("outlier", params={"k": Param(int, 10, low=1), "t": Param(int, 1, low=1)},
         needs=("cleanlab",))
def outlier_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, k: int,
                   t: int) -> torch.Tensor:
    """1 - cleanlab's outlier score on the embeddings (mean distance to the k nearest neighbours). A detector: it
    does not use the flagged set."""
    try:
        from cleanlab.internal.outlier import (  # lazy: cleanlab is an optional extra ([suspects])
            transform_distances_to_scores,
        )
    except ImportError as error:
        raise ImportError(f"the outlier ranking needs cleanlab ({error.name} is missing): pip install "
                          f"'corrective-unlearning[suspects]'") from None
    if len(features.labels) < 2:
        return torch.zeros(len(features.labels), dtype=torch.float64)
    distances = mean_knn_distances(features.embeddings, int(k))
    scale = float(max(np.median(distances), 100 * np.finfo(np.float64).eps))
    quality = transform_distances_to_scores(distances, int(t), scaling_factor=scale)
    return torch.from_numpy(1.0 - np.asarray(quality, dtype=np.float64))
