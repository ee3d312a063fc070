"""Finding the rest: each ranking against an independent slow path or hand-computed values, the combination, the
public function's contract, and the grid's ``expand`` option."""
from __future__ import annotations

import csv

import math

import numpy as np
import pytest
import torch
from torch import nn

from corrective_unlearning.models import create_model
from corrective_unlearning.suspects import (Features, RANKINGS, Suspects, average_ranks, features_of, rank_features,
                                            self_check, self_check_weight, suspects)
from corrective_unlearning.suspects.gradient import last_layer_gradients
from corrective_unlearning.training import ImageBank
from grid_helpers import small_grid, write_grid


def _features(embeddings, labels, logits=None, num_classes=None, bias=False) -> Features:
    embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
    labels = torch.as_tensor(labels, dtype=torch.long)
    num_classes = num_classes or int(labels.max()) + 1
    logits = torch.zeros(len(labels), num_classes) if logits is None else torch.as_tensor(logits, dtype=torch.float32)
    return Features(embeddings, logits, labels, num_classes, bias)


def _score(name, features, flagged, **params):
    spec = RANKINGS.get(name)
    return spec.score(features, torch.as_tensor(flagged), seed=0, notes={}, **spec.resolve(params)).double()


# ---- embedding -------------------------------------------------------------------------------------------------

def test_embedding_scores_are_mean_cosine_to_the_k_nearest_flagged_of_the_same_label():
    angle = lambda a: [math.cos(a), math.sin(a)]  # noqa: E731  (unit vectors: cosine = cos of the angle between)
    embeddings = np.array([angle(0.0), angle(0.2), [2 * v for v in angle(0.5)], angle(1.0), angle(0.1), angle(0.3)])
    labels = [0, 0, 0, 1, 0, 1]
    flagged = torch.tensor([True, True, True, False, False, False])
    features = _features(embeddings, labels)
    scores = _score("embedding", features, flagged, k=2)
    # candidate 4 (label 0, angle 0.1): nearest flagged label-0 at 0.0 and 0.2 -> cos(0.1) twice
    assert scores[4] == pytest.approx(math.cos(0.1))
    # candidates 3 and 5 have label 1, which no flagged sample carries
    assert scores[3] == scores[5] == -2.0
    # flagged 0 leaves itself out: its neighbours are 1 (0.2) and 2 (0.5; the norm does not matter)
    assert scores[0] == pytest.approx((math.cos(0.2) + math.cos(0.5)) / 2)
    # without the label condition, candidate 5 (angle 0.3) has neighbours 0.2 and 0.5
    loose = _score("embedding", features, flagged, k=2, same_label=False)
    assert loose[5] == pytest.approx((math.cos(0.1) + math.cos(0.2)) / 2)
    # chunking does not change anything
    assert torch.equal(_score("embedding", features, flagged, k=2, chunk=2), scores)


# ---- gradient --------------------------------------------------------------------------------------------------

class _BiasHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6), nn.Tanh())
        self.head = nn.Linear(6, 4, bias=True)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("model_name", ["small_cnn", "bias_head"])
def test_last_layer_gradient_closed_form_equals_autograd(model_name, runtime):
    torch.manual_seed(0)
    if model_name == "small_cnn":
        model, images = create_model("small_cnn", 4, in_channels=3, width=4), torch.randint(0, 256, (12, 3, 8, 8))
    else:
        model, images = _BiasHead(), torch.randint(0, 256, (12, 3, 8, 8))
    images = images.to(torch.uint8)
    labels = torch.randint(0, 4, (12,))
    bank = ImageBank(images, (0.5,) * 3, (0.25,) * 3, runtime.device, channels_last=False)
    indices = torch.arange(12)
    features = features_of(model, bank, labels, indices, runtime)
    closed = last_layer_gradients(features)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    model.eval()
    for i in range(12):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(bank.batch(indices[i : i + 1])), labels[i : i + 1])
        loss.backward()
        expected = head.weight.grad.flatten()
        if head.bias is not None:
            expected = torch.cat([expected, head.bias.grad])
        torch.testing.assert_close(closed[i].float(), expected, rtol=1e-4, atol=1e-6)
    # the scores are the cosines of these gradients with the (leave-one-out) sum of the flagged ones
    flagged = torch.zeros(12, dtype=torch.bool)
    flagged[[1, 4, 7]] = True
    scores = _score("gradient", features, flagged)
    for i in range(12):
        others = flagged.clone()
        others[i] = False
        direction = closed[others].sum(0)
        expected = torch.nn.functional.cosine_similarity(closed[i], direction, dim=0)
        assert float(scores[i]) == pytest.approx(float(expected), abs=1e-9)


