"""RUM's six base unlearners (SPEC section 5) do what they claim, on the synthetic source. Each claim is checked
against a value computed by hand or along an independent path."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from corrective_unlearning.evaluation import predict
from corrective_unlearning.runner import load_grid_config, run_grid
from corrective_unlearning.methods import METHODS, expand_grid
from corrective_unlearning.methods.npo import npo_loss
from corrective_unlearning.methods.random_label import wrong_labels
from corrective_unlearning.training import DivergenceError
from corrective_unlearning.training.trainer import cross_entropy
from grid_helpers import small_grid, write_grid
from helpers import deletion_task, same, state

NAMES = ["neggrad", "neggrad+", "random-label", "salun", "l1-sparse", "npo"]
GRID = small_grid({name: {"params": {"steps": 2}} for name in NAMES})  # each method's own (paper) grid


@pytest.fixture(scope="module")
def task(poisoned, runtime):
    """Poison, 40 manipulated, 20 of them in S_f, 4 classes, batch 32."""
    return deletion_task(poisoned, 0.5, runtime)


def _unaugmented(task):
    """The same task without crops, so that a test can render exactly the trainer's inputs."""
    return dataclasses.replace(task, recipe=task.recipe.replace(crop_padding=0, flip=False), cache={})


def _forget_accuracy(task, model):
    """Accuracy on S_f against its given labels, through the evaluation code (not the method's own helper)."""
    forget = task.forget_idx
    predicted = predict(model, task.bank, forget, task.runtime, stamp=task._triggered[forget.to(task.device)].cpu())
    return float((predicted == task.labels[forget.to(task.device)].cpu()).double().mean())


@pytest.mark.parametrize("name", NAMES)
def test_unlearners_never_modify_the_original(task, name):
    before, labels = state(task.original), task.labels.clone()
    unlearned = METHODS.get(name)(task, {"steps": 4}).model
    assert unlearned is not task.original
    assert same(before, state(task.original))
    assert torch.equal(labels, task.labels)
    assert not same(before, state(unlearned))


def test_neggrad_first_step_is_one_sgd_step_of_ascent_on_the_forget_loss(task):
    plain = _unaugmented(task)
    assert len(plain.forget_idx) <= plain.recipe.batch_size  # one batch is the whole of S_f
    lr, decay = 0.05, plain.recipe.weight_decay
    model = METHODS.get("neggrad")(plain, {"steps": 1, "lr": lr}).model

    # By hand: the batch-mean CE over S_f in train mode, its gradient, and SGD's first step (momentum buffer =
    # the first update): theta - lr * (-grad + decay * theta).
    reference = plain.copy_original().train()
    forget = plain.forget_idx.to(plain.device)
    loss = F.cross_entropy(reference(plain.inputs(forget)), plain.labels[forget])
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    for p0, grad, p1 in zip(plain.original.parameters(), grads, model.parameters()):
        ascent = p0 - lr * (-grad + decay * p0)
        descent = p0 - lr * (grad + decay * p0)
        assert torch.allclose(p1, ascent, rtol=1e-4, atol=1e-6)
        if grad.abs().max() > 1e-3:
            assert not torch.allclose(p1, descent, rtol=1e-4, atol=1e-6)


def test_neggrad_divergence_raises(task):
    with pytest.raises(DivergenceError):
        METHODS.get("neggrad")(task, {"steps": 10, "lr": 1e36})


def test_neggrad_plus_with_beta_one_is_fine_tuning_on_the_retain_set(task):
    lr, steps = 0.01, 6
    unlearned = METHODS.get("neggrad+")(task, {"beta": 1.0, "lr": lr, "steps": steps}).model
    fine_tuned = task.copy_original()
    task.fit(fine_tuned, task.retain_idx, task.recipe.replace(schedule="constant", lr=lr, steps=steps))
    assert same(state(unlearned), state(fine_tuned))  # bit-identical, batch-norm statistics included

    # and a beta below 1 does ascend on S_f: the forget loss ends above fine-tuning's
    pushed = METHODS.get("neggrad+")(task, {"beta": 0.5, "lr": lr, "steps": steps}).model
    forget = task.forget_idx.to(task.device)

    def forget_loss(model):
        with torch.no_grad():
            return float(F.cross_entropy(model.eval()(task.inputs(forget)), task.labels[forget]))

    assert forget_loss(pushed) > forget_loss(fine_tuned)


