"""Memorization proxies and the entanglement score (SPEC 7), on the synthetic source."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from corrective_unlearning.cache import originals_cache
from corrective_unlearning.evaluation import logits
from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.proxies import (
    PROXIES, ConfidenceRecorder, MissingProxyError, entanglement, entanglement_score, input_curvature,
    memorization_scores, penultimate_embeddings, symmetric_kl,
)
from corrective_unlearning.proxies.confidence import RECORDED
from corrective_unlearning.proxies.heldout import model_divergence
from corrective_unlearning.training import Recipe, train
from helpers import RECIPE, same, state


def _setting(synthetic, runtime, manipulation="random_labels", n=40, val_size=16):
    return build_setting(synthetic, manipulation, n, 0, runtime, val_size=val_size)


@pytest.fixture(scope="module")
def noisy(synthetic, runtime):
    """An original trained on 40 mislabelled samples; not cached (module fixtures run outside the test cache)."""
    setting = _setting(synthetic, runtime)
    original, info = train_original(setting, "small_cnn", RECIPE, runtime, use_cache=False)
    return setting, original, info


def _mask(size, indices):
    mask = torch.zeros(size, dtype=torch.bool)
    mask[indices] = True
    return mask


# ------------------------------------------------------------------------------------------------ confidence
def test_recorder_mean_equals_a_direct_computation():
    recorder = ConfidenceRecorder(5)
    steps = [  # (logits, given labels, indices); index 1 appears twice in one step, index 4 never
        (torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]]), torch.tensor([0, 2]), torch.tensor([0, 3])),
        (torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 4.0], [-2.0, 1.0, 1.0]]), torch.tensor([1, 2, 0]),
         torch.tensor([1, 1, 0])),
        (torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([2]), torch.tensor([2])),
    ]
    seen: dict[int, list[float]] = {}
    for z, y, idx in steps:
        recorder(z, y, idx)
        for row, label, i in zip(z.tolist(), y.tolist(), idx.tolist()):
            seen.setdefault(i, []).append(math.exp(row[label]) / sum(math.exp(v) for v in row))
    mean = recorder.mean()
    assert mean.dtype == torch.float32 and mean.shape == (5,)
    for i, values in seen.items():
        assert mean[i].item() == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert math.isnan(mean[4].item())


def test_recorder_sees_every_training_step(synthetic, runtime):
    setting = _setting(synthetic, runtime)
    recorder = ConfidenceRecorder(len(setting.manipulated.labels))
    recipe = Recipe(steps=7, batch_size=32, crop_padding=1, flip=False)
    torch.manual_seed(0)
    from corrective_unlearning.models import create_model
    model = runtime.prepare(create_model("small_cnn", 4, 3))
    train(model, setting.train_bank, setting.manipulated.labels, setting.train_idx, recipe, seed=0,
          runtime=runtime, observe=recorder)
    assert recorder.count.sum().item() == 7 * 32
    outside = ~_mask(len(recorder.count), setting.train_idx)
    assert recorder.count[outside].sum().item() == 0  # never the validation split


def test_confidence_ranks_mislabelled_samples_above_clean_ones(noisy, runtime):
    setting, original, info = noisy
    assert info["confidence"] == "recorded"
    scores = memorization_scores("confidence", setting, original, info, runtime)
    size = len(scores)
    mislabelled = _mask(size, setting.manipulated.manipulated)
    clean = _mask(size, setting.train_idx) & ~mislabelled
    a, b = scores[mislabelled], scores[clean]
    assert a.mean() > b.mean()
    auc = (a[:, None] > b[None, :]).float().mean().item()
    assert auc > 0.8
    assert torch.isnan(scores[setting.val_idx]).all() and torch.isfinite(scores[setting.train_idx]).all()
    assert ((scores[setting.train_idx] >= 0) & (scores[setting.train_idx] <= 1)).all()


def test_stored_confidence_survives_a_cache_hit(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    recipe = RECIPE.replace(steps=10)
    first, info = train_original(setting, "small_cnn", recipe, runtime)
    assert info["confidence"] == "recorded"
    stored = isolated_cache / "originals" / "proxies" / f"{info['cache_key']}.safetensors"
    assert stored.is_file()
    second, info2 = train_original(setting, "small_cnn", recipe, runtime)
    assert info2["cache"] == "hit" and info2["confidence"] == "stored"
    a = memorization_scores("confidence", setting, first, info, runtime)
    b = memorization_scores("confidence", setting, second, info2, runtime)  # another object: read from disk
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])


def test_an_original_cached_without_confidence_says_so(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    recipe = RECIPE.replace(steps=5)
    _, info = train_original(setting, "small_cnn", recipe, runtime)
    originals_cache().scores_path(info["cache_key"]).unlink()  # as an entry written before recording existed
    model, info = train_original(setting, "small_cnn", recipe, runtime)
    assert info["cache"] == "hit" and info["confidence"] == "absent"
    with pytest.raises(MissingProxyError, match="cache=false"):
        memorization_scores("confidence", setting, model, info, runtime)


def test_cache_false_keeps_the_scores_with_the_model_and_writes_nothing(synthetic, runtime, isolated_cache):
    setting = _setting(synthetic, runtime)
    original, info = train_original(setting, "small_cnn", RECIPE.replace(steps=3), runtime, use_cache=False)
    scores = memorization_scores("confidence", setting, original, info, runtime)
    assert int(torch.isfinite(scores).sum()) == 3 * 32  # the samples of 3 steps; the others were never seen
    memorization_scores("curvature", setting, original, info, runtime)
    assert not (isolated_cache / "originals").exists()
    with pytest.raises(MissingProxyError, match="not a copy"):
        memorization_scores("confidence", setting, copy.deepcopy(original), info, runtime)


def test_stale_stored_scores_are_never_read(synthetic, runtime, isolated_cache):
    """Scores stored for other weights than the cached model's (e.g. it was retrained since) are ignored."""
    setting = _setting(synthetic, runtime)
    recipe = RECIPE.replace(steps=5)
    _, info = train_original(setting, "small_cnn", recipe, runtime)
    cache, key = originals_cache(), info["cache_key"]
    sidecar = cache.paths(key)[1]
    sidecar.write_text(sidecar.read_text().replace(cache.weights_sha256(key), "0" * 64))
    with pytest.warns(UserWarning, match="other weights"):
        assert cache.load_scores(key, RECORDED) is None


