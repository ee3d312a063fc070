"""The three manipulations of SPEC section 2: index sets, labels, triggers, test views, seeding."""
from __future__ import annotations

import pytest
import torch

from corrective_unlearning.data import stratified_split
from corrective_unlearning.data.tensors import from_tensors
from corrective_unlearning.manipulations import MANIPULATIONS, index_hash, manipulate
from corrective_unlearning.manipulations.interclass import resolve_pair
from corrective_unlearning.training import ImageBank
from corrective_unlearning.triggers.patch import Patch as Trigger

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def fake_dataset(num_classes: int, per_class: int = 6, name: str = "fake", classes=None, size: int = 4):
    """A tiny dataset with ``per_class`` train and 2 test images per class, labels interleaved."""
    g = torch.Generator().manual_seed(num_classes)
    n_train, n_test = num_classes * per_class, num_classes * 2
    return from_tensors(
        torch.randint(0, 256, (n_train, 1, size, size), generator=g, dtype=torch.uint8),
        torch.arange(n_train) % num_classes,
        torch.randint(0, 256, (n_test, 1, size, size), generator=g, dtype=torch.uint8),
        torch.arange(n_test) % num_classes,
        classes=classes,
        name=name,
    )


@pytest.fixture(scope="module")
def split(synthetic):
    """Candidates = the training split minus a validation split of 24."""
    return stratified_split(synthetic.train_labels, 24, seed=0)


# ------------------------------------------------------------------------------------------------- the trigger
def test_trigger_default_stamp_is_a_white_3x3_bottom_right_square():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 200, (5, 3, 10, 12), generator=g, dtype=torch.uint8)
    original = images.clone()
    stamped = Trigger().stamp(images)
    assert torch.equal(images, original), "stamp must return a copy"
    assert stamped.dtype == torch.uint8
    assert (stamped[:, :, 7:10, 9:12] == 255).all()
    outside = torch.ones(10, 12, dtype=torch.bool)
    outside[7:, 9:] = False
    assert torch.equal(stamped[:, :, outside], original[:, :, outside])
    # exactly 3*3 pixels per channel changed to 255 (the originals are < 200)
    assert int((stamped != original).sum()) == 5 * 3 * 9


@pytest.mark.parametrize(
    "position, rows, cols",
    [("top-left", slice(0, 2), slice(0, 2)), ("top-right", slice(0, 2), slice(6, 8)),
     ("bottom-left", slice(6, 8), slice(0, 2)), ("bottom-right", slice(6, 8), slice(6, 8))],
)
def test_trigger_positions_sizes_values(position, rows, cols):
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    stamped = Trigger(size=2, position=position, value=128).stamp(images)
    expected = torch.zeros_like(images)
    expected[:, :, rows, cols] = 128
    assert torch.equal(stamped, expected)


def pixels_through_bank(images: torch.Tensor, trigger, mask) -> torch.Tensor:
    """What an ImageBank renders, back on the 0-255 scale (mean 0, std 1/255 undo its normalisation)."""
    bank = ImageBank(images, (0.0,) * images.shape[1], (1 / 255,) * images.shape[1], torch.device("cpu"), trigger,
                     channels_last=False)
    return bank.batch(torch.arange(len(images)), mask).round().to(torch.uint8)


def test_trigger_stamp_respects_a_mask():
    images = torch.full((4, 1, 6, 6), 7, dtype=torch.uint8)
    mask = torch.tensor([True, False, False, True])
    stamped = pixels_through_bank(images, Trigger(), mask)
    assert (stamped[mask][:, :, 3:, 3:] == 255).all()
    assert torch.equal(stamped[~mask], images[~mask])
    assert torch.equal(stamped[mask][:, :, :3, :], images[mask][:, :, :3, :])