def test_wrong_labels_are_uniform_over_the_other_classes():
    generator = torch.Generator().manual_seed(0)
    classes = 7  # not 10: the class count is an argument
    labels = torch.arange(70000) % classes
    drawn = wrong_labels(labels, classes, generator)
    assert not (drawn == labels).any()
    assert drawn.min() >= 0 and drawn.max() < classes
    shift = (drawn - labels) % classes
    counts = torch.bincount(shift, minlength=classes)
    assert counts[0] == 0 and (counts[1:] - 70000 / 6).abs().max() < 400  # ~11667 each, sd ~100


def test_random_label_never_assigns_the_given_label(task, monkeypatch):
    """Spy on the labels the trainer actually feeds: S_f never gets its given label, the retain set always does,
    S_f's labels are redrawn each epoch and stay fixed within one, and task.labels is never touched."""
    given = task.labels.clone()
    fit, seen = task.fit, []

    def spy(model, indices, recipe=None, *, loss_fn=cross_entropy, **kwargs):
        def recording(forward, batch):
            seen.append((batch.indices.cpu(), batch.labels.cpu()))
            return loss_fn(forward, batch)

        return fit(model, indices, recipe, loss_fn=recording, **kwargs)

    monkeypatch.setattr(task, "fit", spy)
    epoch_steps = math.ceil((len(task.forget_idx) + len(task.retain_idx)) / task.recipe.batch_size)
    METHODS.get("random-label")(task, {"steps": 3 * epoch_steps})
    assert len(seen) == 3 * epoch_steps and torch.equal(given, task.labels)

    forget = set(task.forget_idx.tolist())
    per_epoch = [{} for _ in range(3)]
    for step, (batch, y) in enumerate(seen):
        assert y.max() < task.num_classes
        for i, label in zip(batch.tolist(), y.tolist()):
            if i in forget:
                assert label != int(given[i])
                assert per_epoch[step // epoch_steps].setdefault(i, label) == label  # one label per epoch
            else:
                assert label == int(given[i])
    assert set().union(*per_epoch) == forget
    both = set(per_epoch[0]) & set(per_epoch[1])  # full batches run across passes: nearly all of S_f
    assert len(both) >= len(forget) // 2 and any(per_epoch[0][i] != per_epoch[1][i] for i in both)  # redrawn
    assert {label for epoch in per_epoch for label in epoch.values()} == set(range(task.num_classes)) - {0}


def test_salun_masked_weights_are_bit_identical_and_the_mask_keeps_the_largest_gradients(task, monkeypatch):
    # The saliency by hand: |gradient of the summed CE over S_f|, eval mode, one batch; the mask is its top half.
    reference = task.copy_original().eval()
    forget = task.forget_idx.to(task.device)
    loss = F.cross_entropy(reference(task.inputs(forget)), task.labels[forget], reduction="sum")
    saliency = torch.cat([g.abs().flatten() for g in torch.autograd.grad(loss, list(reference.parameters()))])
    cutoff = saliency.sort(descending=True).values[len(saliency) // 2 - 1]
    assert cutoff > 0
    low, high = saliency < cutoff * (1 - 1e-3), saliency > cutoff * (1 + 1e-3)  # clear of rounding at the cutoff

    def moved(model):
        return torch.cat([(p != q).flatten() for p, q in zip(task.original.parameters(), model.parameters())])

    # Spy after each optimiser step, *before* the method copies masked weights back: no gradient, no weight decay
    # and no momentum reached them, so they have not moved even then.
    fit, moved_low = task.fit, []

    def spy(model, indices, recipe=None, *, after_step, **kwargs):
        def check_then_hold(step):
            moved_low.append(int(moved(model)[low].sum()))
            after_step(step)

        return fit(model, indices, recipe, after_step=check_then_hold, **kwargs)

    monkeypatch.setattr(task, "fit", spy)
    result = METHODS.get("salun")(task, {"steps": 10, "lr": 0.1})
    model = result.model
    assert result.notes["kept_fraction"] == pytest.approx(0.5, abs=1e-4)
    assert moved_low == [0] * 10

    after = moved(model)
    assert not after[low].any()  # the less salient half is bit-identical (RUM's inverted mask moved these)
    assert after.sum() <= len(saliency) // 2
    assert after[high].float().mean() > 0.9  # the salient half did train


def test_l1_sparse_coefficient_decays_linearly_to_zero(task, monkeypatch):
    """Recover the coefficient from each step's loss along another path: (loss - CE) / ||theta||_1, with CE and
    the L1 norm recomputed by the spy."""
    fit, coefficients = task.fit, []

    def spy(model, indices, recipe=None, *, loss_fn=cross_entropy, **kwargs):
        def recording(forward, batch):
            loss = loss_fn(forward, batch)
            with torch.no_grad():
                l1 = sum(float(p.abs().double().sum()) for p in model.parameters())
                coefficients.append((float(loss) - float(F.cross_entropy(forward(batch.x), batch.labels))) / l1)
            return loss

        return fit(model, indices, recipe, loss_fn=recording, **kwargs)

    monkeypatch.setattr(task, "fit", spy)
    alpha, steps = 0.02, 8
    METHODS.get("l1-sparse")(task, {"alpha": alpha, "steps": steps})
    assert coefficients == pytest.approx([0.02, 0.0175, 0.015, 0.0125, 0.01, 0.0075, 0.005, 0.0025], rel=1e-3)


def test_npo_loss_matches_a_hand_computed_value():
    logits = [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]]
    ref_logits = [[1.0, 1.0, 1.0], [0.5, -0.5, 2.0]]
    labels, beta = [0, 2], 0.5

    def log_prob(row, y):
        return row[y] - math.log(sum(math.exp(v) for v in row))

    def log_sigmoid(v):
        return -math.log(1 + math.exp(-v))

    terms = [log_sigmoid(-beta * (log_prob(z, y) - log_prob(r, y))) for z, r, y in zip(logits, ref_logits, labels)]
    expected = -(2 / beta) * sum(terms) / len(terms)
    got = npo_loss(torch.tensor(logits), torch.tensor(ref_logits), torch.tensor(labels), beta)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # equal to the reference: (2 / beta) log 2
    same = npo_loss(torch.tensor(logits), torch.tensor(logits), torch.tensor(labels), beta)
    assert float(same) == pytest.approx(4 * math.log(2), rel=1e-6)


def test_npo_stops_at_the_first_epoch_with_forget_accuracy_at_most_stop_acc(task):
    assert _forget_accuracy(task, task.original) > 0.2
    result = METHODS.get("npo")(task, {})
    model, notes = result.model, result.notes
    assert notes["stopped"] and notes["epochs"] >= 1
    assert notes["forget_acc"] == pytest.approx(_forget_accuracy(task, model)) and notes["forget_acc"] <= 0.2

    if notes["epochs"] > 1:  # one epoch fewer was not enough: it did not stop early
        fewer = METHODS.get("npo")(task, {"max_epochs": notes["epochs"] - 1})
        assert fewer.notes["epochs"] == notes["epochs"] - 1 and not fewer.notes["stopped"]
        assert _forget_accuracy(task, fewer.model) > 0.2

    # a rate too small to get there: the loop still ends, at max_epochs
    slow = METHODS.get("npo")(task, {"lr": 1e-7, "max_epochs": 3}).notes
    assert slow["epochs"] == 3 and not slow["stopped"] and slow["forget_acc"] > 0.2

    # stop_acc is configurable; an original already at or below it is returned unchanged
    unchanged = METHODS.get("npo")(task, {"stop_acc": 1.0})
    assert unchanged.notes["epochs"] == 0 and same(state(task.original), state(unchanged.model))


def test_the_six_unlearners_run_their_paper_grids(tmp_path):
    path = write_grid(tmp_path, GRID)
    records = run_grid(load_grid_config(str(path), []), tmp_path / "out", progress=False)
    by_method = {name: [r for r in records if r["method"] == name] for name in NAMES}
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records if r["status"] != "ok"]
    assert all(len(runs) == len(expand_grid(METHODS.get(name).grid)) for name, runs in by_method.items())
    salun = by_method["salun"]  # the saliency is paid once per deletion set and reused by the grid
    assert list(salun[0]["timings"]["shared_paid"]) == ["salun-saliency"]
    assert all(r["timings"]["shared_reused"] == ["salun-saliency"] for r in salun[1:])