# ------------------------------------------------------------------------------------------------- held-out
def test_symmetric_kl_equals_a_hand_computation():
    p_logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    q_logits = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    p = [math.e / (math.e + 1), 1 / (math.e + 1)]
    q = [1 / (1 + math.e ** 2), math.e ** 2 / (1 + math.e ** 2)]
    kl_pq = sum(a * math.log(a / b) for a, b in zip(p, q))
    kl_qp = sum(b * math.log(b / a) for a, b in zip(p, q))
    result = symmetric_kl(p_logits, q_logits)
    assert result[0].item() == pytest.approx((kl_pq + kl_qp) / 2, rel=1e-5)
    assert result[1].item() == 0.0


def test_symmetric_kl_clamps_probabilities():
    result = symmetric_kl(torch.tensor([[200.0, 0.0]]), torch.tensor([[0.0, 200.0]]))
    assert torch.isfinite(result).all()
    assert result.item() == pytest.approx(math.log(1e10), rel=1e-3)  # (1 - 1e-10) log(1 / 1e-10), both ways


def test_heldout_is_zero_for_a_model_compared_with_itself(noisy, runtime):
    setting, original, _ = noisy
    idx = setting.train_idx
    assert torch.all(model_divergence(original, original, setting.train_bank, idx, runtime) == 0)


def test_heldout_scores_the_training_split_and_leaves_the_original_alone(noisy, runtime):
    setting, original, info = noisy
    before = state(original)
    scores = memorization_scores("heldout", setting, original, info, runtime, epochs=2)
    assert same(before, state(original))
    train_scores = scores[setting.train_idx]
    assert torch.isfinite(train_scores).all() and (train_scores >= 0).all() and train_scores.max() > 0
    assert torch.isnan(scores[setting.val_idx]).all()


def test_heldout_is_computed_once_and_stored_beside_the_cached_original(synthetic, runtime, isolated_cache,
                                                                        monkeypatch):
    setting = _setting(synthetic, runtime)
    recipe = RECIPE.replace(steps=5)
    original, info = train_original(setting, "small_cnn", recipe, runtime)
    first = memorization_scores("heldout", setting, original, info, runtime, epochs=1)
    again, info2 = train_original(setting, "small_cnn", recipe, runtime)  # a new object: only the disk knows

    from corrective_unlearning.proxies import heldout
    monkeypatch.setattr(heldout, "heldout_scores", lambda *a, **k: pytest.fail("recomputed"))
    second = memorization_scores("heldout", setting, again, info2, runtime, epochs=1)
    assert torch.equal(first.isnan(), second.isnan()) and torch.equal(first[~first.isnan()], second[~second.isnan()])


def test_heldout_refuses_a_setting_without_validation_data(synthetic, runtime):
    setting = _setting(synthetic, runtime, val_size=0)
    original, info = train_original(setting, "small_cnn", RECIPE.replace(steps=2), runtime, use_cache=False)
    with pytest.raises(ValueError, match="validation split"):
        memorization_scores("heldout", setting, original, info, runtime)


