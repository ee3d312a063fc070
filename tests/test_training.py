"""Recipe A: the schedule, augmentation on the device, and the training loop."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from corrective_unlearning.models import MODELS, blocks, create_model, fold_batchnorm
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import DivergenceError, ImageBank, Loop, Recipe, Reference, default_recipe, train
from corrective_unlearning.training.bank import random_crop
from corrective_unlearning.training.trainer import step_order
from helpers import same, state


# ---------------------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 1 / 41),  # warm-up w = 4000 // 100 = 40 steps, factor (t+1)/(w+1)
        (1, 2 / 41),
        (20, 21 / 41),
        (39, 40 / 41),
        (40, 1.0),  # then 1 - (t - w) / (1.25 * 4000)
        (41, 1 - 1 / 5000),
        (1040, 0.8),
        (2040, 0.6),
        (3999, 1 - 3959 / 5000),  # last step: about 0.208x, not 0
    ],
)
def test_lr_factor_recipe_a(step, expected):
    recipe = Recipe(steps=4000)
    assert recipe.warmup_steps == 40
    assert recipe.lr_factor(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert recipe.lr_at(step) == pytest.approx(0.025 * expected, rel=1e-12)


def test_lr_factor_cifar100_and_short_runs():
    r = Recipe(steps=6000)
    assert r.warmup_steps == 60
    assert r.lr_factor(59) == pytest.approx(60 / 61)
    assert r.lr_factor(5999) == pytest.approx(1 - 5939 / 7500)
    short = Recipe(steps=50)  # 50 // 100 = 0: no warm-up
    assert short.lr_factor(0) == 1.0
    assert short.lr_factor(49) == pytest.approx(1 - 49 / 62.5)


def test_recipe_defaults_and_validation():
    r = Recipe()
    assert (r.steps, r.batch_size, r.lr, r.momentum, r.weight_decay) == (4000, 512, 0.025, 0.9, 5e-4)
    assert (r.crop_padding, r.flip, r.checkpoint) == (4, True, "last")
    assert default_recipe("cifar100").steps == 6000 and default_recipe("cifar10") == Recipe()
    assert r.replace(steps=10).steps == 10 and r.steps == 4000
    for bad in (dict(steps=0), dict(batch_size=0), dict(lr=0.0), dict(checkpoint="best")):
        with pytest.raises(ValueError):
            Recipe(**bad)


class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.p.expand(len(x), 2)


def test_the_optimizer_follows_the_schedule_step_by_step(synthetic, runtime):
    """With loss = p (gradient 1), no momentum and no weight decay, step t moves p by exactly -lr_at(t)."""
    recipe = Recipe(steps=6, batch_size=8, lr=0.5, momentum=0.0, weight_decay=0.0, warmup_divisor=2,
                    crop_padding=0, flip=False)
    model = _Scalar()
    seen = []

    def loss_fn(m, batch):
        seen.append(float(model.p.detach()))
        return model.p * 1.0

    bank = ImageBank(synthetic.train_images, synthetic.mean, synthetic.std, runtime.device)
    train(model, bank, synthetic.train_labels, torch.arange(64), recipe, seed=0, runtime=runtime, loss_fn=loss_fn)
    seen.append(float(model.p.detach()))
    moves = [a - b for a, b in zip(seen, seen[1:])]
    # w = 3, T = 7.5: warm-up 1/4, 2/4, 3/4, then 1, 1 - 1/7.5, 1 - 2/7.5
    expected = [0.5 * f for f in (1 / 4, 2 / 4, 3 / 4, 1.0, 1 - 1 / 7.5, 1 - 2 / 7.5)]
    assert moves == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------ augmentation
def test_random_crop_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    pad = 2
    out = random_crop(x, pad, torch.Generator().manual_seed(42))
    assert out.shape == x.shape and out.dtype == torch.uint8

    replay = torch.Generator().manual_seed(42)
    dy = torch.randint(0, 2 * pad + 1, (16,), generator=replay)
    dx = torch.randint(0, 2 * pad + 1, (16,), generator=replay)
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 3, "the offsets should vary across images"
    for i in range(16):
        padded = torch.zeros(3, 8 + 2 * pad, 8 + 2 * pad, dtype=torch.uint8)
        padded[:, pad:pad + 8, pad:pad + 8] = x[i]
        assert torch.equal(out[i], padded[:, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]), f"image {i}"


def test_random_crop_outputs_are_windows_of_the_padded_image():
    """Independent of how offsets are drawn: each output is one of the (2p+1)^2 zero-padded windows."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 256, (32, 1, 6, 6), generator=g, dtype=torch.uint8)
    out = random_crop(x, 1, g)
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = 0
    for i in range(32):
        windows = [(a, b) for a in range(3) for b in range(3) if torch.equal(out[i], padded[i, :, a:a + 6, b:b + 6])]
        assert windows, f"image {i} is not a window of its padded image"
        shifted += windows[0] != (1, 1)
    assert shifted > 16  # 8/9 of the images are expected to move


