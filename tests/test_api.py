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