# ------------------------------------------------------------------------------------------------ curvature
def _slow_curvature(model, x, y, h):
    """One example at a time, written out from the formula."""
    x = x.detach().clone().requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
    z = h * torch.sign(g) / torch.sign(g).norm()
    x2 = (x.detach() + z).requires_grad_(True)
    g2 = torch.autograd.grad(F.cross_entropy(model(x2), y), x2)[0]
    return float(((g2 - g) ** 2).sum())


def test_curvature_equals_a_slow_per_example_computation(noisy, runtime):
    setting, original, info = noisy
    scores = memorization_scores("curvature", setting, original, info, runtime)
    assert torch.isnan(scores[setting.val_idx]).all() and torch.isfinite(scores[setting.train_idx]).all()
    original.eval()
    for i in setting.train_idx[:6].tolist():
        index = torch.tensor([i])
        x = setting.train_bank.batch(index, setting.manipulated.triggered[index])
        slow = _slow_curvature(original, x, setting.manipulated.labels[index], 0.01)
        assert scores[i].item() == pytest.approx(slow, rel=1e-3, abs=1e-9)


def test_curvature_stamps_the_trigger_where_the_sample_carries_one(synthetic, runtime):
    setting = _setting(synthetic, runtime, manipulation="poison", n=20)
    original, info = train_original(setting, "small_cnn", RECIPE.replace(steps=10), runtime, use_cache=False)
    scores = memorization_scores("curvature", setting, original, info, runtime)
    m = setting.manipulated
    original.eval()
    i = m.manipulated[:1]
    stamped = input_curvature(original, setting.train_bank.batch(i, True), m.labels[i])
    unstamped = input_curvature(original, setting.train_bank.batch(i), m.labels[i])
    assert scores[i].item() == pytest.approx(stamped.item(), rel=1e-4)
    assert stamped.item() != pytest.approx(unstamped.item(), rel=1e-4)


# ------------------------------------------------------------------------------------------------ registry
def test_proxies_are_registered_and_check_their_parameters(noisy, runtime):
    setting, original, info = noisy
    assert {"confidence", "heldout", "curvature"} <= set(PROXIES.names())
    with pytest.raises(ValueError, match="no parameter"):
        memorization_scores("curvature", setting, original, info, runtime, step=0.1)
    with pytest.raises(KeyError, match="unknown proxy"):
        memorization_scores("nonsense", setting, original, info, runtime)


# --------------------------------------------------------------------------------------------- entanglement
def _numpy_es(retain: np.ndarray, forget: np.ndarray) -> float:
    mu_r, mu_f = retain.mean(axis=0), forget.mean(axis=0)
    mu = (mu_r + mu_f) / 2
    within = np.mean(np.sum((retain - mu_r) ** 2, axis=1)) + np.mean(np.sum((forget - mu_f) ** 2, axis=1))
    between = 0.5 * (np.sum((mu_r - mu) ** 2) + np.sum((mu_f - mu) ** 2))
    return float(within / between)


def test_entanglement_score_equals_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    retain = rng.normal(size=(50, 8)).astype(np.float32)
    forget = (rng.normal(size=(13, 8)) + 0.7).astype(np.float32)
    expected = _numpy_es(retain.astype(np.float64), forget.astype(np.float64))
    assert entanglement_score(torch.from_numpy(retain), torch.from_numpy(forget)) == pytest.approx(expected,
                                                                                                   rel=1e-9)
    far = entanglement_score(torch.from_numpy(retain), torch.from_numpy(forget + 10))
    assert far < expected  # better separated: less entangled


def test_entanglement_score_refuses_empty_sets():
    with pytest.raises(ValueError, match="non-empty"):
        entanglement_score(torch.zeros(0, 3), torch.ones(2, 3))


def test_penultimate_embeddings_are_the_classifier_input(noisy, runtime):
    setting, original, _ = noisy
    idx = setting.train_idx[:50]
    embeddings = penultimate_embeddings(original, setting.train_bank, idx, runtime, batch_size=16)
    classifier = original[-1]
    assert embeddings.shape == (50, classifier.in_features)
    expected = logits(original, setting.train_bank, idx, runtime)
    assert torch.allclose(F.linear(embeddings, classifier.weight.detach().cpu(), classifier.bias), expected,
                          atol=1e-5)


def test_entanglement_of_two_index_sets(noisy, runtime):
    setting, original, _ = noisy
    forget = setting.manipulated.manipulated
    retain = setting.train_idx[~torch.isin(setting.train_idx, forget)]
    es = entanglement(original, setting, retain, forget, runtime)
    expected = entanglement_score(penultimate_embeddings(original, setting.train_bank, retain, runtime),
                                  penultimate_embeddings(original, setting.train_bank, forget, runtime))
    assert es == pytest.approx(expected) and es > 0
