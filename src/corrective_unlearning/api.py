"""The practitioner's entry point: your classifier, your training data, the indices you flagged.

    from corrective_unlearning.api import correct
    fixed, report = correct(model, x_train, y_train, flagged=[12, 507, 9031], method="ssd")

Images are uint8 ``[N, C, H, W]``, exactly as the model was trained on them (any trigger already in the pixels).
A stratified validation split is held out of the unflagged samples to score the result without test data.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import torch
from torch import nn

from .data.base import channel_stats, stratified_split, validate_images
from .evaluation import accuracy, predict
from .methods import METHODS, Task
from .runtime import Runtime, Stopwatch
from .training import ImageBank, Recipe


def correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    flagged: Sequence[int] | torch.Tensor,
    *,
    method: str = "ssd",
    hparams: dict | None = None,
    recipe: Recipe | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    val_size: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> tuple[nn.Module, dict]:
    """Return a corrected copy of ``model`` and a report of what changed (``model`` itself is untouched)."""
    labels = torch.as_tensor(labels).long()
    num_classes = int(labels.max()) + 1
    validate_images(images, labels, "training", num_classes)
    flagged = torch.as_tensor(flagged, dtype=torch.int64).unique()
    if len(flagged) == 0 or int(flagged.min()) < 0 or int(flagged.max()) >= len(labels):
        raise ValueError(f"flagged: expected a non-empty set of indices in [0, {len(labels) - 1}], got "
                         f"{len(flagged)} indices spanning [{int(flagged.min()) if len(flagged) else '-'}, "
                         f"{int(flagged.max()) if len(flagged) else '-'}]")
    # A user's model may .view() its activations, which channels_last inputs break: keep the usual layout.
    runtime = dataclasses.replace(Runtime.create(device, progress=False), channels_last=False)
    if mean is None or std is None:
        mean, std = channel_stats(images)
    unflagged = torch.nonzero(~torch.isin(torch.arange(len(labels)), flagged)).flatten()
    val_size = round(0.05 * len(unflagged)) if val_size is None else val_size
    kept, held = stratified_split(labels[unflagged], val_size, seed)
    train_idx, val_idx = unflagged[kept], unflagged[held]

    bank = ImageBank(images, mean, std, runtime.device, channels_last=runtime.channels_last)
    original = runtime.prepare(copy.deepcopy(model)).eval()
    task = Task(original=original, bank=bank, labels=labels.to(runtime.device), forget_idx=flagged,
                retain_idx=train_idx, val_idx=val_idx, val_labels=labels[val_idx], num_classes=num_classes,
                recipe=recipe or Recipe(), runtime=runtime, seed=seed,
                _triggered=torch.zeros(len(labels), dtype=torch.bool, device=runtime.device))
    with Stopwatch(runtime) as clock:
        corrected = METHODS.get(method)(task, hparams)

    def scores(m: nn.Module) -> dict:
        flagged_pred = predict(m, bank, flagged, runtime)
        return {"val_acc": accuracy(predict(m, bank, val_idx, runtime), labels[val_idx]),
                "flagged_agree_with_given_labels": accuracy(flagged_pred, labels[flagged])}, flagged_pred

    before, pred_before = scores(original)
    after, pred_after = scores(corrected)
    report = {"method": method, "hparams": METHODS.get(method).resolve(hparams), "seconds": clock.seconds,
              "flagged": len(flagged), "validation_size": len(val_idx), "before": before, "after": after,
              "flagged_prediction_changed": 100.0 * float((pred_before != pred_after).double().mean()),
              "method_notes": dict(task.notes)}
    return corrected, report
