"""``k: auto`` for suspect rankings: the choice itself is :func:`..hidden_count.choose_k` (on the ground floor,
shared with methods that rank suspects of their own); here, how a choice scores against the truth in experiments."""
from __future__ import annotations

import numpy as np

from ..hidden_count import AUTO, MIN_AUC, choose_k, is_auto

__all__ = ["AUTO", "MIN_AUC", "choose_k", "f1_against", "is_auto"]


def f1_against(chosen, manipulated, flagged=None) -> dict:
    """Precision, recall and F1 of the ``chosen`` sample indices against the undiscovered manipulated samples
    ``manipulated \\ flagged`` (experiments only)."""
    chosen = np.asarray(chosen, dtype=np.int64)
    truth = np.setdiff1d(np.asarray(manipulated, dtype=np.int64),
                         np.asarray([] if flagged is None else flagged, dtype=np.int64))
    found = int(np.isin(chosen, truth).sum())
    p = found / len(chosen) if len(chosen) else float("nan")
    r = found / len(truth) if len(truth) else float("nan")
    f1 = 2 * found / (len(chosen) + len(truth)) if len(chosen) + len(truth) else float("nan")
    return {"k": len(chosen), "found": found, "undiscovered": len(truth), "precision": p, "recall": r, "f1": f1}
