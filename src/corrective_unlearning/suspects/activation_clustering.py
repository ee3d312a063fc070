"""Activation Clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering", 2018). A detector: it does **not** use the flagged set (flagged rows are scored like every other row;
the self-check still compares them with the unflagged ones).

Per given label, the original model's penultimate embeddings are reduced to ``dims`` (10, as the paper) dimensions
by PCA (``reduce: pca``, the default, as IBM ART's ``ActivationDefence``) or FastICA (``reduce: ica``, the paper's
choice: with unit-variance components a planted cluster's one direction weighs no more than nine of noise, and on a
hand-made set of 100 samples with 8 planted it found no split where PCA found it exactly, in 1/20 of the time),
then split by 2-means. The
paper's cluster analysis marks a class poisoned when its smaller cluster holds at most ``max_size`` (35%) of the
class and the split is clean (high silhouette score). As one ranking over every sample:

    score_i = q_c * (1 + m_i) / 2 + 1e-6 * m_i,       q_c = silhouette(c) if size(small) / n_c <= max_size else 0

where ``silhouette(c)`` is the class's mean silhouette coefficient of the 2-means split and ``m_i`` the sample's
own silhouette coefficient, signed +1 towards the smaller cluster and -1 towards the larger one: members of a
class's smaller cluster score about ``q_c``, members of its larger cluster about 0, and the small last term orders
samples inside a class that ``q_c`` zeroes. Needs scikit-learn.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..checks import Param
from . import Features, ranking


def reduce_dims(z: np.ndarray, dims: int, method: str, seed: int) -> np.ndarray:
    """``z`` [n, d] reduced to ``min(dims, d, n - 1)`` components by FastICA or PCA (scikit-learn)."""
    from sklearn.decomposition import PCA, FastICA  # lazy: scikit-learn is an optional extra ([suspects])

    dims = max(1, min(dims, z.shape[1], len(z) - 1))
    if method == "pca":
        return PCA(n_components=dims, random_state=seed).fit_transform(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastICA's convergence warnings: a projection, max_iter bounds its cost
        return FastICA(n_components=dims, whiten="unit-variance", random_state=seed, max_iter=400).fit_transform(z)


def two_means(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(is-in-the-smaller-cluster [n] bool, per-sample silhouette [n], mean silhouette) of 2-means on ``x``."""
    from sklearn.cluster import KMeans  # lazy: scikit-learn is an optional extra ([suspects])
    from sklearn.metrics import silhouette_samples  # lazy: scikit-learn is an optional extra ([suspects])

    assign = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(x)
    sizes = np.bincount(assign, minlength=2)
    if sizes.min() == 0:
        return np.zeros(len(x), dtype=bool), np.zeros(len(x)), 0.0
    small = assign == int(np.argmin(sizes)) if sizes[0] != sizes[1] else assign == 1
    sil = silhouette_samples(x, assign)
    return small, sil, float(sil.mean())


@ranking("activation_clustering", params={"dims": Param(int, 10, low=1),
                                          "reduce": Param(str, "pca", choices=("pca", "ica")),
                                          "max_size": Param(float, 0.35, low=0, high=1, closed="neither")},
         needs=("scikit-learn",))
def activation_clustering_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, dims: int,
                                 reduce: str, max_size: float) -> torch.Tensor:
    """Activation Clustering: per class, 2-means on a 10-dimensional PCA (or ICA) projection of the embeddings;
    members of a small, well-separated cluster score its silhouette. A detector: it does not use the flagged set."""
    if reduce not in ("ica", "pca"):
        raise ValueError(f"activation_clustering: reduce must be 'ica' or 'pca', got {reduce!r}")
    z = features.embeddings.double().numpy()
    labels = features.labels.numpy()
    scores = np.zeros(len(z))
    poisoned = {}
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 4:
            continue
        small, sil, mean_sil = two_means(reduce_dims(z[rows], dims, reduce, seed), seed)
        relative = small.mean()
        q = max(mean_sil, 0.0) if 0 < relative <= max_size else 0.0
        m = np.where(small, sil, -sil)
        scores[rows] = q * (1 + m) / 2 + 1e-6 * m
        poisoned[int(c)] = round(q, 4)
    notes["activation_clustering_class_scores"] = poisoned
    return torch.from_numpy(scores)