def test_step_order_is_a_sequence_of_permutations():
    order = step_order(torch.arange(10, 20), steps=5, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert order.shape == (5, 4)
    flat = order.flatten().tolist()
    assert sorted(flat[:10]) == list(range(10, 20)) and sorted(flat[10:]) == list(range(10, 20))


# ------------------------------------------------------------------------------------------------ the trainer
def _fresh(init_seed=0, num_classes=4):
    torch.manual_seed(init_seed)
    return create_model("small_cnn", num_classes, 3)


@pytest.fixture(scope="module")
def bank(synthetic, runtime):
    return ImageBank(synthetic.train_images, synthetic.mean, synthetic.std, runtime.device)


def test_training_is_deterministic_for_a_seed(synthetic, runtime, bank):
    recipe = Recipe(steps=20, batch_size=32, crop_padding=2, flip=True)
    idx = torch.arange(300)
    models = [_fresh(), _fresh(), _fresh()]
    assert same(state(models[0]), state(models[2]))
    logs = [train(m, bank, synthetic.train_labels, idx, recipe, seed=s, runtime=runtime)
            for m, s in zip(models, (0, 0, 1))]
    assert same(state(models[0]), state(models[1]))
    assert logs[0].losses == logs[1].losses
    assert not same(state(models[0]), state(models[2]))
    assert not models[0].training  # left in eval mode


def _mean_loss(model, bank, labels, idx):
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(bank.batch(idx)), labels[idx]))


def test_training_learns(synthetic, runtime, bank):
    model = _fresh()
    idx = torch.arange(len(synthetic.train_labels))
    before = _mean_loss(model, bank, synthetic.train_labels, idx)
    log = train(model, bank, synthetic.train_labels, idx, Recipe(steps=20, batch_size=32, crop_padding=1, flip=False),
                seed=0, runtime=runtime)
    after = _mean_loss(model, bank, synthetic.train_labels, idx)
    assert after < 0.5 * before
    assert log.steps == 20 and len(log.losses) == 1 and math.isfinite(log.losses[0]) and log.seconds > 0
    test_bank = ImageBank(synthetic.test_images, synthetic.mean, synthetic.std, runtime.device)
    with torch.no_grad():
        accuracy = (model(test_bank.batch(torch.arange(192))).argmax(1) == synthetic.test_labels).float().mean()
    assert accuracy > 0.6  # chance is 0.25


def test_nan_loss_raises_divergence_error_naming_step_and_lr(synthetic, runtime, bank):
    calls = []

    def nan_at_step_7(model, batch):
        calls.append(None)
        loss = F.cross_entropy(model(batch.x), batch.labels)
        return loss * float("nan") if len(calls) == 8 else loss

    recipe = Recipe(steps=20, batch_size=32)
    with pytest.raises(DivergenceError) as info:
        train(_fresh(), bank, synthetic.train_labels, torch.arange(300), recipe, seed=0, runtime=runtime,
              loss_fn=nan_at_step_7)
    message = str(info.value)
    # steps=20: no warm-up, factor at step 7 = 1 - 7/25 = 0.72 -> 0.025 * 0.72 = 0.018
    assert "at step 7 of 20" in message
    assert "learning rate 0.018" in message and "base lr 0.025" in message
    assert isinstance(info.value, FloatingPointError)


def test_huge_learning_rate_diverges(synthetic, runtime, bank):
    pattern = r"loss is (nan|inf) at step \d+ of 20 \(learning rate .*base lr 1000000000\.0\)"
    with pytest.raises(DivergenceError, match=pattern):
        train(_fresh(), bank, synthetic.train_labels, torch.arange(300), Recipe(steps=20, batch_size=32, lr=1e9),
              seed=0, runtime=runtime)


def test_frozen_modules_do_not_move(synthetic, runtime, bank):
    model = _fresh()
    head = model[-1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, bank, synthetic.train_labels, torch.arange(300), Recipe(steps=10, batch_size=32), seed=0,
          runtime=runtime, frozen=list(model)[:-1])
    after = model.state_dict()
    head_names = {f"{len(model) - 1}.{n}" for n, _ in head.named_parameters()}
    assert head_names and all(not torch.equal(before[n], after[n]) for n in head_names)
    frozen = [n for n in before if n not in head_names]
    assert any("running_var" in n for n in frozen)
    assert all(torch.equal(before[n], after[n]) for n in frozen), "weight decay, momentum or batch norm moved them"