# ---- label issues ----------------------------------------------------------------------------------------------

def _blobs(n_per_class=60, classes=3, flips=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 8)) * 6
    labels = np.repeat(np.arange(classes), n_per_class)
    embeddings = centres[labels] + rng.normal(size=(len(labels), 8))
    flipped = rng.choice(len(labels), flips, replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + rng.integers(1, classes, flips)) % classes
    return embeddings, given, flipped


def test_label_issues_find_planted_flips_on_separable_data():
    pytest.importorskip("cleanlab")
    embeddings, given, flipped = _blobs()
    features = _features(embeddings, given)
    flagged = torch.zeros(len(given), dtype=torch.bool)
    flagged[flipped[:2]] = True  # two of the twelve flips were found
    result = rank_features(features, torch.arange(len(given)), flagged, ranking="label_issues", k=10)
    assert set(result.indices.tolist()) == set(flipped[2:].tolist())  # the other ten are the top ten
    assert result.self_check["label_issues"] > 0.95
    assert result.notes["label_issues_found"] >= 8
    again = rank_features(features, torch.arange(len(given)), flagged, ranking="label_issues", k=10)
    assert torch.equal(result.indices, again.indices) and torch.equal(result.scores, again.scores)


def test_missing_cleanlab_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name.startswith("cleanlab"):
            raise ImportError("no cleanlab", name="cleanlab")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    embeddings, given, flipped = _blobs()
    flagged = torch.zeros(len(given), dtype=torch.bool)
    flagged[flipped[:2]] = True
    with pytest.raises(ImportError, match=r"corrective-unlearning\[suspects\]"):
        rank_features(_features(embeddings, given), torch.arange(len(given)), flagged, ranking="label_issues")
    # the rankings that need no optional package still work
    rank_features(_features(embeddings, given), torch.arange(len(given)), flagged, ranking="embedding")


# ---- combination and self-check --------------------------------------------------------------------------------

def test_average_ranks_and_self_check_match_independent_computations():
    x = np.array([3.0, 1.0, 3.0, 2.0, 5.0])
    assert average_ranks(x).tolist() == [3.5, 1.0, 3.5, 2.0, 5.0]
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=200), 1)  # ties included
    flagged = rng.random(200) < 0.2
    pairs = [(a > b) + 0.5 * (a == b) for a in scores[flagged] for b in scores[~flagged]]
    assert self_check(scores, flagged) == pytest.approx(np.mean(pairs))


def test_self_check_weight_is_the_odds_beyond_chance():
    assert self_check_weight(0.75) == pytest.approx(1.0) and self_check_weight(0.9) == pytest.approx(4.0)
    assert self_check_weight(0.5) == self_check_weight(0.3) == self_check_weight(float("nan")) == 0.0
    assert self_check_weight(1.0) == pytest.approx(500.0)  # 1 - auc floored at 1e-3


