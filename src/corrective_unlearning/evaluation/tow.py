"""ToW, the tug of war of RUM (SPEC section 7): how close an unlearned model ``u`` stays to a reference ``r``.

    ToW(u, r) = (1 - |A_f(u) - A_f(r)| / 100) * (1 - |A_r(u) - A_r(r)| / 100) * (1 - |A_test(u) - A_test(r)| / 100)

with accuracies in percent. :func:`tug_of_war` returns it **in percent** too (100 x the product: 100 = the same
three accuracies as the reference), like every other metric of a record.

The accuracies (:func:`tow_accuracies`), all in percent, all from unshuffled, index-keyed predictions
(:func:`.predict.predict`), training samples scored as the model saw them (with their trigger where they carry one):

- ``forget_given``: on S_f against its *given* labels (the ones trained on): RUM's A_f.
- ``forget_clean``: on S_f against its *clean* labels: in the corrective setting S_f's given labels are wrong,
  so this is the A_f that asks "does it predict the truth on S_f as the reference does".
- ``retain_given``: on a seeded subsample of the retain set S_tr \\ S_f (:func:`retain_sample`, for speed)
  against the given labels (undiscovered manipulated samples keep their corrupted labels, as they are trained).
- ``test``: clean test accuracy (every test image, no trigger, clean labels).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..runtime import Runtime
from .metrics import accuracy
from .predict import predict

FORGET_GIVEN, FORGET_CLEAN, RETAIN_GIVEN, TEST = "forget_given", "forget_clean", "retain_given", "test"
FORGET_LABELS = (FORGET_GIVEN, FORGET_CLEAN)


def tug_of_war(u: Mapping[str, float], r: Mapping[str, float], forget: str = FORGET_GIVEN) -> float:
    """ToW of accuracies ``u`` against reference accuracies ``r`` (both in percent, keyed as in
    :func:`tow_accuracies`), in percent. ``forget`` picks A_f: ``forget_given`` (RUM) or ``forget_clean``.
    NaN when any of the six accuracies is undefined (an empty set)."""
    if forget not in FORGET_LABELS:
        raise ValueError(f"forget must be one of {FORGET_LABELS}, got {forget!r}")
    product = 1.0
    for key in (forget, RETAIN_GIVEN, TEST):
        a, b = u[key], r[key]
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            return float("nan")
        product *= 1.0 - abs(float(a) - float(b)) / 100.0
    return 100.0 * product


def retain_sample(retain_idx: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """A seeded uniform subsample of ``size`` retain indices, sorted (all of them when ``size`` is None or at
    least their number). Seeded by the setting's seed, so every model of one deletion set is scored on the same
    samples."""
    retain_idx = torch.sort(retain_idx.cpu()).values
    if size is None or size >= len(retain_idx):
        return retain_idx
    chosen = np.random.default_rng([seed, 23]).choice(len(retain_idx), size=size, replace=False)
    return retain_idx[torch.from_numpy(np.sort(chosen))]


def tow_accuracies(model: nn.Module, setting, forget: torch.Tensor, retain: torch.Tensor, runtime: Runtime,
                   test_acc: float | None = None) -> dict[str, float]:
    """The four accuracies ToW needs (see the module docstring). ``setting`` is an
    :class:`~corrective_unlearning.experiment.Setting`; ``retain`` the retain indices to score (the subsample);
    ``test_acc``: the model's clean test accuracy when it is already known (the grid's ``test_acc`` metric, the
    same predictions), to skip one pass over the test set."""
    m = setting.manipulated
    triggered = m.triggered
    forget, retain = forget.cpu(), retain.cpu()
    forget_pred = predict(model, setting.train_bank, forget, runtime, stamp=triggered[forget])
    retain_pred = predict(model, setting.train_bank, retain, runtime, stamp=triggered[retain])
    if test_acc is None:
        every = torch.arange(len(setting.dataset.test_labels))
        test_acc = accuracy(predict(model, setting.test_bank, every, runtime), setting.dataset.test_labels)
    return {FORGET_GIVEN: accuracy(forget_pred, m.labels[forget]),
            FORGET_CLEAN: accuracy(forget_pred, m.clean_labels[forget]),
            RETAIN_GIVEN: accuracy(retain_pred, m.labels[retain]),
            TEST: float(test_acc)}
