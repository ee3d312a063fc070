"""Each paper-1 method does what it claims, on the synthetic source."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from corrective_unlearning.experiment import build_setting, train_original
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.methods import METHODS, Task, expand_grid, ssd
from corrective_unlearning.methods.common import kl_to_teacher
from corrective_unlearning.methods.ssd import dampen, importance_ratio, importances
from corrective_unlearning.models import blocks
from helpers import RECIPE, deletion_task, same, state


def _task(synthetic, runtime, rate=0.5, seed=0, original_seed=None, manipulation="poison"):
    setting = build_setting(synthetic, manipulation, 40, seed, runtime, val_size=16)
    if original_seed is not None:  # same data, a differently trained original
        setting = dataclasses.replace(setting, seed=original_seed)
    original, _ = train_original(setting, "small_cnn", RECIPE, runtime)
    setting = dataclasses.replace(setting, seed=seed)
    return make_task(setting, original, deletion_set(setting, rate), RECIPE, runtime), setting


@pytest.fixture(scope="module")
def task(poisoned, runtime):
    return deletion_task(poisoned, 0.5, runtime)


def test_task_carries_no_test_data_and_no_manipulation_identity(task):
    names = {f.name for f in dataclasses.fields(Task)}
    assert not any("test" in n for n in names)
    assert not any(n in names for n in ("manipulated", "clean_labels", "undiscovered"))
    # The undiscovered manipulated samples are ordinary retain samples.
    assert len(set(task.forget_idx.tolist()) & set(task.retain_idx.tolist())) == 0


@pytest.mark.parametrize("name", ["eu", "cf", "ssd", "badt", "scrub"])
def test_methods_never_modify_the_original(task, name):
    before = state(task.original)
    unlearned = METHODS.get(name)(task, {}).model
    assert unlearned is not task.original
    assert same(before, state(task.original))


def test_eu_does_not_depend_on_the_original_weights(synthetic, runtime):
    task_a, _ = _task(synthetic, runtime, original_seed=0)
    task_b, _ = _task(synthetic, runtime, original_seed=5)
    assert not same(state(task_a.original), state(task_b.original))
    eu_a, eu_b = METHODS.get("eu")(task_a, {}).model, METHODS.get("eu")(task_b, {}).model
    assert same(state(eu_a), state(eu_b))


def test_eu_last_k_keeps_the_early_blocks(task):
    model = METHODS.get("eu")(task, {"last_k": 2, "steps": 5}).model
    original_blocks, new_blocks = blocks(task.original), blocks(model)
    for old, new in zip(original_blocks[:-2], new_blocks[:-2]):
        assert all(torch.equal(p, q) for p, q in zip(old.parameters(), new.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(original_blocks[-1].parameters(), new_blocks[-1].parameters()))


def test_cf_starts_from_the_original(task):
    tiny_step = METHODS.get("cf")(task, {"steps": 1, "lr": 1e-6}).model
    for p, q in zip(task.original.parameters(), tiny_step.parameters()):
        assert torch.allclose(p, q, atol=1e-4)


def test_ssd_with_huge_alpha_changes_nothing(task):
    model = METHODS.get("ssd")(task, {"alpha": 1e30, "lambda": 1.0}).model
    assert same(state(task.original), state(model))


def test_ssd_dampens_exactly_the_selected_weights(task):
    hp = METHODS.get("ssd").resolve({"alpha": 1.0, "lambda": 0.5})
    model = METHODS.get("ssd")(task, hp).model
    forget_imp, data_imp = importances(task, hp)
    changed = 0
    for old, new, i_f, i_d in zip(task.original.parameters(), model.parameters(), forget_imp, data_imp):
        selected = i_f > 1.0 * i_d
        expected = torch.where(selected, old * torch.clamp(0.5 * i_d / i_f, max=1.0), old)
        assert torch.allclose(new, expected, rtol=1e-5, atol=1e-7)
        assert torch.equal(new[~selected], old[~selected])
        changed += int(selected.sum())
    assert changed > 0


def test_ssd_relative_alpha_is_absolute_alpha_in_units_of_the_importance_ratio(task):
    result = METHODS.get("ssd")(task, {"alpha": 2.0, "lambda_ratio": 0.5, "alpha_scale": "relative"})
    relative, notes = result.model, result.notes
    forget_imp, data_imp = importances(task, METHODS.get("ssd").resolve({}))
    ratio = importance_ratio(forget_imp, data_imp)
    assert notes["importance_ratio"] == pytest.approx(ratio) and 0 < ratio != 1
    absolute = METHODS.get("ssd")(task, {"alpha": 2.0 * ratio, "lambda": 1.0 * ratio})
    assert same(state(relative), state(absolute.model))
    assert notes["dampened_weights"] == absolute.notes["dampened_weights"] > 0


def test_ssd_relative_alpha_rejects_a_zero_importance_ratio(task, monkeypatch):
    zeros = [torch.zeros_like(p) for p in task.original.parameters()]
    monkeypatch.setattr(ssd, "importances", lambda task, hp: (zeros, [z + 1 for z in zeros]))
    with pytest.raises(ValueError, match="positive importance ratio .* got 0.0"):
        METHODS.get("ssd")(task, {"alpha_scale": "relative"})
    assert math.isnan(importance_ratio(zeros, zeros))  # no data importance at all: undefined


def test_ssd_notes_say_when_alpha_dampens_nothing(task):
    assert METHODS.get("ssd")(task, {"alpha": 1e30}).notes["dampened_weights"] == 0


def test_ssd_importances_are_shared_across_the_grid_and_their_cost_is_recorded(task):
    task.cache.clear()
    first = METHODS.get("ssd")(task, {"alpha": 1.0}).shared
    (paid,) = first.paid.items()
    assert paid[0].startswith("ssd-importances") and paid[1] > 0 and first.reused == []
    second = METHODS.get("ssd")(task, {"alpha": 10.0}).shared
    assert second.paid == {} and second.reused == [paid[0]]
    assert len([k for k in task.cache if k[0] == "ssd-importances"]) == 1


def test_dampen_counts_and_scales():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 3.0]]))
    changed = dampen(model, [torch.tensor([[4.0, 1.0]])], [torch.tensor([[1.0, 1.0]])], alpha=2.0, lam=1.0)
    assert changed == 1
    assert torch.allclose(model.weight, torch.tensor([[2.0 * 0.25, 3.0]]))


def test_bad_teacher_pushes_forget_outputs_toward_the_bad_teacher(task):
    bad = task.fresh_model(seed=task.seed + 1).eval()
    x = task.inputs(task.forget_idx)

    def divergence(model):
        model.eval()
        with torch.no_grad():
            return float(kl_to_teacher(model(x), bad(x)))

    for variant in ("original", "bench"):
        student = METHODS.get("badt")(task, {"variant": variant, "steps": 30, "lr": 0.01 if variant == "bench" else None}).model
        assert divergence(student) < divergence(task.original), variant


def test_scrub_moves_away_from_the_teacher_on_the_deletion_set(task):
    student = METHODS.get("scrub")(task, {"variant": "original", "lr": 0.01}).model
    with torch.no_grad():
        def gap(indices):
            x = task.inputs(indices)
            return float(kl_to_teacher(student(x), task.original.eval()(x)))
        assert gap(task.forget_idx) > gap(task.retain_idx)


def test_scrub_bench_starts_with_gradient_ascent_on_the_deletion_set(task):
    def forget_loss(model):
        with torch.no_grad():
            logits = model.eval()(task.inputs(task.forget_idx))
            return float(torch.nn.functional.cross_entropy(logits, task.labels[task.forget_idx]))

    # One step: the first pass of the bench loop is the ascent over S_f (it fits in one batch here).
    ascended = METHODS.get("scrub")(task, {"variant": "bench", "steps": 1, "max_steps": 1, "lr": 0.05}).model
    assert forget_loss(ascended) > forget_loss(task.original)


@pytest.mark.parametrize("variant", ["bench", "original"])
def test_scrub_grid_replays_the_teachers_logits_exactly(synthetic, runtime, variant):
    """The second alpha of a grid replays the first one's teacher logits and gets the model it would have
    computed alone; a loop of another shape records its own."""
    hp = {"variant": variant, "steps": 12, "epochs": 2}
    alone = METHODS.get("scrub")(_task(synthetic, runtime)[0], {**hp, "alpha": 0.5}).model
    shared, _ = _task(synthetic, runtime)
    METHODS.get("scrub")(shared, {**hp, "alpha": 5.0, "gamma": 0.5, "lr": 0.01})
    (recorded,) = [v for k, v in shared.cache.items() if k[0] == "scrub-teacher-logits"]
    calls = len(recorded)
    replayed = METHODS.get("scrub")(shared, {**hp, "alpha": 0.5}).model
    assert len(recorded) == calls > 0
    assert same(state(alone), state(replayed))
    METHODS.get("scrub")(shared, {**hp, "steps": 6, "epochs": 1})
    assert len([k for k in shared.cache if k[0] == "scrub-teacher-logits"]) == 2


def test_unknown_hyperparameter_is_rejected(task):
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        METHODS.get("ssd")(task, {"alhpa": 1})
    with pytest.raises(ValueError, match="alpha_scale must be 'absolute' or 'relative', got 'log'"):
        METHODS.get("ssd")(task, {"alpha_scale": "log"})


def test_expand_grid():
    assert expand_grid({}) == [{}]
    assert expand_grid({"b": [1, 2], "a": [3]}) == [{"a": 3, "b": 1}, {"a": 3, "b": 2}]

