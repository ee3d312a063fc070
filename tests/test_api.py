"""The practitioner's entry point on the synthetic source."""
from __future__ import annotations

import pytest
import torch

from corrective_unlearning.api import correct
from corrective_unlearning.models import create_model
from corrective_unlearning.training import Recipe


def test_correct_returns_a_new_model_and_a_report(synthetic):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flagged = torch.arange(10)
    fixed, report = correct(model, synthetic.train_images, synthetic.train_labels, flagged, method="cf",
                            hparams={"steps": 5}, recipe=Recipe(steps=20, batch_size=32), device="cpu")
    assert fixed is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report["flagged"] == 10 and report["validation_size"] == round(0.05 * (len(synthetic.train_labels) - 10))
    assert 0 <= report["after"]["val_acc"] <= 100 and report["seconds"] > 0
    assert 0 <= report["flagged_prediction_changed"] <= 100


def test_correct_rejects_bad_input(synthetic):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    with pytest.raises(ValueError, match="flagged"):
        correct(model, synthetic.train_images, synthetic.train_labels, [10_000], device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        correct(model, synthetic.train_images.float(), synthetic.train_labels, [1], device="cpu")


class ViewingNet(torch.nn.Module):
    """A user's model that flattens with .view(), which fails on channels_last activations."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = torch.nn.LazyLinear(num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.head(x.view(x.size(0), -1))


def test_correct_keeps_the_users_memory_layout(synthetic):
    model = ViewingNet(synthetic.in_channels, synthetic.num_classes)
    model(synthetic.train_images[:2].float())  # materialise the lazy layer
    fixed, _ = correct(model, synthetic.train_images, synthetic.train_labels, torch.arange(10), method="cf",
                       hparams={"steps": 3}, recipe=Recipe(steps=10, batch_size=32), device="cpu")
    assert fixed.conv.weight.is_contiguous()


def test_correct_reports_what_ssd_did(synthetic):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    args = (model, synthetic.train_images, synthetic.train_labels, torch.arange(32))
    notes = {alpha: correct(*args, method="ssd", hparams={"alpha": alpha, "batch_size": 16}, device="cpu")[1]
             ["method_notes"] for alpha in (0.0, 1e30)}
    total = sum(p.numel() for p in model.parameters())
    # alpha 0 selects every weight that S_f moves at all; 1e30 only those the data never moves (I_D == 0).
    assert total >= notes[0.0]["dampened_weights"] > notes[1e30]["dampened_weights"] >= 0
    assert notes[0.0]["importance_ratio"] > 0
    assert notes[0.0]["importance_ratio"] == pytest.approx(notes[1e30]["importance_ratio"])


# ------------------------------------------------------------------------------------------------ flagged, labels
@pytest.fixture
def probe(monkeypatch):
    """A method that records what it was given and returns the original unchanged."""
    from corrective_unlearning.methods import METHODS, Method

    seen = {}

    def run(task, hp):
        seen.update(forget=task.forget_idx.clone(), recipe=task.recipe, labels_device=task.labels.device)
        return task.copy_original()

    monkeypatch.setitem(METHODS._entries, "probe", Method("probe", run, {}, {}, "records its task"))
    return seen


def test_a_boolean_mask_is_taken_as_a_mask(synthetic, probe):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    mask = torch.zeros(384, dtype=torch.bool)
    mask[[3, 7, 200]] = True
    _, report = correct(model, synthetic.train_images, synthetic.train_labels, mask, method="probe", device="cpu")
    assert probe["forget"].tolist() == [3, 7, 200] and report["flagged"] == 3
    assert report["validation_size"] == 19  # round(0.05 * 381) = round(19.05)
    as_list = [i in (5, 9) for i in range(384)]  # a list of Python booleans is a mask too
    _, report = correct(model, synthetic.train_images, synthetic.train_labels, as_list, method="probe", device="cpu")
    assert probe["forget"].tolist() == [5, 9] and report["flagged"] == 2


def test_a_boolean_mask_of_the_wrong_length_and_float_indices_are_refused(synthetic):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    args = (model, synthetic.train_images, synthetic.train_labels)
    with pytest.raises(ValueError, match="boolean mask of length 384 .* got one of length 10"):
        correct(*args, torch.ones(10, dtype=torch.bool), device="cpu")
    with pytest.raises(ValueError, match="integer indices or a boolean mask, got dtype torch.float32"):
        correct(*args, torch.tensor([1.0, 2.0]), device="cpu")
    with pytest.raises(ValueError, match="got dtype torch.float32"):
        correct(*args, [1.5, 2.0], device="cpu")
    with pytest.raises(ValueError, match="got dtype torch.float64"):
        correct(*args, torch.tensor([3.0], dtype=torch.float64), device="cpu")
    with pytest.raises(ValueError, match="1-D"):
        correct(*args, torch.zeros(2, 2, dtype=torch.int64), device="cpu")
    with pytest.raises(ValueError, match="non-empty"):
        correct(*args, [], device="cpu")
    with pytest.raises(ValueError, match="non-empty"):
        correct(*args, torch.zeros(384, dtype=torch.bool), device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_labels_and_flagged_on_cuda(synthetic, probe):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    labels, flagged = synthetic.train_labels.cuda(), torch.tensor([4, 8]).cuda()
    _, report = correct(model, synthetic.train_images, labels, flagged, method="probe", device="cpu")
    assert probe["forget"].tolist() == [4, 8] and report["validation_size"] == 19  # round(0.05 * 382)
    assert probe["labels_device"].type == "cpu"  # the task's labels are on the device it runs on
    fixed, report = correct(model, synthetic.train_images, labels, flagged, method="cf", hparams={"steps": 2},
                            recipe=Recipe(steps=4, batch_size=32), device="cuda")
    assert report["flagged"] == 2 and next(fixed.parameters()).is_cuda


def test_user_data_is_not_augmented_unless_asked(synthetic, probe):
    model = create_model("small_cnn", synthetic.num_classes, synthetic.in_channels)
    args = (model, synthetic.train_images, synthetic.train_labels, [1, 2])
    correct(*args, method="probe", device="cpu")
    assert (probe["recipe"].crop_padding, probe["recipe"].flip) == (0, False)
    assert probe["recipe"].steps == 4000 and probe["recipe"].lr == 0.025  # otherwise recipe A's defaults
    correct(*args, method="probe", device="cpu", augment=True)
    assert (probe["recipe"].crop_padding, probe["recipe"].flip) == (4, True)  # the reference's CIFAR augmentation
    given = Recipe(steps=10, crop_padding=2, flip=True)
    correct(*args, method="probe", device="cpu", recipe=given)
    assert probe["recipe"] == given  # a recipe given is used as it is