def test_combined_weights_rankings_by_self_check_and_equal_is_the_rank_average():
    embeddings, given, flipped = _blobs()
    features = _features(embeddings, given, logits=torch.randn(len(given), 3))
    rows = torch.arange(len(given))
    flagged = torch.zeros(len(given), dtype=torch.bool)
    flagged[flipped[:4]] = True
    params = {"combined": {"rankings": ["embedding", "gradient"], "weights": "equal"}}
    equal = rank_features(features, rows, flagged, params=params)
    assert equal.weights == {"embedding": 0.5, "gradient": 0.5} and equal.ranking == "combined"
    candidates = ~flagged.numpy()
    independent = sum(0.5 * average_ranks(_score(name, features, flagged).numpy()[candidates]) / candidates.sum()
                      for name in ("embedding", "gradient"))  # summed as the implementation sums: ties stay ties
    order = np.lexsort((rows.numpy()[candidates], -independent))
    assert equal.indices.tolist() == rows.numpy()[candidates][order].tolist()
    np.testing.assert_allclose(equal.scores.numpy(), independent[order])
    weighted = rank_features(features, rows, flagged, params={"combined": {"rankings": ["embedding", "gradient"]}})
    expected = {n: max(weighted.self_check[n] - 0.5, 0) / (1 - weighted.self_check[n])
                for n in ("embedding", "gradient")}
    total = sum(expected.values())
    assert weighted.weights == pytest.approx({n: w / total for n, w in expected.items()})
    assert set(weighted.per_ranking) == {"embedding", "gradient"}
    assert all(len(s) == len(weighted.indices) for s in weighted.per_ranking.values())


# ---- the public function ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    images = torch.randint(0, 120, (200, 1, 12, 12), dtype=torch.uint8)
    labels = torch.randint(0, 4, (200,))
    images[:20, :, -3:, -3:] = 255  # a "trigger" on the first twenty, labelled 0
    labels[:20] = 0
    model = create_model("small_cnn", 4, in_channels=1, width=4)
    return model, images, labels


def test_suspects_excludes_flagged_is_deterministic_and_prefix_consistent(small):
    model, images, labels = small
    flagged = [0, 1, 2, 3]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = suspects(model, (images, labels), flagged, device="cpu")
    assert isinstance(full, Suspects) and full.candidates == 196 and len(full) == 196
    assert not set(full.indices.tolist()) & set(flagged)
    assert sorted(full.indices.tolist()) == list(range(4, 200))
    assert set(full.per_ranking) == {"embedding", "gradient", "label_issues", "spectral_flagged"}
    assert set(full.self_check) == set(full.weights) == {"embedding", "gradient", "label_issues", "spectral_flagged"}
    assert (full.scores[:-1] >= full.scores[1:]).all()
    top = suspects(model, (images, labels), torch.isin(torch.arange(200), torch.tensor(flagged)), k=10, device="cpu")
    assert torch.equal(top.indices, full.indices[:10]) and torch.equal(top.scores, full.scores[:10])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the model is untouched
    for name in ("embedding", "gradient"):
        one = suspects(model, (images, labels), flagged, ranking=name, k=7, device="cpu")
        assert one.ranking == name and list(one.per_ranking) == [name] and len(one) == 7
        torch.testing.assert_close(one.scores, one.per_ranking[name])
    restricted = suspects(model, (images, labels), flagged, ranking="embedding", candidates=range(0, 50), device="cpu")
    assert sorted(restricted.indices.tolist()) == list(range(4, 50))


def test_suspects_precision_recall():
    s = Suspects(indices=torch.tensor([5, 6, 7, 8]), scores=torch.ones(4), ranking="embedding")
    assert s.precision_recall(torch.tensor([1, 2, 5, 7, 9]), flagged=torch.tensor([1, 2])) == {
        "k": 4, "found": 2, "undiscovered": 3, "precision": 0.5, "recall": 2 / 3}