def test_frozen_parameters_do_not_move(synthetic, runtime, bank):
    model = _fresh()
    for p in model[0].parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in model[0].parameters()]
    train(model, bank, synthetic.train_labels, torch.arange(300), Recipe(steps=5, batch_size=32), seed=0,
          runtime=runtime)
    assert all(torch.equal(a, b) for a, b in zip(before, model[0].parameters()))


def test_val_checkpoint_keeps_the_best_scoring_state(synthetic, runtime, bank):
    scores = iter([1.0, 9.0, 3.0, 2.0])
    snapshots = []

    def select(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    model = _fresh()
    recipe = Recipe(steps=20, batch_size=32, checkpoint="val", eval_every=5)
    log = train(model, bank, synthetic.train_labels, torch.arange(300), recipe, seed=0, runtime=runtime,
                select=select)
    assert len(snapshots) == 4  # after steps 5, 10, 15, 20
    assert log.selected_step == 10 and log.selected_score == 9.0
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)
    assert not model.training


def test_val_checkpoint_every_epoch_by_default(synthetic, runtime, bank):
    calls = []
    recipe = Recipe(steps=20, batch_size=32, checkpoint="val")  # 96 samples / 32 = one epoch every 3 steps
    train(_fresh(), bank, synthetic.train_labels, torch.arange(96), recipe, seed=0, runtime=runtime,
          select=lambda m: calls.append(1) or float(len(calls)))
    assert len(calls) == 7  # steps 3, 6, ..., 18, and the last step 20


def test_checkpoint_rules_need_a_score_and_data(synthetic, runtime, bank):
    with pytest.raises(ValueError, match="needs a selection score"):
        train(_fresh(), bank, synthetic.train_labels, torch.arange(10), Recipe(steps=2, checkpoint="val"), seed=0,
              runtime=runtime)
    with pytest.raises(ValueError, match="empty index set"):
        train(_fresh(), bank, synthetic.train_labels, torch.arange(0), Recipe(steps=2), seed=0, runtime=runtime)


# ---------------------------------------------------------------------------------------------------- models
def test_resnet9_matches_the_reference_size():
    torch.manual_seed(0)
    model = create_model("resnet9", 10, 3)
    n_params = sum(p.numel() for p in model.parameters())
    assert 2_200_000 < n_params < 2_400_000
    assert model[-1].bias is None
    model.eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert len(blocks(model)) == 7  # 6 conv stages + the linear head


@pytest.mark.parametrize("name, folds", [("resnet9", 8), ("small_cnn", 4), ("wrn28x10", 0)])
def test_fold_batchnorm_keeps_the_function_and_the_original(name, folds):
    """Conv -> BN pairs merge into one conv (pre-activation BN stays); eval outputs are unchanged."""
    torch.manual_seed(0)
    model = create_model(name, 10, 3)
    for module in model.modules():  # non-trivial running statistics and affine parameters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5), torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    count = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert count(model) - count(folded) == folds
    assert model.training and not folded.training
    assert not any(p.requires_grad for p in folded.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model.eval()(x), atol=1e-4, rtol=1e-4)


def test_model_registry_errors():
    assert {"resnet9", "small_cnn", "wrn28x10"} <= set(MODELS.names())
    with pytest.raises(KeyError, match="expected one of: .*resnet9.*small_cnn"):
        create_model("vgg11", 10)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        create_model("small_cnn", 1)


# --------------------------------------------------------------------------------------------------- runtime
@pytest.mark.parametrize("given, expected", [("auto", False), ("off", False), ("false", False), (False, False),
                                             ("reduce-overhead", "reduce-overhead"), (True, True)])
def test_runtime_compile_modes_on_the_cpu(given, expected):
    assert Runtime.create("cpu", given, progress=False).compile == expected


def test_runtime_rejects_an_unknown_compile_mode():
    with pytest.raises(ValueError, match="compile must be .*reduce-overhead.*got 'fast'"):
        Runtime.create("cpu", "fast")


def test_observe_sees_every_steps_logits_and_after_step_runs_after_each_update(synthetic, runtime, bank):
    model, seen, steps = _fresh(), [], []
    recipe = Recipe(steps=4, batch_size=32)
    train(model, bank, synthetic.train_labels, torch.arange(300), recipe, seed=0, runtime=runtime,
          observe=lambda logits, labels, indices: seen.append((logits.shape, bool(logits.requires_grad),
                                                               torch.equal(labels, synthetic.train_labels[indices]))),
          after_step=steps.append)
    assert seen == [((32, synthetic.num_classes), False, True)] * 4 and steps == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="observe sees the logits of the default cross-entropy"):
        train(model, bank, synthetic.train_labels, torch.arange(300), recipe, seed=0, runtime=runtime,
              observe=lambda *a: None, loss_fn=lambda m, batch: m(batch.x).sum())


