"""cleanlab's outlier score (the score Datalab reports for issue type ``outlier``: its ``OutOfDistribution``
estimator, called directly, which spares Datalab's extra dependencies) on the original model's penultimate
embeddings.
A detector: it does **not** use the flagged set or the labels (flagged rows are scored like every other row; the
self-check still compares them with the unflagged ones).

Datalab scores each sample by the average distance to its ``k`` nearest neighbours in the embedding, turned into a
score in [0, 1] (low = outlier); the ranking's score is ``1 - outlier_score`` (higher = more suspect). A poison
sits in a tight cluster of its own copies, so it is rarely an outlier; this ranking is the natural baseline for
mislabelled and atypical samples. Needs the optional package ``cleanlab`` (``pip install
'corrective-unlearning[suspects]'``).
"""
from __future__ import annotations

import numpy as np
import torch

from . import Features, ranking


@ranking("outlier", defaults={"k": 10}, needs=("cleanlab", "scikit-learn"))
def outlier_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, k: int) -> torch.Tensor:
    """1 - cleanlab Datalab's outlier score on the embeddings (k nearest neighbours). A detector: it does not use
    the flagged set."""
    try:
        from cleanlab.outlier import OutOfDistribution
    except ImportError as error:
        raise ImportError(f"the outlier ranking needs cleanlab ({error.name} is missing): pip install "
                          f"'corrective-unlearning[suspects]'") from None
    import contextlib
    import io

    embeddings = features.embeddings.float().numpy()
    with contextlib.redirect_stdout(io.StringIO()):
        quality = OutOfDistribution(params={"k": int(k)}).fit_score(features=embeddings, verbose=False)
    return torch.from_numpy(1.0 - np.asarray(quality, dtype=np.float64))