def test_suspects_errors_say_what_was_expected(small):
    model, images, labels = small
    with pytest.raises(ValueError, match="unknown ranking"):
        suspects(model, (images, labels), [0], ranking="nearest", device="cpu")
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        suspects(model, (images, labels), [0], k=0, device="cpu")
    with pytest.raises(ValueError, match="flagged: the set is empty"):
        suspects(model, (images, labels), [], device="cpu")
    with pytest.raises(ValueError, match="flagged: expected integer indices"):
        suspects(model, (images, labels), [0.5], device="cpu")
    with pytest.raises(ValueError, match=r"candidates: expected indices in \[0, 199\]"):
        suspects(model, (images, labels), [0], candidates=[500], device="cpu")
    with pytest.raises(ValueError, match="no unflagged candidate"):
        suspects(model, (images, labels), [0, 1], candidates=[0, 1], device="cpu")
    with pytest.raises(ValueError, match="200 images but 199 labels"):
        suspects(model, (images, labels[:-1]), [0], device="cpu")
    with pytest.raises(ValueError, match="integer class indices"):
        suspects(model, (images, labels.float()), [0], device="cpu")
    with pytest.raises(ValueError, match="no parameter"):
        suspects(model, (images, labels), [0], ranking="embedding", params={"embedding": {"kk": 3}}, device="cpu")
    with pytest.raises(ValueError, match="unknown ranking"):
        suspects(model, (images, labels), [0], params={"knn": {}}, device="cpu")
    with pytest.raises(ValueError, match="no nn.Linear"):
        suspects(nn.Sequential(nn.Flatten()), (images, labels), [0], ranking="embedding", device="cpu")


def test_suspects_find_a_planted_trigger(small):
    """An easy case end to end: a model that learned a trigger -> label 0 shortcut; the embedding ranking finds the
    unflagged triggered samples first."""
    model, images, labels = small
    from corrective_unlearning.training import Recipe, train
    from corrective_unlearning.runtime import Runtime

    runtime = Runtime(device=torch.device("cpu"), progress=False, channels_last=False)
    bank = ImageBank(images, (0.5,), (0.25,), runtime.device, channels_last=False)
    torch.manual_seed(0)
    trained = create_model("small_cnn", 4, in_channels=1, width=4)
    train(trained, bank, labels, torch.arange(200), Recipe(steps=150, batch_size=50, crop_padding=0, flip=False,
                                                           lr=0.05), seed=0, runtime=runtime)
    found = suspects(trained, (images, labels), [0, 1, 2, 3], ranking="embedding", k=16, mean=(0.5,), std=(0.25,),
                     device="cpu")
    assert found.precision_recall(torch.arange(20), torch.arange(4))["precision"] >= 0.85
    # the probe on this embedding agrees with the poisoned labels: its self-check says so and combined drops it
    combined = suspects(trained, (images, labels), [0, 1, 2, 3], k=16, mean=(0.5,), std=(0.25,), device="cpu")
    assert combined.self_check["label_issues"] < 0.5 and combined.weights["label_issues"] == 0
    assert combined.precision_recall(torch.arange(20), torch.arange(4))["precision"] >= 0.6


# ---- the grid's expand option ----------------------------------------------------------------------------------

GRID = small_grid({"ssd": {"grid": {"alpha": [1, 10], "lambda_ratio": [1]}}})


def test_expand_cells_keep_the_ids_of_cells_without_expansion(tmp_path):
    from corrective_unlearning.config import ConfigError
    from corrective_unlearning.runner import expand_cells, load_grid_config

    path = write_grid(tmp_path, GRID)
    plain = expand_cells(load_grid_config(str(path), []))
    expanded = expand_cells(load_grid_config(str(path), ["expand=[0, 30]", "expand_ranking=embedding"]))
    assert {c.id for c in plain} < {c.id for c in expanded}
    extra = [c for c in expanded if c.expand]
    assert len(extra) == 2 and all(c.id.endswith(c.id[-8:]) and "-expand30-embedding-ssd-" in c.id for c in extra)
    assert len({c.id for c in expanded}) == len(expanded)
    for bad in (["expand=[-1]"], ["expand=[10, 10]"], ["expand=[1.5]"], ["expand=[10]", "expand_ranking=knn"]):
        with pytest.raises(ConfigError, match="expand"):
            load_grid_config(str(path), bad)


