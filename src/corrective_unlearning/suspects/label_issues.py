"""Label issues by confident learning (cleanlab) on out-of-sample probabilities.

A logistic-regression probe (scikit-learn, on standardised penultimate embeddings of the original model) is
cross-validated over every scored sample, flagged ones included (``cross_val_predict(..., method="predict_proba")``,
stratified folds, seeded), so each sample's class probabilities come from a probe that never saw it. cleanlab's
``get_label_quality_scores`` turns them into a label quality per sample; the score here is ``1 - quality``
(higher = more likely mislabelled). It ignores which samples are flagged (apart from their self-check), so it finds
wrong labels of any kind, and is blind to a poison whose trigger the original model has learned (its embedding
then agrees with the poisoned label). ``notes["label_issues_found"]``: how many unflagged samples cleanlab's
``find_label_issues`` (default filter, on the same probabilities) calls label issues, a hint for K.

Needs the optional packages ``cleanlab`` and ``scikit-learn``: ``pip install 'corrective-unlearning[suspects]'``.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..checks import Param
from . import Features, ranking


def _require():
    try:
        import cleanlab.filter  # noqa: F401  # lazy: cleanlab is an optional extra ([suspects])
        import cleanlab.rank  # noqa: F401  # lazy: cleanlab is an optional extra ([suspects])
        import sklearn  # noqa: F401  # lazy: scikit-learn is an optional extra ([suspects])
    except ImportError as error:
        raise ImportError(f"the label_issues ranking (and combined, which includes it) needs cleanlab and "
                          f"scikit-learn ({error.name} is missing): pip install 'corrective-unlearning[suspects]' "
                          f"(or pip install cleanlab scikit-learn), or choose ranking embedding or gradient") from None


def out_of_sample_probabilities(embeddings: np.ndarray, labels: np.ndarray, folds: int, seed: int,
                                max_iter: int, c: float) -> np.ndarray:
    """Cross-validated probabilities ``[N, K]`` of a standardised logistic-regression probe, columns = the
    distinct labels in ascending order."""
    from sklearn.linear_model import (
        LogisticRegression,  # lazy: scikit-learn is an optional extra ([suspects])
    )
    from sklearn.model_selection import (  # lazy: scikit-learn is an optional extra ([suspects])
        StratifiedKFold,
        cross_val_predict,
    )
    from sklearn.pipeline import (
        make_pipeline,  # lazy: scikit-learn is an optional extra ([suspects])
    )
    from sklearn.preprocessing import (
        StandardScaler,  # lazy: scikit-learn is an optional extra ([suspects])
    )

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, embeddings, labels, cv=splits, method="predict_proba")


@ranking("label_issues", params={"folds": Param(int, 5, low=2), "max_iter": Param(int, 200, low=1),
                                 "C": Param(float, 1.0, low=0, closed="neither", doc="inverse regularisation")},
         needs=("cleanlab", "scikit-learn"))
def label_issue_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, folds: int,
                       max_iter: int, C: float) -> torch.Tensor:
    """1 - cleanlab's label quality, on out-of-fold probabilities of a logistic-regression probe on the
    embeddings."""
    _require()

    from cleanlab.filter import (
        find_label_issues,  # lazy: cleanlab is an optional extra ([suspects])
    )
    from cleanlab.rank import (
        get_label_quality_scores,  # lazy: cleanlab is an optional extra ([suspects])
    )
    from sklearn.exceptions import (
        ConvergenceWarning,  # lazy: scikit-learn is an optional extra ([suspects])
    )

    classes, labels = np.unique(features.labels.numpy(), return_inverse=True)  # cleanlab wants labels 0..K-1
    if len(classes) < 2:
        raise ValueError(f"label_issues: the scored samples carry a single label ({classes.tolist()}); a probe "
                         f"needs at least two classes")
    smallest = int(np.bincount(labels).min())
    if smallest < 2:
        raise ValueError(f"label_issues: class {int(classes[np.bincount(labels).argmin()])} has a single sample; "
                         f"cross-validation needs at least 2 per class")
    folds = min(int(folds), smallest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe, not a model: max_iter bounds its cost
        probs = out_of_sample_probabilities(features.embeddings.double().numpy(), labels, folds, seed, max_iter, C)
    quality = get_label_quality_scores(labels, probs)
    candidates = ~flagged.numpy()
    try:
        issues = find_label_issues(labels[candidates], probs[candidates])
        notes["label_issues_found"] = int(np.sum(issues))
    except Exception as error:  # a hint only: never fail the ranking over it
        notes["label_issues_found_error"] = f"{type(error).__name__}: {error}"
    return torch.from_numpy(1.0 - quality)
