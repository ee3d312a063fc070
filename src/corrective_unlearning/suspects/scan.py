"""SCAn (Tang et al., "Demon in the Variant: Statistical Analysis of DNNs for Robust Backdoor Contamination
Detection", USENIX Security 2021). A detector: it does **not** use the flagged set (flagged rows are scored like
every other row; the self-check still compares them with the unflagged ones).

Two-component decomposition: a representation is ``r = mu_label + e``, an identity vector per class plus a
variation shared by every class, ``mu ~ N(0, S_u)``, ``e ~ N(0, S_e)``. The *global model* estimates ``S_u`` and
``S_e`` by EM over every scored sample (the paper fits it on a small clean set; the owner here has none it can
vouch for, so it is fitted on all, which a few percent of poison barely moves). The *local model* untangles each
class into two identities ``u_1``, ``u_2`` (EM: a sample joins the one nearer in the ``S_e^-1`` metric) and its
statistic ``J_c`` is the log-likelihood ratio of the two-identity model against the one-identity model. Classes are
compared by the anomaly index of ``J_c / max J`` (distance from the median in units of 1.4826 MAD; the paper flags
a class above e^2, implementations above e); here it is signed, so classes below the median count as clean.

As one ranking over every sample: ``score_i = max(a_c, 0) * [i in the smaller identity of c] + 1e-6 tanh(l_i)``,
``a_c`` the class's anomaly index and ``l_i`` the sample's standardised log-likelihood ratio of the smaller identity
against the larger one (orders samples within a class). Embeddings wider than ``dims`` are first projected on their
top ``dims`` principal components (the EM inverts d x d matrices per class and iteration).
"""
from __future__ import annotations

import numpy as np
import torch

from ..checks import Param
from . import Features, ranking

EPS = 1e-5


def global_model(x: np.ndarray, labels: np.ndarray, classes: np.ndarray, iterations: int = 100) -> tuple:
    """EM estimate of (S_u, S_e) for centred ``x`` [N, d] with class ``labels`` (the values of ``classes``)."""
    n, d = x.shape
    counts = np.array([np.sum(labels == c) for c in classes], dtype=float)
    sums = np.stack([x[labels == c].sum(0) for c in classes])  # [L, d]
    xx = x.T @ x

    def covariances(u):  # u [L, d]: the identity of each class
        uu = (counts[:, None, None] * u[:, :, None] * u[:, None, :]).sum(0)
        su = (counts[:, None] * u).sum(0)
        cov_u = (uu - np.outer(su, su) / n) / (n - 1)
        cross = sums.T @ u
        ee = xx - cross - cross.T + uu
        se = (sums - counts[:, None] * u).sum(0)
        cov_e = (ee - np.outer(se, se) / n) / (n - 1)
        return cov_u, cov_e

    s_u, s_e = covariances(sums / counts[:, None])
    for _ in range(iterations):
        f = np.linalg.pinv(s_e)
        u = np.stack([s_e @ np.linalg.pinv(counts[k] * s_u + s_e) @ s_u @ f @ sums[k] for k in range(len(classes))])
        new_u, new_e = covariances(u)
        done = np.linalg.norm(new_u - s_u) + np.linalg.norm(new_e - s_e) < EPS
        s_u, s_e = new_u, new_e
        if done:
            break
    return s_u, s_e


def split(x: np.ndarray, f: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Two identities of ``x`` [n, d] in the metric ``f``: bool [n], True for the first. Starts from the sign of
    the projection on the top principal direction (deterministic), then EM as SCAn's ``find_split``."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    group = centred @ vt[0] > 0
    for _ in range(iterations):
        if group.all() or not group.any():
            break
        u1, u2 = x[group].mean(0), x[~group].mean(0)
        bias = u1 @ f @ u1 - u2 @ f @ u2
        new = bias - 2 * (x @ f @ (u1 - u2)) < 0
        if np.array_equal(new, group):
            break
        group = new
    return group


def statistic(x: np.ndarray, s_u: np.ndarray, s_e: np.ndarray, f: np.ndarray, group: np.ndarray) -> float:
    """SCAn's ``J``: the (per-sample) log-likelihood ratio of two identities against one, for class samples ``x``."""
    n = len(x)
    mu = s_e @ np.linalg.pinv(n * s_u + s_e) @ s_u @ f @ x.sum(0)
    if group.all() or not group.any():
        return 0.0
    u1, u2 = x[group].mean(0), x[~group].mean(0)
    b1 = mu @ f @ mu - u1 @ f @ u1
    b2 = mu @ f @ mu - u2 @ f @ u2
    n1 = int(group.sum())
    own = np.where(group[:, None], mu - u1, mu - u2)  # [n, d]
    sc = n1 * b1 + (n - n1) * b2 - 2 * np.sum((x @ f) * own)
    return float(sc / n)


def anomaly_index(values: np.ndarray) -> np.ndarray:
    """Signed distance from the median in units of 1.4826 MAD (SCAn's anomaly index, keeping the sign)."""
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * 1.4826
    return (values - median) / mad if mad > 0 else np.zeros_like(values)


@ranking("scan", params={"dims": Param(int, 64, low=1), "iterations": Param(int, 100, low=1)}, needs=("scikit-learn",))
def scan_scores(features: Features, flagged: torch.Tensor, *, seed: int, notes: dict, dims: int,
                iterations: int) -> torch.Tensor:
    """SCAn: per class, the two-identity statistic of the embedding decomposition, its anomaly index across
    classes given to the members of the class's smaller identity. A detector: it does not use the flagged set."""
    z = features.embeddings.double().numpy()
    if z.shape[1] > dims:
        from sklearn.decomposition import PCA  # lazy: scikit-learn is an optional extra ([suspects])

        z = PCA(n_components=dims, random_state=seed).fit_transform(z)
    x = z - z.mean(0)
    labels = features.labels.numpy()
    classes = np.unique(labels)
    scores = np.zeros(len(x))
    if len(classes) < 2:
        return torch.from_numpy(scores)
    s_u, s_e = global_model(x, labels, classes, iterations)
    f = np.linalg.pinv(s_e)
    js, parts = [], []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        group = split(x[rows], f, iterations)
        if group.sum() * 2 > len(rows):
            group = ~group  # the first identity is the smaller one
        js.append(statistic(x[rows], s_u, s_e, f, group))
        parts.append((rows, group))
    js = np.array(js)
    index = anomaly_index(js / np.max(np.abs(js))) if np.max(np.abs(js)) > 0 else np.zeros(len(js))
    for a, (rows, group) in zip(index, parts):
        xr = x[rows]
        if group.any() and (~group).any():
            u1, u2 = xr[group].mean(0), xr[~group].mean(0)
            ratio = np.sum((xr - u2) @ f * (xr - u2), 1) - np.sum((xr - u1) @ f * (xr - u1), 1)
            ratio = ratio / (ratio.std() or 1.0)
        else:
            ratio = np.zeros(len(rows))
        scores[rows] = max(float(a), 0.0) * group + 1e-6 * np.tanh(ratio)
    notes["scan_anomaly_index"] = {int(c): round(float(a), 3) for c, a in zip(classes, index)}
    return torch.from_numpy(scores)
