"""The poison detectors as rankings (spectral signatures, activation clustering, SCAn, STRIP, cleanlab's outlier
score) and the flag-aware spectral variant, each against an independent computation on a tiny hand-made feature
set: planted outliers come out on top, spectral matches numpy's eigendecomposition, STRIP's entropy matches a hand
computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from corrective_unlearning.suspects import (DEFAULT_COMBINED, Features, RANKINGS, features_of, rank_features,
                                            self_check)
from corrective_unlearning.suspects.scan import anomaly_index
from corrective_unlearning.suspects.strip import entropy
from corrective_unlearning.training import ImageBank


def _features(embeddings, labels, logits=None, blend=None) -> Features:
    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long)
    c = int(labels.max()) + 1
    logits = torch.zeros(len(labels), c) if logits is None else torch.as_tensor(logits, dtype=torch.float32)
    return Features(embeddings, logits, labels, c, blend=blend)


def _score(name, features, flagged, **params):
    spec = RANKINGS.get(name)
    notes = {}
    scores = spec.score(features, torch.as_tensor(flagged), seed=0, notes=notes, **spec.resolve(params)).double()
    return scores.numpy(), notes


def _planted(n_per_class=100, d=16, planted=8, shift=6.0, seed=0):
    """Two classes of Gaussian embeddings; the first ``planted`` rows of class 0 share a shifted cluster (a
    poison's trigger feature). The first three planted rows are flagged."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2 * n_per_class, d))
    labels = np.repeat([0, 1], n_per_class)
    z[:planted, :3] += shift
    flagged = np.zeros(len(z), dtype=bool)
    flagged[:3] = True
    return z, labels, flagged


def test_the_detectors_are_registered_and_combined_mixes_the_flag_aware_rankings():
    for name in ("spectral", "spectral_flagged", "activation_clustering", "scan", "strip", "outlier"):
        assert name in RANKINGS
    assert DEFAULT_COMBINED == ("embedding", "gradient", "label_issues", "spectral_flagged")  # no detector
    z, labels, flagged = _planted()
    result = rank_features(_features(z, labels, logits=np.random.default_rng(0).normal(size=(len(z), 2))),
                           torch.arange(len(z)), torch.as_tensor(flagged))
    assert set(result.per_ranking) == set(DEFAULT_COMBINED)
    # a detector joins combined when named
    joined = rank_features(_features(z, labels), torch.arange(len(z)), torch.as_tensor(flagged),
                           params={"combined": {"rankings": ["spectral_flagged", "spectral"]}})
    assert set(joined.weights) == {"spectral_flagged", "spectral"}


# ---- spectral ---------------------------------------------------------------------------------------------------

def test_spectral_is_the_squared_projection_on_the_top_eigenvector_per_class():
    z, labels, flagged = _planted()
    raw, notes = _score("spectral", _features(z, labels), flagged, normalize=False)
    normalised, _ = _score("spectral", _features(z, labels), flagged)
    z32 = z.astype(np.float32).astype(np.float64)  # the features hold float32
    for c in (0, 1):
        rows = labels == c
        centred = z32[rows] - z32[rows].mean(0)
        values, vectors = np.linalg.eigh(centred.T @ centred)  # independent of the SVD the ranking uses
        expected = (centred @ vectors[:, -1]) ** 2
        np.testing.assert_allclose(raw[rows], expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(normalised[rows], expected / expected.mean(), rtol=1e-9)
        assert raw[rows].sum() == pytest.approx(values[-1])  # the squared projections sum to the top eigenvalue
    assert set(np.argsort(-raw)[:8]) == set(range(8))  # the planted cluster on top
    assert notes["spectral_uses_flagged"] is False
    # a detector: the flagged set does not change its scores
    other, _ = _score("spectral", _features(z, labels), ~flagged)
    np.testing.assert_array_equal(other, normalised)


def test_spectral_flagged_projects_on_the_flagged_mean_difference_leaving_itself_out():
    z, labels, flagged = _planted(shift=3.0)
    scores, _ = _score("spectral_flagged", _features(z, labels), flagged)
    z32 = z.astype(np.float32).astype(np.float64)
    rows = np.flatnonzero(labels == 0)
    for i in rows:
        others = flagged.copy()
        others[i] = False
        mean = z32[rows].mean(0)
        d = z32[others & (labels == 0)].mean(0) - mean
        p = (z32[rows] - mean) @ d
        assert scores[i] == pytest.approx(p[list(rows).index(i)] / p.std(), rel=1e-9)
    # class 1 carries no flagged sample: below every score of class 0
    assert scores[labels == 1].max() < scores[labels == 0].min()
    assert set(np.argsort(-scores)[:8]) == set(range(8))


# ---- activation clustering and SCAn -----------------------------------------------------------------------------

@pytest.mark.parametrize("reduce", ["pca", "ica"])
def test_activation_clustering_puts_the_planted_cluster_on_top(reduce):
    z, labels, flagged = _planted(d=12)
    # ICA's unit-variance components: with fewer of them the planted direction is not drowned in noise ones
    scores, notes = _score("activation_clustering", _features(z, labels), flagged, reduce=reduce,
                           dims=10 if reduce == "pca" else 2)
    assert set(np.argsort(-scores)[:8]) == set(range(8))
    assert notes["activation_clustering_class_scores"][0] > 0.3
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    if reduce == "pca":  # the class score is the 2-means split's silhouette, computed here independently
        x = PCA(n_components=10).fit_transform(z.astype(np.float32).astype(np.float64)[labels == 0])
        split = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(x)
        assert notes["activation_clustering_class_scores"][0] == pytest.approx(silhouette_score(x, split), abs=1e-3)
        assert sorted(np.bincount(split).tolist()) == [8, 92]


def test_scan_puts_the_planted_identity_on_top_and_its_anomaly_index_is_the_mad_distance():
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(size=(80, 6)) + rng.normal(size=6) * 4 for _ in range(5)])
    labels = np.repeat(np.arange(5), 80)
    z[:10] += 5.0  # a second identity inside class 0
    flagged = np.zeros(len(z), dtype=bool)
    flagged[:2] = True
    scores, notes = _score("scan", _features(z, labels), flagged)
    assert set(np.argsort(-scores)[:10]) == set(range(10))
    index = notes["scan_anomaly_index"]
    assert index[0] == max(index.values()) and index[0] > math.e  # the class SCAn flags
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    mad = np.median(np.abs(values - 3.0)) * 1.4826
    np.testing.assert_allclose(anomaly_index(values), (values - 3.0) / mad)
    assert self_check(scores, flagged) > 0.9


