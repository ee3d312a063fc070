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