def test_checkerboard_trigger_alternates_value_and_black_from_its_corners():
    images = torch.full((2, 1, 6, 6), 9, dtype=torch.uint8)
    mask = torch.tensor([False, True])
    stamped = pixels_through_bank(images, Trigger(pattern="checkerboard", position="top-left"), mask)
    expected = torch.tensor([[255, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=torch.uint8)
    assert torch.equal(stamped[1, 0, :3, :3], expected)
    assert torch.equal(stamped[0], images[0]) and torch.equal(stamped[1, 0, 3:], images[1, 0, 3:])


def test_poison_records_its_trigger_pattern(synthetic, split):
    m = manipulate("poison", synthetic, split[0], 10, seed=0, pattern="checkerboard")
    assert m.trigger.pattern == "checkerboard" and m.params["pattern"] == "checkerboard"


@pytest.mark.parametrize("kwargs, message", [(dict(position="middle"), "position"), (dict(size=0), "size"),
                                             (dict(value=256), "value"), (dict(value=-1), "value"),
                                             (dict(pattern="stripes"), "pattern")])
def test_trigger_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trigger(**kwargs)


# -------------------------------------------------------------------------------------------------- poisoning
def test_poison_relabels_exactly_n_candidates(synthetic, split):
    candidates, val = split
    before = synthetic.train_labels.clone()
    m = manipulate("poison", synthetic, candidates, 30, seed=0, target=2)
    assert torch.equal(synthetic.train_labels, before), "the dataset's labels must never be mutated"
    assert m.name == "poison" and m.size == 30
    s_m = m.manipulated
    assert len(set(s_m.tolist())) == 30 and torch.equal(s_m, torch.sort(s_m).values)
    assert torch.isin(s_m, candidates).all() and not torch.isin(s_m, val).any()
    assert (m.labels[s_m] == 2).all()
    others = torch.ones(len(before), dtype=torch.bool)
    others[s_m] = False
    assert torch.equal(m.labels[others], before[others])
    assert int((m.labels != before).sum()) == int((before[s_m] != 2).sum())
    assert torch.equal(m.clean_labels, before)
    assert torch.equal(m.triggered, ~others)
    assert m.trigger == Trigger(size=3, position="bottom-right", value=255)
    assert m.params == dict(target=2, patch_size=3, position="bottom-right", value=255, pattern="square")
    # the returned label tensors are fresh copies
    m.labels[0] = 3
    m.clean_labels[1] = 3
    assert torch.equal(synthetic.train_labels, before)


def test_poison_test_views(synthetic, split):
    m = manipulate("poison", synthetic, split[0], 10, seed=0, target=1)
    n_test = len(synthetic.test_labels)
    views = m.test_views
    assert views["affected"].triggered and views["affected"].indices.tolist() == list(range(n_test))
    assert views["affected_nontarget"].triggered
    expected = [i for i, y in enumerate(synthetic.test_labels.tolist()) if y != 1]
    assert views["affected_nontarget"].indices.tolist() == expected
    assert not views["utility"].triggered and views["utility"].indices.tolist() == list(range(n_test))
    assert m.affected_view == "affected" and m.utility_view == "utility"


def test_poison_options_and_errors(synthetic, split):
    m = manipulate("poison", synthetic, split[0], 5, seed=0, target=3, patch_size=2, position="top-left", value=0)
    assert m.trigger == Trigger(size=2, position="top-left", value=0)
    with pytest.raises(ValueError, match="poison target"):
        manipulate("poison", synthetic, split[0], 5, seed=0, target=4)
    with pytest.raises(ValueError, match=r"n must be in \[0, 360\]"):
        manipulate("poison", synthetic, split[0], 361, seed=0)


def test_poison_trigger_reaches_the_training_batch(synthetic, split):
    """Stamped on the flagged samples after augmentation, as the normalised white value."""
    m = manipulate("poison", synthetic, split[0], 40, seed=0)
    bank = ImageBank(synthetic.train_images, synthetic.mean, synthetic.std, torch.device("cpu"), m.trigger)
    idx = torch.arange(len(synthetic.train_labels))
    x = bank.batch(idx, m.triggered[idx], crop_padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    white = torch.tensor([(1 - mu) / sd for mu, sd in zip(synthetic.mean, synthetic.std)]).view(1, 3, 1, 1)
    patch = x[:, :, -3:, -3:]
    assert torch.allclose(patch[m.triggered], white.expand(40, 3, 3, 3))
    clean = bank.batch(idx[~m.triggered])
    plain = (synthetic.train_images[~m.triggered].float() / 255 - 0.5) / 0.25
    assert torch.allclose(clean, plain)


# ------------------------------------------------------------------------------------------ interclass confusion
def test_interclass_swaps_n_half_each_way(synthetic, split):
    candidates, val = split
    before = synthetic.train_labels.clone()
    m = manipulate("interclass", synthetic, candidates, 20, seed=0, pair=(1, 3))
    assert torch.equal(synthetic.train_labels, before)
    s_m = m.manipulated
    assert m.size == 20 and torch.isin(s_m, candidates).all()
    assert int((before[s_m] == 1).sum()) == 10 and int((before[s_m] == 3).sum()) == 10
    assert (m.labels[s_m][before[s_m] == 1] == 3).all() and (m.labels[s_m][before[s_m] == 3] == 1).all()
    changed = torch.nonzero(m.labels != before).flatten()
    assert torch.equal(changed, s_m)
    assert not m.triggered.any() and m.trigger is None
    assert m.params == dict(pair=[1, 3], selection="random")
    in_pair = [i for i, y in enumerate(synthetic.test_labels.tolist()) if y in (1, 3)]
    out_pair = [i for i, y in enumerate(synthetic.test_labels.tolist()) if y not in (1, 3)]
    assert m.test_views["affected"].indices.tolist() == in_pair and not m.test_views["affected"].triggered
    assert m.test_views["utility"].indices.tolist() == out_pair


def test_interclass_first_selection_takes_lowest_indices(synthetic, split):
    candidates = split[0]
    m = manipulate("interclass", synthetic, candidates, 8, seed=123, pair=(0, 2), selection="first")
    labels = synthetic.train_labels
    lowest = lambda c: sorted(i for i in candidates.tolist() if labels[i] == c)[:4]  # noqa: E731
    assert m.manipulated.tolist() == sorted(lowest(0) + lowest(2))
    # the seed does not matter for `first`
    other = manipulate("interclass", synthetic, candidates, 8, seed=7, pair=(0, 2), selection="first")
    assert torch.equal(m.manipulated, other.manipulated)
    with pytest.raises(ValueError, match="exceeds"):
        manipulate("interclass", synthetic, candidates, 2 * 100, seed=0, pair=(0, 2), selection="first")


def test_interclass_random_selection_is_seeded(synthetic, split):
    a = manipulate("interclass", synthetic, split[0], 20, seed=1, pair=(0, 1))
    b = manipulate("interclass", synthetic, split[0], 20, seed=1, pair=(0, 1))
    c = manipulate("interclass", synthetic, split[0], 20, seed=2, pair=(0, 1))
    first = manipulate("interclass", synthetic, split[0], 20, seed=1, pair=(0, 1), selection="first")
    assert torch.equal(a.manipulated, b.manipulated) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.manipulated, c.manipulated)
    assert not torch.equal(a.manipulated, first.manipulated)


def test_interclass_errors(synthetic, split):
    with pytest.raises(ValueError, match="n must be even, got 7"):
        manipulate("interclass", synthetic, split[0], 7, seed=0)
    with pytest.raises(ValueError, match="selection"):
        manipulate("interclass", synthetic, split[0], 4, seed=0, selection="last")
    with pytest.raises(ValueError, match="two different classes"):
        manipulate("interclass", synthetic, split[0], 4, seed=0, pair=(2, 2))
    with pytest.raises(ValueError, match="unknown class 'zebra'"):
        manipulate("interclass", synthetic, split[0], 4, seed=0, pair=("zebra", "class1"))
    with pytest.raises(ValueError, match="unknown pair 'reference' for synthetic"):
        manipulate("interclass", synthetic, split[0], 4, seed=0, pair="reference")


def test_interclass_default_pairs():
    cifar10 = fake_dataset(10, name="cifar10", classes=CIFAR10_CLASSES)
    assert resolve_pair(cifar10, None) == (3, 5)
    assert resolve_pair(cifar10, ("cat", "dog")) == (3, 5)
    assert resolve_pair(cifar10, ["3", "5"]) == (3, 5)
    m = manipulate("interclass", cifar10, torch.arange(60), 4, seed=0)
    assert m.params["pair"] == [3, 5]
    assert sorted(set(cifar10.train_labels[m.manipulated].tolist())) == [3, 5]

    cifar100 = fake_dataset(100, per_class=2, name="cifar100")
    assert resolve_pair(cifar100, None) == (47, 52)
    assert resolve_pair(cifar100, "paper") == (47, 52)
    assert resolve_pair(cifar100, "reference") == (47, 53)
    m = manipulate("interclass", cifar100, torch.arange(200), 4, seed=0, pair="reference")
    assert m.params["pair"] == [47, 53]
    assert sorted(cifar100.train_labels[m.manipulated].tolist()) == [47, 47, 53, 53]
    assert sorted(m.labels[m.manipulated].tolist()) == [47, 47, 53, 53]
    assert (m.labels[m.manipulated] != cifar100.train_labels[m.manipulated]).all()


# ---------------------------------------------------------------------------------------------- random labels
@pytest.mark.parametrize("num_classes, per_class", [(2, 100), (10, 100), (100, 30)])
def test_random_labels_are_always_wrong_and_cover_every_wrong_label(num_classes, per_class):
    d = fake_dataset(num_classes, per_class=per_class, size=2)
    everything = torch.arange(len(d.train_labels))
    before = d.train_labels.clone()
    m = manipulate("random_labels", d, everything, len(everything), seed=0)
    assert torch.equal(d.train_labels, before)
    assert (m.labels != before).all(), "the new label must never be the true label"
    assert int(m.labels.min()) >= 0 and int(m.labels.max()) < num_classes
    shifts = (m.labels - before) % num_classes
    counts = torch.bincount(shifts, minlength=num_classes)
    assert counts[0] == 0 and (counts[1:] > 0).all(), "every wrong label must be reachable"
    expected = len(everything) / (num_classes - 1)
    assert (counts[1:].float() > 0.3 * expected).all() and (counts[1:].float() < 2 * expected).all()
    if num_classes == 2:
        assert torch.equal(m.labels, 1 - before)
    if num_classes == 10:  # every (true, new) pair with new != true occurs
        pairs = set(zip(before.tolist(), m.labels.tolist()))
        assert pairs == {(a, b) for a in range(10) for b in range(10) if a != b}


def test_random_labels_touch_only_s_m(synthetic, split):
    candidates = split[0]
    m = manipulate("random_labels", synthetic, candidates, 50, seed=3)
    changed = torch.nonzero(m.labels != synthetic.train_labels).flatten()
    assert torch.equal(changed, m.manipulated)
    assert torch.isin(m.manipulated, candidates).all()
    assert m.test_views["affected"].indices.tolist() == list(range(len(synthetic.test_labels)))
    assert not m.triggered.any()


def test_random_labels_needs_two_classes():
    one = from_tensors(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), torch.zeros(1, 1, 2, 2,
                       dtype=torch.uint8), torch.zeros(1), classes=["only"])
    with pytest.raises(ValueError, match="at least two classes"):
        manipulate("random_labels", one, torch.arange(3), 1, seed=0)


# --------------------------------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("name", ["poison", "interclass", "random_labels"])
def test_seed_determines_the_index_set(synthetic, split, name):
    a = manipulate(name, synthetic, split[0], 20, seed=0)
    b = manipulate(name, synthetic, split[0], 20, seed=0)
    c = manipulate(name, synthetic, split[0], 20, seed=1)
    assert torch.equal(a.manipulated, b.manipulated) and torch.equal(a.labels, b.labels)
    assert index_hash(a.manipulated) == index_hash(b.manipulated)
    assert not torch.equal(a.manipulated, c.manipulated)
    assert index_hash(a.manipulated) != index_hash(c.manipulated)


def test_index_hash_is_order_independent():
    assert index_hash(torch.tensor([5, 1, 3])) == index_hash(torch.tensor([1, 3, 5]))
    assert index_hash(torch.tensor([1, 3, 5])) != index_hash(torch.tensor([1, 3, 6]))
    assert len(index_hash(torch.tensor([1]))) == 16


def test_unknown_manipulation_lists_known_names(synthetic, split):
    assert MANIPULATIONS.names() == ["interclass", "label_noise", "none", "poison", "random_labels"]
    with pytest.raises(KeyError, match="expected one of: interclass, label_noise, none, poison, random_labels"):
        manipulate("blend", synthetic, split[0], 5, seed=0)