# ---- STRIP ------------------------------------------------------------------------------------------------------

def test_entropy_matches_a_hand_computation():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]], dtype=torch.float64)
    expected = [0.0, math.log(2), math.log(3), -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))]
    np.testing.assert_allclose(entropy(p).numpy(), expected, rtol=1e-12)


def test_strip_is_minus_the_mean_entropy_of_the_blends():
    """A hand-made 'model' on 2-d inputs: softmax(W x); rows 0-2 carry a huge 'trigger' coordinate that keeps the
    prediction whatever the blend (low entropy)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    x[:3, 0] += 40.0
    w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    calls = []

    def blend(rows, partners, alpha):
        calls.append((rows.clone(), partners.clone(), alpha))
        mixed = (1 - alpha) * x[rows.numpy()] + alpha * x[partners.numpy()]
        return torch.softmax(torch.as_tensor(mixed @ w.T), dim=1).float()

    flagged = np.zeros(40, dtype=bool)
    flagged[0] = True
    features = _features(x, np.zeros(40, dtype=int), blend=blend)
    scores, _ = _score("strip", features, flagged, n=5, alpha=0.5, chunk=20)
    rows = torch.cat([c[0] for c in calls]).numpy()
    partners = torch.cat([c[1] for c in calls]).numpy()
    assert sorted(rows.tolist()) == sorted(np.repeat(np.arange(40), 5).tolist())
    assert not flagged[partners].any()  # partners drawn among the unflagged rows
    for i in range(40):
        mine = partners[rows == i]
        mixed = 0.5 * x[i] + 0.5 * x[mine]
        logits = mixed @ w.T
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        hand = -np.sum(p * np.log(np.maximum(p, 1e-300)), 1).mean()
        assert scores[i] == pytest.approx(-hand, abs=1e-6)
    assert set(np.argsort(-scores)[:3]) == {0, 1, 2}
    with pytest.raises(ValueError, match="blend"):
        _score("strip", _features(x, np.zeros(40, dtype=int)), flagged)


def test_features_of_blends_the_normalised_images_and_runs_the_model(runtime):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    bank = ImageBank(images, (0.5,), (0.25,), runtime.device, channels_last=False)
    indices = torch.tensor([3, 1, 4, 0, 9])
    features = features_of(model, bank, torch.zeros(10, dtype=torch.long), indices, runtime)
    probs = features.blend(torch.tensor([0, 2]), torch.tensor([1, 4]), 0.25)
    x = images.float() / 255
    for k, (a, b) in enumerate([(3, 1), (4, 9)]):  # rows 0, 2 and partners 1, 4 of indices
        mixed = (0.75 * (x[a] - 0.5) / 0.25 + 0.25 * (x[b] - 0.5) / 0.25)[None]
        expected = torch.softmax(model(mixed.to(runtime.device)), dim=1).cpu()[0]
        torch.testing.assert_close(probs[k], expected.detach(), rtol=1e-4, atol=1e-6)


# ---- cleanlab's outlier score -----------------------------------------------------------------------------------

def test_outlier_orders_as_the_mean_cosine_distance_to_the_k_nearest_neighbours():
    pytest.importorskip("cleanlab")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(120, 8)) + 4.0  # a tight cone around (4, ..., 4)
    for i in range(5):
        z[i] = -4.0 * np.eye(8)[i] + 0.1 * rng.normal(size=8)  # five lone outliers in other directions
    flagged = np.zeros(len(z), dtype=bool)
    flagged[:2] = True
    scores, _ = _score("outlier", _features(z, np.zeros(len(z), dtype=int)), flagged, k=10)
    assert set(np.argsort(-scores)[:5]) == set(range(5))
    u = z.astype(np.float32).astype(np.float64)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    distance = 1 - u @ u.T
    np.fill_diagonal(distance, np.inf)
    mean_knn = np.sort(distance, 1)[:, :10].mean(1)
    # the score is exp(-t * mean distance) (cleanlab): the same order as the independent mean distance
    from scipy.stats import spearmanr

    assert spearmanr(scores, mean_knn).statistic > 0.999


def test_outlier_equals_cleanlabs_out_of_distribution_score():
    pytest.importorskip("cleanlab")
    from cleanlab.outlier import OutOfDistribution

    z = np.random.default_rng(0).normal(size=(300, 8)) + 2.0
    scores, _ = _score("outlier", _features(z, np.zeros(300, dtype=int)), np.zeros(300, dtype=bool))
    theirs = 1 - OutOfDistribution(params={"k": 10}).fit_score(features=z.astype(np.float32), verbose=False)
    np.testing.assert_allclose(scores, theirs, atol=1e-5)
