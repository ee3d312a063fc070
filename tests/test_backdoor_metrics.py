"""The backdoor field's metrics (C-Acc, ASR, RA, DER), all-to-all and clean-label poisoning, and class-dependent
label noise, checked against counts made by hand on a model whose predictions are set by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from corrective_unlearning.data.tensors import from_tensors
from corrective_unlearning.evaluation import defense_effectiveness
from corrective_unlearning.experiment import build_setting, evaluate
from corrective_unlearning.manipulations import manipulate
from corrective_unlearning.runtime import Runtime

NUM_CLASSES = 4
TARGET = 0


class HandSetModel(nn.Module):
    """Reads pixel (0, 0) as ``50 * label`` and predicts that label. When the 3x3 bottom-right patch is stamped
    (pixel (-1, -1) = 255) it predicts the attack's label instead, unless pixel (0, 1) is 255 (a 'resistant'
    image). The inputs arrive normalised with mean 0 and std 1 (images / 255)."""

    def __init__(self, all_to_all: bool = False):
        super().__init__()
        self.all_to_all = all_to_all
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        pixels = (x * 255).round()
        label = (pixels[:, 0, 0, 0] / 50).round().long().clamp(0, NUM_CLASSES - 1)
        triggered = (pixels[:, 0, -1, -1] == 255) & (pixels[:, 0, 0, 1] != 255)
        attack = (label + 1) % NUM_CLASSES if self.all_to_all else torch.full_like(label, TARGET)
        predicted = torch.where(triggered, attack, label)
        return nn.functional.one_hot(predicted, NUM_CLASSES).float() + 0 * self.dummy


def hand_dataset(resistant: list[int]):
    """16 test images (4 per class, labels 0 1 2 3 0 1 2 3 ...), ``resistant`` ones flagged at pixel (0, 1)."""
    def images(labels):
        x = torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8)
        x[:, 0, 0, 0] = (labels * 50).to(torch.uint8)
        return x
    train_labels, test_labels = torch.arange(64) % NUM_CLASSES, torch.arange(16) % NUM_CLASSES
    test_images = images(test_labels)
    test_images[resistant, 0, 0, 1] = 255
    return from_tensors(images(train_labels), train_labels, test_images, test_labels, mean=(0.0,), std=(1.0,),
                        name="hand")


@pytest.fixture()
def runtime():
    return Runtime(device=torch.device("cpu"), progress=False)


def test_asr_ra_and_c_acc_against_hand_counts(runtime):
    # Non-target test images: the 12 of classes 1-3; resistant: 1 and 6 (non-target) and 4 (target class).
    data = hand_dataset(resistant=[1, 4, 6])
    setting = build_setting(data, "poison", 8, seed=0, runtime=runtime, val_size=8, target=TARGET)
    metrics = evaluate(HandSetModel(), setting, runtime)
    assert metrics["c_acc"] == metrics["test_acc"] == 100.0
    assert metrics["asr"] == pytest.approx(100 * 10 / 12)  # 10 of the 12 non-target images flip to the target
    assert metrics["ra"] == pytest.approx(100 * 2 / 12)  # the two resistant ones keep their true label
    assert metrics["attack_success"] == metrics["asr"]


def test_all_to_all_asr_counts_the_mapped_class_on_every_test_image(runtime):
    data = hand_dataset(resistant=[0, 5, 10])
    setting = build_setting(data, "poison", 8, seed=0, runtime=runtime, val_size=8, target="all-to-all")
    m = setting.manipulated
    assert torch.equal(m.labels[m.manipulated], (m.clean_labels[m.manipulated] + 1) % NUM_CLASSES)
    assert m.params == dict(target="all-to-all", patch_size=3, position="bottom-right", value=255,
                            pattern="square")
    metrics = evaluate(HandSetModel(all_to_all=True), setting, runtime)
    assert metrics["asr"] == pytest.approx(100 * 13 / 16)  # every class has another target: all 16 count
    assert metrics["ra"] == pytest.approx(100 * 3 / 16)
    # a model that ignores the trigger: ASR 0, RA 100
    setting_clean = HandSetModel(all_to_all=True)
    setting_clean.forward = lambda x: nn.functional.one_hot(((x * 255).round()[:, 0, 0, 0] / 50).long(),
                                                            NUM_CLASSES).float()
    assert evaluate(setting_clean, setting, runtime)["asr"] == 0.0


def test_der_from_its_formula():
    before = {"asr": 95.0, "c_acc": 90.0}
    assert defense_effectiveness(before, {"asr": 5.0, "c_acc": 88.0}) == pytest.approx((0.90 - 0.02 + 1) / 2)
    assert defense_effectiveness(before, {"asr": 95.0, "c_acc": 90.0}) == pytest.approx(0.5)
    # a rise of ASR and a gain of accuracy count as zero, never negative
    assert defense_effectiveness(before, {"asr": 99.0, "c_acc": 91.0}) == pytest.approx(0.5)
    assert defense_effectiveness(before, {"asr": 0.0, "c_acc": 90.0}) == pytest.approx(0.975)


def test_clean_label_poison_draws_n_of_the_target_class_and_keeps_labels(runtime):
    data = hand_dataset(resistant=[])
    candidates = torch.arange(8, 64)
    m = manipulate("poison", data, candidates, 6, seed=0, target=2, clean_label=True)
    assert m.size == 6 and (data.train_labels[m.manipulated] == 2).all()
    assert torch.equal(m.labels, data.train_labels), "a clean-label attack changes no label"
    assert m.triggered.sum() == 6 and m.params["clean_label"] is True
    with pytest.raises(ValueError, match=r"n must be in \[0, 14\]"):  # 14 candidates of class 2
        manipulate("poison", data, candidates, 15, seed=0, target=2, clean_label=True)
    with pytest.raises(ValueError, match="clean_label .* needs one target class"):
        manipulate("poison", data, candidates, 4, seed=0, target="all-to-all", clean_label=True)
    with pytest.raises(ValueError, match=r"target: expected int or 'all-to-all', got str 'any'"):
        manipulate("poison", data, candidates, 4, seed=0, target="any")
    with pytest.raises(ValueError, match=r"poison target must be a class in \[0, 3\] or 'all-to-all', got 7"):
        manipulate("poison", data, candidates, 4, seed=0, target=7)


def test_a_trigger_spec_and_the_legacy_patch_keys_do_not_mix():
    data = hand_dataset(resistant=[])
    with pytest.raises(ValueError, match="inside trigger"):
        manipulate("poison", data, torch.arange(8, 64), 4, seed=0, trigger={"name": "patch"}, patch_size=5)
    m = manipulate("poison", data, torch.arange(8, 64), 4, seed=0, trigger={"name": "patch", "size": 2})
    assert m.params == {"target": 0, "trigger": {"name": "patch", "size": 2, "position": "bottom-right",
                                                 "value": 255, "pattern": "square"}}


@pytest.mark.parametrize("spec, message", [
    ({"name": "nope"}, "unknown trigger 'nope'"),
    ({"name": "patch", "sise": 3}, r"unknown parameter\(s\) \['sise'\] for trigger patch"),
    ({"name": "patch", "size": 0}, r"size must be in \[1, inf\], got 0"),
    ({"name": "patch", "value": 300}, r"value must be in \[0, 255\], got 300"),
    ({"size": 3}, "expected a mapping with a name"),
])
def test_bad_trigger_specs_are_refused_when_the_config_loads(spec, message):
    from corrective_unlearning.config import ConfigError
    from corrective_unlearning.manipulations import check_params

    with pytest.raises(ConfigError, match=message):
        check_params("poison", {"trigger": spec})


# ------------------------------------------------------------------------------ class-dependent label noise
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _cifar_like():
    labels = torch.arange(200) % 10
    images = torch.zeros(200, 1, 4, 4, dtype=torch.uint8)
    return from_tensors(images, labels, images[:40], labels[:40], classes=CIFAR10_CLASSES, name="cifar10")


def test_label_noise_default_cifar10_map():
    data = _cifar_like()
    m = manipulate("label_noise", data, torch.arange(200), 10, seed=0)
    sources = data.train_labels[m.manipulated]
    # 10 samples over 5 source classes: two of each of truck, bird, deer, cat, dog
    assert sorted(sources.tolist()) == [2, 2, 3, 3, 4, 4, 5, 5, 9, 9]
    expected = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    assert m.labels[m.manipulated].tolist() == [expected[int(s)] for s in sources]
    changed = torch.nonzero(m.labels != data.train_labels).flatten()
    assert torch.equal(changed, m.manipulated)
    affected = m.test_views["affected"].indices
    assert sorted(set(data.test_labels[affected].tolist())) == [2, 3, 4, 5, 9]


def test_label_noise_explicit_map_by_name_and_errors():
    data = _cifar_like()
    m = manipulate("label_noise", data, torch.arange(200), 5, seed=1, map={"frog": "ship"})
    assert (data.train_labels[m.manipulated] == 6).all() and (m.labels[m.manipulated] == 8).all()
    assert m.params == {"map": {"6": 8}}
    with pytest.raises(ValueError, match="sends class 6 to itself"):
        manipulate("label_noise", data, torch.arange(200), 5, seed=1, map={6: "frog"})
    with pytest.raises(ValueError, match="has 20 candidate samples, fewer than its share 21"):
        manipulate("label_noise", data, torch.arange(200), 21, seed=1, map={6: 8})
    other = hand_dataset(resistant=[])
    with pytest.raises(ValueError, match="default map for \\['cifar10'\\] only"):
        manipulate("label_noise", other, torch.arange(64), 4, seed=0)
