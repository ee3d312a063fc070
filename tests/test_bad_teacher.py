"""BadT's loss is the reference's: F.kl_div's default elementwise mean over the B x C entries, T = 1."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from corrective_unlearning.checks import ConfigError
from corrective_unlearning.experiment import build_setting
from corrective_unlearning.runner import make_task
from corrective_unlearning.methods import METHODS
from corrective_unlearning.methods.bad_teacher import bad_teacher_loss
from corrective_unlearning.methods.common import kl_to_teacher
from corrective_unlearning.training import Batch, Recipe

LN2, LN3 = math.log(2), math.log(3)
# Two rows, three classes. Row 0: teacher softmax [1/4, 1/4, 1/2], student uniform:
#   KL = 2 * 1/4 ln(3/4) + 1/2 ln(3/2) = 1/2 ln(9/8).
# Row 1: teacher uniform, student softmax [1/5, 3/5, 1/5]:
#   KL = 1/3 (ln(5/3) + ln(5/9) + ln(5/3)) = 1/3 ln(125/81).
STUDENT = [[0.0, 0.0, 0.0], [0.0, LN3, 0.0]]
TEACHER = [[0.0, 0.0, LN2], [0.0, 0.0, 0.0]]
KL_SUM = 0.5 * math.log(9 / 8) + math.log(125 / 81) / 3
ELEMENTWISE_MEAN = KL_SUM / 6  # F.kl_div's default reduction: the sum over B * C = 2 * 3 entries


def _numpy_kl_mean(student: np.ndarray, teacher: np.ndarray) -> float:
    """sum p (log p - log q) / (B * C), p = softmax(teacher), q = softmax(student), in float64."""
    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return float((np.exp(log_p) * (log_p - log_q)).sum() / teacher.size)


def test_the_reference_reduction_by_hand():
    student, teacher = torch.tensor(STUDENT), torch.tensor(TEACHER)
    assert ELEMENTWISE_MEAN == pytest.approx(0.0339189, abs=1e-7)
    assert float(kl_to_teacher(student, teacher, reduction="mean")) == pytest.approx(ELEMENTWISE_MEAN, rel=1e-6)
    # SCRUB's distillation loss is unchanged: batch mean (sum / B), times T^2
    assert float(kl_to_teacher(student, teacher)) == pytest.approx(KL_SUM / 2, rel=1e-6)
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    got = float(kl_to_teacher(torch.tensor(s), torch.tensor(t), reduction="mean"))
    assert got == pytest.approx(_numpy_kl_mean(s, t), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        kl_to_teacher(student, teacher, reduction="sum")


class Lookup(nn.Module):
    """Logits by row id: ``forward(x)`` returns ``table[x]``, so a test controls every teacher's output."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.tensor(table))

    def forward(self, x):
        return self.table[x]


# Row 0 is a retain sample (target: M_o = GOOD), row 1 a deletion-set sample (target: the random teacher BAD);
# the other rows of each table would give other values if the wrong teacher were taken.
GOOD = [TEACHER[0], [4.0, -4.0, 0.0]]
BAD = [[-3.0, 3.0, 1.0], TEACHER[1]]


def test_the_loss_builder_picks_the_teacher_per_sample_and_takes_the_elementwise_mean():
    is_forget = torch.tensor([False, False, True, False])
    loss = bad_teacher_loss(is_forget, Lookup(GOOD), Lookup(BAD), temperature=1.0)
    value = loss(Lookup(STUDENT), Batch(torch.tensor([0, 1]), None, torch.tensor([3, 2]), 0))
    assert float(value) == pytest.approx(ELEMENTWISE_MEAN, rel=1e-6)


@pytest.mark.parametrize("variant", ["original", "bench"])
def test_badt_optimises_the_reference_loss(synthetic, runtime, monkeypatch, variant):
    setting = build_setting(synthetic, "poison", 20, 0, runtime, val_size=16)
    forget = setting.manipulated.manipulated[:5]
    recipe = Recipe(steps=40, batch_size=32, lr=0.05, crop_padding=1, flip=False)
    task = make_task(setting, Lookup(GOOD), forget, recipe, runtime)
    monkeypatch.setattr(task, "fresh_model", lambda seed=None: Lookup(BAD))
    fitted = {}
    monkeypatch.setattr(task, "fit", lambda model, indices, recipe=None, **kw: fitted.update(
        indices=indices, recipe=recipe, **kw))
    METHODS.get("badt")(task, {"variant": variant})

    retain_row = int(task.retain_idx[0])
    batch = Batch(torch.tensor([0, 1]), None, torch.tensor([retain_row, int(forget[0])]), 0)
    value = fitted["loss_fn"](Lookup(STUDENT), batch)
    assert float(value) == pytest.approx(ELEMENTWISE_MEAN, rel=1e-6)
    used = fitted["recipe"]
    if variant == "original":  # Adam lr 1e-4, one epoch over S_f + round(0.3 * 363) = 109 retain samples
        assert len(task.retain_idx) == 384 - 16 - 5
        assert (used.optimizer, used.lr, used.schedule, used.steps) == ("adam", 1e-4, "constant", 1)
        assert len(fitted["indices"]) == 5 + 109
    else:  # recipe A's SGD at its lr, a quarter of its steps, on all training data
        assert (used.optimizer, used.lr, used.steps) == ("sgd", 0.05, 10)
        assert len(fitted["indices"]) == 384 - 16


def test_an_unknown_variant_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="method badt: variant must be 'original' or 'bench', got 'fast'"):
        METHODS.get("badt").resolve({"variant": "fast"})
