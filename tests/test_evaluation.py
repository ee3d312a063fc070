"""SPEC section 8 metrics: batched, index-keyed predictions must equal a slow one-sample-at-a-time reference."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from corrective_unlearning.evaluation import accuracy, collect_predictions, compute_metrics, logits, predict
from corrective_unlearning.experiment import build_setting, evaluate, new_model
from corrective_unlearning.records import write_json_atomic
from corrective_unlearning.training import Recipe, train


def _trained(setting, runtime):
    model = new_model(setting, "small_cnn", 0, runtime)
    train(model, setting.train_bank, setting.manipulated.labels, setting.train_idx,
          Recipe(steps=15, batch_size=32, crop_padding=1, flip=True), seed=0, runtime=runtime,
          triggered=setting.manipulated.triggered)
    return model


@pytest.fixture(scope="module")
def poison_case(synthetic, runtime):
    setting = build_setting(synthetic, "poison", 30, seed=0, runtime=runtime, val_size=24, target=1)
    return setting, _trained(setting, runtime)


@pytest.fixture(scope="module")
def interclass_case(synthetic, runtime):
    setting = build_setting(synthetic, "interclass", 40, seed=0, runtime=runtime, val_size=24, pair=(2, 3))
    return setting, _trained(setting, runtime)


# ------------------------------------------------------------------------------------- the slow reference
@torch.no_grad()
def _slow_predict(model, images, mean, std, stamped, trigger):
    """One image at a time, normalised by hand, the trigger written by hand (no ImageBank, no batching)."""
    model.eval()
    mean = torch.tensor(mean).view(-1, 1, 1)
    std = torch.tensor(std).view(-1, 1, 1)
    out = []
    for i in range(len(images)):
        x = images[i].float() / 255
        if stamped[i]:
            s = trigger.size
            assert trigger.position == "bottom-right"
            x[:, -s:, -s:] = trigger.value / 255
        x = (x - mean) / std
        out.append(int(model(x[None]).argmax(1)))
    return torch.tensor(out)


def _pct(hits) -> float:
    hits = list(hits)
    return 100.0 * sum(hits) / len(hits) if hits else float("nan")


def _reference_metrics(setting, model, forget=None):
    d, m = setting.dataset, setting.manipulated
    y = d.test_labels.tolist()
    n_test = len(y)
    clean = _slow_predict(model, d.test_images, d.mean, d.std, [False] * n_test, m.trigger).tolist()
    ref = {"test_acc": _pct(p == t for p, t in zip(clean, y))}
    for c, name in enumerate(d.classes):
        ref[f"class_acc/{name}"] = _pct(clean[i] == c for i in range(n_test) if y[i] == c)
    if m.name == "poison":
        target = m.params["target"]
        trig = _slow_predict(model, d.test_images, d.mean, d.std, [True] * n_test, m.trigger).tolist()
        ref["affected_acc"] = _pct(p == t for p, t in zip(trig, y))
        ref["affected_nontarget_acc"] = _pct(trig[i] == y[i] for i in range(n_test) if y[i] != target)
        ref["attack_success"] = _pct(trig[i] == target for i in range(n_test) if y[i] != target)
        ref["utility_acc"] = ref["test_acc"]
        # the backdoor field's names: C-Acc, ASR, RA
        ref["c_acc"], ref["asr"], ref["ra"] = ref["test_acc"], ref["attack_success"], ref["affected_nontarget_acc"]
    else:
        a, b = m.params["pair"]
        ref["affected_acc"] = _pct(clean[i] == y[i] for i in range(n_test) if y[i] in (a, b))
        ref["utility_acc"] = _pct(clean[i] == y[i] for i in range(n_test) if y[i] not in (a, b))
    # training samples: S_m as the model saw them (with their trigger), and the validation split, clean labels
    s_m, val = m.manipulated.tolist(), setting.val_idx.tolist()
    train_imgs = d.train_images
    pred_sm = _slow_predict(model, train_imgs[s_m], d.mean, d.std, m.triggered[s_m].tolist(), m.trigger).tolist()
    pred_val = _slow_predict(model, train_imgs[val], d.mean, d.std, [False] * len(val), m.trigger).tolist()
    by_index = dict(zip(s_m, pred_sm)) | dict(zip(val, pred_val))
    clean_labels, given = m.clean_labels.tolist(), m.labels.tolist()
    ref["manipulated_acc"] = _pct(by_index[i] == clean_labels[i] for i in s_m)
    ref["val_acc"] = _pct(by_index[i] == clean_labels[i] for i in val)
    if forget is not None:
        f = forget.tolist()
        ref["forget_acc"] = _pct(by_index[i] == clean_labels[i] for i in f)
        ref["undiscovered_acc"] = _pct(by_index[i] == clean_labels[i] for i in s_m if i not in f)
        ref["deletion_change"] = _pct(by_index[i] != given[i] for i in f)
    return ref


def _assert_same(metrics, reference):
    assert set(metrics) == set(reference)
    for key, value in reference.items():
        if math.isnan(value):
            assert math.isnan(metrics[key]), key
        else:
            # float32 means: a one-sample disagreement would be >= 100/384 points, far above this tolerance
            assert metrics[key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.parametrize("case", ["poison_case", "interclass_case"])
def test_metrics_equal_the_slow_reference(case, request, runtime):
    setting, model = request.getfixturevalue(case)
    metrics = compute_metrics(setting, collect_predictions(model, setting, runtime))
    reference = _reference_metrics(setting, model)
    _assert_same(metrics, reference)
    # the model learnt something, so the comparison is not between two constant predictors
    assert metrics["test_acc"] > 50
    assert evaluate(model, setting, runtime) == metrics


@pytest.mark.parametrize("case", ["poison_case", "interclass_case"])
def test_deletion_metrics_equal_the_slow_reference(case, request, runtime):
    setting, model = request.getfixturevalue(case)
    s_m = setting.manipulated.manipulated
    forget = s_m[torch.randperm(len(s_m), generator=torch.Generator().manual_seed(0))[: len(s_m) // 3]]
    metrics = evaluate(model, setting, runtime, forget=forget)
    _assert_same(metrics, _reference_metrics(setting, model, forget))


def test_training_predictions_only_where_needed(poison_case, runtime):
    setting, model = poison_case
    predictions = collect_predictions(model, setting, runtime)
    wanted = torch.zeros(len(setting.manipulated.labels), dtype=torch.bool)
    wanted[setting.manipulated.manipulated] = True
    wanted[setting.val_idx] = True
    assert (predictions.train[~wanted] == -1).all()
    assert (predictions.train[wanted] >= 0).all()
    assert predictions.test_triggered is not None and len(predictions.test_clean) == len(setting.dataset.test_labels)


# ---------------------------------------------------------------------------------- metrics of a known model
class Constant(nn.Module):
    """Always predicts class ``c``."""

    def __init__(self, c: int, num_classes: int = 4):
        super().__init__()
        self.register_buffer("out", nn.functional.one_hot(torch.tensor(c), num_classes).float())

    def forward(self, x):
        return self.out.expand(len(x), -1)


def test_metrics_of_a_constant_model(synthetic, runtime):
    poison = build_setting(synthetic, "poison", 30, seed=0, runtime=runtime, val_size=24, target=0)
    s_m = poison.manipulated.manipulated
    m = evaluate(Constant(0), poison, runtime, forget=s_m[:10])
    assert m["test_acc"] == 25.0 and m["utility_acc"] == 25.0 and m["affected_acc"] == 25.0
    assert m["affected_nontarget_acc"] == 0.0 and m["attack_success"] == 100.0
    assert m["class_acc/class0"] == 100.0 and m["class_acc/class1"] == 0.0
    assert m["manipulated_acc"] == pytest.approx(100 * float((synthetic.train_labels[s_m] == 0).float().mean()))
    assert m["val_acc"] == 25.0  # the validation split is stratified
    assert m["deletion_change"] == 0.0  # every given label of S_m is the target, which is predicted

    ic = build_setting(synthetic, "interclass", 20, seed=0, runtime=runtime, pair=(0, 1))
    m = evaluate(Constant(1), ic, runtime, forget=ic.manipulated.manipulated)
    assert m["affected_acc"] == 50.0 and m["utility_acc"] == 0.0 and m["test_acc"] == 25.0
    assert m["manipulated_acc"] == 50.0  # half of S_m is clean class 1
    assert m["deletion_change"] == 50.0  # the other half was relabelled 1 and is predicted 1
    assert "attack_success" not in m


# ------------------------------------------------------------------------------------------------ alignment
def test_predict_is_aligned_with_the_index_order(poison_case, runtime):
    setting, model = poison_case
    bank = setting.train_bank
    n = len(setting.dataset.train_labels)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    flags = setting.manipulated.triggered
    model.train()  # predict must switch to eval and restore the mode
    straight = predict(model, bank, torch.arange(n), runtime, stamp=flags)
    shuffled = predict(model, bank, order, runtime, stamp=flags[order], batch_size=7)
    assert model.training
    model.eval()
    assert torch.equal(shuffled, straight[order])
    assert straight.dtype == torch.int64 and straight.device.type == "cpu"
    assert len(set(straight.tolist())) > 1, "a constant predictor would make this test vacuous"
    full = logits(model, bank, torch.arange(n), runtime)
    part = logits(model, bank, order[:50], runtime, batch_size=16)
    assert torch.allclose(part, full[order[:50]], atol=1e-5)
    assert logits(model, bank, torch.arange(0), runtime).shape[0] == 0


def test_stamp_flags_follow_the_indices(poison_case, runtime):
    """A per-index stamp mask is permuted together with the indices, not applied by position."""
    setting, model = poison_case
    bank = setting.test_bank
    idx = torch.arange(40)
    stamped = logits(model, bank, idx, runtime, stamp=True)
    clean = logits(model, bank, idx, runtime)
    mask = torch.arange(40) % 3 == 0
    mixed = logits(model, bank, idx.flip(0), runtime, stamp=mask.flip(0), batch_size=9).flip(0)
    expected = torch.where(mask[:, None], stamped, clean)
    assert torch.allclose(mixed, expected, atol=1e-5)
    assert not torch.allclose(stamped, clean)


# -------------------------------------------------------------------------------------------------- empties
def test_empty_views_are_nan(synthetic, runtime):
    assert math.isnan(accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)))
    assert accuracy(torch.tensor([1, 2]), torch.tensor([1, 3])) == 50.0
    setting = build_setting(synthetic, "poison", 12, seed=0, runtime=runtime, val_size=0)
    m = evaluate(Constant(2), setting, runtime, forget=torch.empty(0, dtype=torch.long))
    assert math.isnan(m["val_acc"]), "no validation split: NaN, not 0 or 100"
    assert math.isnan(m["forget_acc"]) and math.isnan(m["deletion_change"])
    assert not math.isnan(m["undiscovered_acc"])
    m = evaluate(Constant(2), setting, runtime, forget=setting.manipulated.manipulated)
    assert math.isnan(m["undiscovered_acc"])
    none = build_setting(synthetic, "interclass", 0, seed=0, runtime=runtime)
    assert math.isnan(evaluate(Constant(2), none, runtime)["manipulated_acc"])


def test_nan_is_written_as_null(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"val_acc": float("nan"), "t": torch.tensor([1, 2]), "ok": 1.5})
    assert json.loads(path.read_text()) == {"val_acc": None, "t": [1, 2], "ok": 1.5}