def test_grid_expand_grows_the_deletion_set_and_records_precision_and_recall(tmp_path):
    from corrective_unlearning.runner import load_grid_config, run_grid
    from corrective_unlearning.selection import group_key

    path = write_grid(tmp_path, GRID)
    config = load_grid_config(str(path), ["expand=[0, 30]", "expand_ranking=embedding"])
    records = run_grid(config, tmp_path / "out", progress=False)
    assert len(records) == 5 and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    plain = [r for r in records if r["method"] == "ssd" and not r["expand"]]
    grown = [r for r in records if r["expand"] == 30]
    assert [r["forget_size"] for r in plain] == [20, 20] and [r["forget_size"] for r in grown] == [50, 50]
    assert all("suspects" not in r for r in plain)
    block = grown[0]["suspects"]
    assert block["k"] == 30 and block["ranking"] == "embedding" and block["undiscovered"] == 20
    assert block["precision"] == pytest.approx(block["found"] / 30)
    assert block["recall"] == pytest.approx(block["found"] / 20)
    assert block["expanded_discovery"] == pytest.approx((20 + block["found"]) / 40)
    assert grown[0]["suspects"] == grown[1]["suspects"]  # one ranking for the rate
    # the ranking's cost: paid by the first cell of the deletion set, reused by the second
    paid, reused = grown[0]["timings"], grown[1]["timings"]
    assert paid["shared_paid"]["suspects/embedding"] == pytest.approx(block["seconds"])
    assert paid["method_seconds"] >= block["seconds"] and "suspects/embedding" in reused["shared_reused"]
    # selection keeps expanded and plain cells apart
    assert group_key(plain[0]) != group_key(grown[0]) and group_key(grown[0]) == group_key(grown[1])
    assert run_grid(config, tmp_path / "out", progress=False) == []  # resumable
    # the report gives the expanded cells their own line: the plain ssd row holds only the plain cell
    from corrective_unlearning.report.build import build_report

    build_report(tmp_path / "out")
    rows = list(csv.DictReader(open(tmp_path / "out" / "report" / "cells.csv")))
    assert sorted({r["method"] for r in rows}) == ["original", "ssd", "ssd +30 suspects"]
    plain_rows = [r for r in rows if r["method"] == "ssd"]
    assert len(plain_rows) == 2 and {r["cell"] for r in plain_rows} == {r["cell"] for r in plain}


def test_expansions_rank_once_per_original_and_deletion_set(monkeypatch, poisoned_setting, runtime):
    from corrective_unlearning.runner import deletion_set
    from corrective_unlearning.suspects import expansion

    calls = []

    def fake(original, bank, labels, forget, candidates, runtime, **kwargs):
        calls.append(len(candidates))
        return Suspects(indices=candidates.flip(0), scores=torch.zeros(len(candidates)), ranking=kwargs["ranking"],
                        candidates=len(candidates), seconds=1.5)

    monkeypatch.setattr(expansion, "rank_suspects", fake)
    setting = poisoned_setting
    forget = deletion_set(setting, 0.5)
    first = expansion.Expansions(setting, None, runtime, key="original-a")
    grown, block = first.grow(forget, 0.5, 10, "embedding")
    assert len(grown) == 30 and set(forget.tolist()) < set(grown.tolist()) and block["seconds"] == 1.5
    assert calls == [len(setting.train_idx) - 20]
    expansion.Expansions(setting, None, runtime, key="original-a").grow(forget, 0.5, 5, "embedding")
    assert len(calls) == 1  # the same original and deletion set: reused
    expansion.Expansions(setting, None, runtime, key="original-b").grow(forget, 0.5, 5, "embedding")
    expansion.Expansions(setting, None, runtime).grow(forget, 0.5, 5, "embedding")
    assert len(calls) == 3  # another original, or no key: computed
    timings = [{"method_seconds": 2.0}, {"method_seconds": 3.0}]
    for t in timings:
        first.charge(0.5, 10, "embedding", t)
    assert timings[0]["method_seconds"] == 3.5 and timings[0]["shared_paid"] == {"suspects/embedding": 1.5}
    assert timings[1]["method_seconds"] == 3.0 and timings[1]["shared_reused"] == ["suspects/embedding"]