# ------------------------------------------------------------------------------------------------ the Loop
def _loop_bank(synthetic, runtime):
    return ImageBank(synthetic.train_images, synthetic.mean, synthetic.std, runtime.device)


def test_runs_of_one_loop_share_the_optimiser_state(synthetic, runtime):
    """Loss = p (gradient 1), SGD momentum 0.9, lr 0.5: the buffer is v_t = 0.9 v_{t-1} + 1 and p moves by
    -0.5 v_t, across a boundary between runs as within one."""
    recipe = Recipe(steps=4, batch_size=8, lr=0.5, momentum=0.9, weight_decay=0.0, schedule="constant",
                    crop_padding=0, flip=False)
    model = _Scalar()
    loop = Loop(model, _loop_bank(synthetic, runtime), synthetic.train_labels, recipe, runtime, augment_seed=0)
    seen, steps = [], []

    def loss(m, batch):
        seen.append(float(model.p.detach()))
        steps.append(batch.step)
        return model.p * 1.0

    batches = torch.arange(32).view(4, 8)
    loop.run(batches[:2], loss)
    loop.run(batches[2:], loss)
    seen.append(float(model.p.detach()))
    moves = [a - b for a, b in zip(seen, seen[1:])]
    assert moves == pytest.approx([0.5 * 1.0, 0.5 * 1.9, 0.5 * 2.71, 0.5 * 3.439])
    assert steps == [0, 1, 2, 3]  # Batch.step counts over the loop's runs


def test_a_reference_model_is_run_on_the_batch_without_grad_through_its_route(synthetic, runtime):
    recipe = Recipe(steps=2, batch_size=8, crop_padding=1, flip=True)
    reference = create_model("small_cnn", synthetic.num_classes, 3).eval()
    routed = []

    def route(indices):
        routed.append(indices.tolist())
        return torch.no_grad()  # any context manager

    model = create_model("small_cnn", synthetic.num_classes, 3)
    loop = Loop(model, _loop_bank(synthetic, runtime), synthetic.train_labels, recipe, runtime, augment_seed=3,
                reference=Reference(model=reference, route=route))
    checked = []

    def loss(forward, batch):
        with torch.no_grad():
            expected = reference(batch.x)  # the same (augmented) inputs the student sees
        checked.append(torch.equal(batch.reference, expected) and not batch.reference.requires_grad)
        return F.cross_entropy(forward(batch.x), batch.labels)

    batches = torch.tensor([[0, 5, 9, 11, 20, 21, 30, 31], [1, 2, 3, 4, 6, 7, 8, 10]])
    loop.run(batches, loss)
    assert checked == [True, True] and routed == batches.tolist()


def test_precomputed_reference_logits_are_read_by_loop_step(synthetic, runtime):
    recipe = Recipe(steps=3, batch_size=4, crop_padding=0, flip=False)
    logits = [torch.full((4, 2), float(k)) for k in range(3)]
    model = _Scalar()
    loop = Loop(model, _loop_bank(synthetic, runtime), synthetic.train_labels, recipe, runtime, augment_seed=0,
                reference=Reference(logits=logits))
    seen = []

    def loss(forward, batch):
        seen.append(float(batch.reference[0, 0]))
        return model.p * 1.0

    batches = torch.arange(12).view(3, 4)
    loop.run(batches[:1], loss)
    loop.run(batches[1:], loss)
    assert seen == [0.0, 1.0, 2.0]


def test_a_reference_is_a_model_or_logits_not_both():
    with pytest.raises(ValueError, match="exactly one"):
        Reference()
    with pytest.raises(ValueError, match="exactly one"):
        Reference(model=nn.Identity(), logits=[torch.zeros(1)])


def test_a_run_names_itself_when_its_loss_diverges(synthetic, runtime):
    recipe = Recipe(steps=3, batch_size=4, lr=0.1, schedule="constant", crop_padding=0, flip=False)
    model = _Scalar()
    loop = Loop(model, _loop_bank(synthetic, runtime), synthetic.train_labels, recipe, runtime, augment_seed=0)
    with pytest.raises(DivergenceError, match=r"flush diverged: loss is nan at step 1 of 3 \(learning rate 0\.1,"):
        loop.run(torch.arange(12).view(3, 4), lambda m, b: model.p * (float("nan") if b.step == 1 else 1.0),
                 desc="flush")
