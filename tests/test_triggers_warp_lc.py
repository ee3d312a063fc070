"""WaNet's warp and the label-consistent attack, each checked against a computation written out here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from corrective_unlearning.data.tensors import from_tensors
from corrective_unlearning.manipulations import manipulate
from corrective_unlearning.training import ImageBank
from corrective_unlearning.triggers import TRIGGERS, TriggerContext, TriggerError, build_trigger
from corrective_unlearning.triggers.base import sample_generator
from corrective_unlearning.triggers.lc import LabelConsistent
from corrective_unlearning.triggers.wanet import FIELD_SALT, WaNet


def random_images(n: int, shape=(3, 9, 11), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)


def wanet_context(shape=(3, 9, 11), seed=0, n_train=60, poisoned=(3, 10, 17, 40)) -> TriggerContext:
    return TriggerContext(shape=shape, seed=seed, target=0, poisoned=torch.tensor(poisoned),
                          candidates=torch.arange(n_train), labels=torch.arange(n_train) % 4)


def tiny_dataset(per_class: int = 8, classes: int = 4, shape=(3, 8, 8)):
    g = torch.Generator().manual_seed(5)
    n_train, n_test = classes * per_class, classes * 2
    return from_tensors(torch.randint(0, 256, (n_train, *shape), generator=g, dtype=torch.uint8),
                        torch.arange(n_train) % classes,
                        torch.randint(0, 256, (n_test, *shape), generator=g, dtype=torch.uint8),
                        torch.arange(n_test) % classes)


def tiny_model(in_features: int, classes: int = 4) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(in_features, classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(classes, in_features, generator=g) * 0.3)
        model[1].bias.zero_()
    return model


# ---------------------------------------------------------------------------------------------------------- WaNet
def test_wanet_at_zero_strength_is_the_identity():
    trigger = build_trigger({"name": "wanet", "strength": 0, "cross_ratio": 0}, wanet_context())
    images = random_images(6)
    assert torch.equal(trigger.stamp(images, torch.arange(6)), images)
    assert len(trigger.extra_stamped) == 0


@pytest.mark.parametrize("axis", ["x", "y"])
def test_wanet_a_one_pixel_field_shifts_the_image_by_one_pixel(axis):
    images = random_images(4)
    _, _, h, w = images.shape
    trigger = WaNet.build(wanet_context(), cross_ratio=0)
    # The identity sampling grid, written out: grid[..., 0] is the column (x), grid[..., 1] the row (y), in [-1, 1].
    xs = torch.tensor([-1 + 2 * j / (w - 1) for j in range(w)])
    ys = torch.tensor([-1 + 2 * i / (h - 1) for i in range(h)])
    grid = torch.stack((xs.expand(h, w), ys[:, None].expand(h, w)), dim=-1)[None]
    if axis == "x":
        grid[..., 0] += 2 / (w - 1)  # sample one column to the right
        expected = torch.cat((images[..., 1:], torch.zeros_like(images[..., :1])), dim=-1)
    else:
        grid[..., 1] += 2 / (h - 1)  # one row down
        expected = torch.cat((images[..., 1:, :], torch.zeros_like(images[..., :1, :])), dim=-2)
    object.__setattr__(trigger, "_grid", grid)
    object.__setattr__(trigger, "_on_device", {})
    assert torch.equal(trigger.stamp(images, torch.arange(4)), expected)


def test_wanet_field_follows_the_recipe_and_the_seed():
    shape = (3, 9, 11)
    trigger = WaNet.build(wanet_context(shape, seed=3), k=4, strength=0.5, cross_ratio=0)
    # The recipe, written out: a uniform [-1, 1] control grid normalised by its mean |.|, bicubic upsampling,
    # strength * field / H added to the identity, clamped.
    g = sample_generator(3, FIELD_SALT)
    control = torch.rand(1, 2, 4, 4, generator=g) * 2 - 1
    control = control / control.abs().mean()
    up = F.interpolate(control, size=(9, 11), mode="bicubic", align_corners=True)  # [1, 2, H, W]
    identity_x = torch.linspace(-1, 1, 11).view(1, 1, 11).expand(1, 9, 11)
    identity_y = torch.linspace(-1, 1, 9).view(1, 9, 1).expand(1, 9, 11)
    expected = torch.stack((identity_x + 0.5 * up[:, 0] / 9, identity_y + 0.5 * up[:, 1] / 9), dim=-1).clamp(-1, 1)
    assert torch.allclose(trigger._grid, expected, atol=1e-6)

    again = WaNet.build(wanet_context(shape, seed=3), k=4, strength=0.5, cross_ratio=0)
    other = WaNet.build(wanet_context(shape, seed=4), k=4, strength=0.5, cross_ratio=0)
    assert torch.equal(trigger._grid, again._grid)
    assert not torch.allclose(trigger._grid, other._grid)
    images = random_images(5, shape)
    stamped = trigger.stamp(images, torch.arange(5))
    assert torch.equal(stamped, again.stamp(images, torch.arange(5)))
    assert not torch.equal(stamped, images)  # the default strength moves pixels
    assert not torch.equal(stamped, other.stamp(images, torch.arange(5)))


def test_wanet_noise_samples():
    context = wanet_context(poisoned=(3, 10, 17, 40))
    trigger = WaNet.build(context, cross_ratio=2)
    noise = trigger.extra_stamped
    assert len(noise) == 8 and len(set(noise.tolist())) == 8
    assert not set(noise.tolist()) & {3, 10, 17, 40}
    assert set(noise.tolist()) <= set(range(60))
    assert torch.equal(WaNet.build(context, cross_ratio=2).extra_stamped, noise)  # seeded
    # The same picture under a poisoned index and under a noise sample's index: the warp, then the warp plus noise.
    image = random_images(1)
    as_poisoned = trigger.stamp(image, torch.tensor([3]))
    as_noise = trigger.stamp(image, noise[:1])
    expected_poisoned = F.grid_sample(image.float(), trigger._grid, align_corners=True).round().clamp(0, 255)
    assert torch.equal(as_poisoned, expected_poisoned.to(torch.uint8))
    assert not torch.equal(as_noise, as_poisoned)
    row = trigger._noise_grids[0]
    assert (row - trigger._grid[0]).abs().max() <= 1 / 9 + 1e-6  # uniform(-1, 1) / H around the warp grid
    expected_noise = F.grid_sample(image.float(), row[None], align_corners=True).round().clamp(0, 255)
    assert torch.equal(as_noise, expected_noise.to(torch.uint8))
    # Two noise samples get two different fields.
    assert not torch.equal(trigger.stamp(image, noise[1:2]), as_noise)

    test = trigger.for_test()
    assert len(test.extra_stamped) == 0
    assert torch.equal(test.stamp(image, noise[:1]), as_poisoned)
    assert len(trigger.extra_stamped) == 8  # for_test leaves the training trigger as it was


def test_wanet_through_the_poison_manipulation_and_the_bank():
    dataset = tiny_dataset(per_class=10)
    candidates = torch.arange(36)
    m = manipulate("poison", dataset, candidates, 4, 0, target=1, trigger={"name": "wanet"})
    noise = m.trigger.extra_stamped
    assert len(noise) == 8 and not set(noise.tolist()) & set(m.manipulated.tolist())
    assert m.triggered.sum() == 12 and m.triggered[noise].all() and m.triggered[m.manipulated].all()
    assert torch.equal(m.labels[noise], dataset.train_labels[noise])  # noise samples keep their labels
    assert (m.labels[m.manipulated] == 1).all()
    assert m.params["trigger"] == {"name": "wanet", "k": 4, "strength": 0.5, "grid_rescale": 1.0,
                                   "cross_ratio": 2.0}
    channels = dataset.train_images.shape[1]
    bank = ImageBank(dataset.train_images, (0.0,) * channels, (1 / 255,) * channels, torch.device("cpu"), m.trigger)
    idx = torch.arange(36)
    pixels = bank.batch(idx, m.triggered[idx]).round().to(torch.uint8)
    stamped = m.trigger.stamp(dataset.train_images[idx], idx)
    flagged = m.triggered[idx]
    assert torch.equal(pixels[flagged], stamped[flagged])
    assert torch.equal(pixels[~flagged], dataset.train_images[idx][~flagged])


def test_wanet_refuses_what_it_cannot_do():
    with pytest.raises(TriggerError, match=r"cross_ratio 5 asks for 20 noise samples .* only 16 candidates"):
        WaNet.build(wanet_context(n_train=20, poisoned=(1, 2, 3, 4)), cross_ratio=5)
    with pytest.raises(TriggerError, match=r"trigger wanet: k must be in \[2, 9\], got 10"):
        WaNet.build(wanet_context(), k=10)
    with pytest.raises(TriggerError, match="build the trigger"):
        WaNet().stamp(random_images(1), torch.arange(1))


# ------------------------------------------------------------------------------------------- label-consistent
# BackdoorBench's all-corners trigger (utils/bd_img_transform/lc.py), as it lists it: ((row, col), +1 white / -1 black).
ALL_CORNERS = [
    ((0, 0), 1), ((0, 1), -1), ((0, 2), -1), ((1, 0), -1), ((1, 1), 1), ((1, 2), -1), ((2, 0), 1), ((2, 1), -1),
    ((2, 2), 1),
    ((-1, 0), 1), ((-1, 1), -1), ((-1, 2), 1), ((-2, 0), -1), ((-2, 1), 1), ((-2, 2), -1), ((-3, 0), 1),
    ((-3, 1), -1), ((-3, 2), -1),
    ((0, -1), 1), ((0, -2), -1), ((0, -3), -1), ((1, -1), -1), ((1, -2), 1), ((1, -3), -1), ((2, -1), 1),
    ((2, -2), -1), ((2, -3), 1),
    ((-1, -1), 1), ((-1, -2), -1), ((-1, -3), 1), ((-2, -1), -1), ((-2, -2), 1), ((-2, -3), -1), ((-3, -1), 1),
    ((-3, -2), -1), ((-3, -3), -1),
]


def test_lc_stamps_the_reference_pattern_in_the_four_corners():
    images = random_images(3, (3, 10, 12))
    stamped = LabelConsistent().stamp(images, torch.arange(3))
    expected = images.clone()
    for (r, c), sign in ALL_CORNERS:
        expected[:, :, r, c] = 255 if sign > 0 else 0
    assert torch.equal(stamped, expected)
    assert torch.equal(LabelConsistent(value=200).stamp(images)[:, :, 0, 0], torch.full((3, 3), 200, dtype=torch.uint8))
    big = LabelConsistent(patch_size=6).stamp(random_images(1, (1, 12, 12)))
    assert torch.equal(big[0, 0, :6, :6], expected[0, 0, :3, :3].repeat_interleave(2, 0).repeat_interleave(2, 1))
    with pytest.raises(TriggerError, match="patch_size must be at most half the image side 5, got 6"):
        LabelConsistent(patch_size=6).stamp(images)


def test_lc_perturbs_target_images_within_eps_and_keeps_labels():
    dataset = tiny_dataset()
    model = tiny_model(3 * 8 * 8)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    candidates = torch.arange(28)
    m = manipulate("poison", dataset, candidates, 5, 0, target=1, clean_label=True,
                   trigger={"name": "lc", "eps": 8, "steps": 5, "step_size": 2}, surrogate=lambda: model)
    assert torch.equal(m.labels, dataset.train_labels)
    assert (dataset.train_labels[m.manipulated] == 1).all() and len(m.manipulated) == 5
    assert torch.equal(m.triggered.nonzero().flatten(), m.manipulated)
    # The surrogate is left as it was: its mode, its weights, no gradients.
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())

    clean = dataset.train_images[m.manipulated]
    adversarial = m.trigger.perturb(clean, m.manipulated)
    change = (adversarial.int() - clean.int()).abs()
    assert change.max() <= 8 and change.max() > 0
    others = torch.tensor([0, 2, 3])  # not poisoned: unchanged
    assert torch.equal(m.trigger.perturb(dataset.train_images[others], others), dataset.train_images[others])

    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    target = torch.full((5,), 1)
    with torch.no_grad():
        def loss(x):
            return F.cross_entropy(model((x.float() / 255 - mean) / std), target).item()
        assert loss(adversarial) > loss(clean)

    # Through the bank: perturbed, then stamped in the four corners; the test images only stamped.
    bank = ImageBank(dataset.train_images, (0.0,) * 3, (1 / 255,) * 3, torch.device("cpu"), m.trigger)
    pixels = bank.batch(m.manipulated, stamp=True).round().to(torch.uint8)
    assert torch.equal(pixels, LabelConsistent().stamp(adversarial))
    test = m.trigger.for_test()
    assert torch.equal(test.perturb(clean, m.manipulated), clean)
    assert torch.equal(test.stamp(clean), LabelConsistent().stamp(clean))

    again = manipulate("poison", dataset, candidates, 5, 0, target=1, clean_label=True,
                       trigger={"name": "lc", "eps": 8, "steps": 5, "step_size": 2}, surrogate=lambda: model)
    assert torch.equal(again.trigger.perturb(clean, m.manipulated), adversarial)


def test_lc_rounding_stays_within_a_fractional_eps():
    dataset = tiny_dataset()
    model = tiny_model(3 * 8 * 8)
    context = TriggerContext(shape=(3, 8, 8), seed=0, target=1, num_classes=4, poisoned=torch.tensor([1, 5, 9]),
                             candidates=torch.arange(32), images=dataset.train_images, labels=dataset.train_labels,
                             surrogate=lambda: model, mean=dataset.mean, std=dataset.std)
    trigger = LabelConsistent.build(context, eps=2.5, steps=3, step_size=1.7, random_start=True)
    clean = dataset.train_images[context.poisoned]
    change = (trigger.perturb(clean, context.poisoned).int() - clean.int()).abs()
    assert change.max() == 2


def test_lc_without_clean_label_is_refused():
    dataset = tiny_dataset()
    model = tiny_model(3 * 8 * 8)
    with pytest.raises(TriggerError, match=r"trigger lc: .* use it with clean_label: true"):
        manipulate("poison", dataset, torch.arange(28), 5, 0, target=1, trigger={"name": "lc"},
                   surrogate=lambda: model)
    context = TriggerContext(shape=(3, 8, 8), seed=0, target=1, poisoned=torch.tensor([1, 5]),
                             images=dataset.train_images, labels=dataset.train_labels)
    with pytest.raises(TriggerError, match="needs a clean surrogate"):
        LabelConsistent.build(context)


@pytest.mark.parametrize("name, params, message", [
    ("lc", {"eps": -1}, r"trigger lc: eps must be in \[0, 255\], got -1"),
    ("lc", {"steps": 2.5}, r"trigger lc: steps must be an integer, got 2.5"),
    ("lc", {"patch_size": 0}, r"trigger lc: patch_size must be in \[1, inf\], got 0"),
    ("lc", {"random_start": "yes"}, r"trigger lc: random_start must be true or false, got 'yes'"),
    ("wanet", {"k": 1}, r"trigger wanet: k must be in \[2, inf\], got 1"),
    ("wanet", {"strength": -1}, r"trigger wanet: strength must be in \[0, inf\], got -1"),
    ("wanet", {"cross_ratio": -1}, r"trigger wanet: cross_ratio must be in \[0, inf\], got -1"),
    ("wanet", {"grid_rescale": 0}, r"trigger wanet: grid_rescale must be > 0, got 0"),
])
def test_bad_parameters_name_themselves(name, params, message):
    with pytest.raises(TriggerError, match=message):
        TRIGGERS.get(name)(**params)


def test_built_triggers_survive_pickling_without_their_device_copies():
    import pickle

    dataset = tiny_dataset()
    model = tiny_model(3 * 8 * 8)
    warp = manipulate("poison", dataset, torch.arange(28), 4, 0, target=1, trigger={"name": "wanet"}).trigger
    lc = manipulate("poison", dataset, torch.arange(28), 4, 0, target=1, clean_label=True,
                    trigger={"name": "lc", "steps": 2}, surrogate=lambda: model).trigger
    idx = torch.arange(32)
    for trigger in (warp, lc):
        expected = trigger.stamp(trigger.perturb(dataset.train_images, idx), idx)  # fills the device copies
        copy = pickle.loads(pickle.dumps(trigger))
        assert copy._on_device == {} and copy == trigger
        assert torch.equal(copy.stamp(copy.perturb(dataset.train_images, idx), idx), expected)
