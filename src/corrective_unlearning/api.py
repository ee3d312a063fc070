"""The practitioner's entry point: your classifier, your training data, the indices you flagged.

    from corrective_unlearning.api import correct
    fixed, report = correct(model, x_train, y_train, flagged=[12, 507, 9031], method="ssd")

Images are uint8 ``[N, C, H, W]``, exactly as the model was trained on them (any trigger already in the pixels);
labels are int64 ``[N]`` on any device. ``flagged`` is either integer indices into the N samples or a boolean mask
of length N. A stratified validation split (5% of the unflagged samples unless ``val_size`` says otherwise) is held
out to score the result without test data. Without a ``recipe``, methods that train use recipe A without data
augmentation (no random crops, no flips): pass ``augment=True`` for the reference's CIFAR crop-and-flip.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import torch
from torch import nn

from .config import default_val_size
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
    augment: bool = False,
    device: str = "auto",
    seed: int = 0,
) -> tuple[nn.Module, dict]:
    """Return a corrected copy of ``model`` and a report of what changed (``model`` itself is untouched).

    ``flagged``: the indices of the samples found to be manipulated, or a boolean mask of length N (float
    indices are refused). ``recipe``: the training recipe of methods that train; by default recipe A's
    optimiser and schedule without augmentation, or with the reference's random crop (padding 4) and horizontal
    flip when ``augment`` is true (``augment`` is not read when a recipe is given). ``val_size``: samples held out
    for validation, default 5% of the unflagged ones. ``labels`` may live on any device.
    """
    labels = torch.as_tensor(labels).cpu().long()  # split and indexed on the CPU; the task gets a device copy
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    validate_images(images, labels, "training", num_classes)
    flagged = _flagged_indices(flagged, len(labels))
    # A user's model may .view() its activations, which channels_last inputs break: keep the usual layout.
    runtime = dataclasses.replace(Runtime.create(device, progress=False), channels_last=False)
    if mean is None or std is None:
        mean, std = channel_stats(images)
    unflagged = torch.nonzero(~torch.isin(torch.arange(len(labels)), flagged)).flatten()
    val_size = default_val_size(len(unflagged)) if val_size is None else val_size
    kept, held = stratified_split(labels[unflagged], val_size, seed)
    train_idx, val_idx = unflagged[kept], unflagged[held]

    bank = ImageBank(images, mean, std, runtime.device, channels_last=runtime.channels_last)
    original = runtime.prepare(copy.deepcopy(model)).eval()
    task = Task(original=original, bank=bank, labels=labels.to(runtime.device), forget_idx=flagged,
                retain_idx=train_idx, val_idx=val_idx, val_labels=labels[val_idx], num_classes=num_classes,
                recipe=recipe or (Recipe() if augment else Recipe(crop_padding=0, flip=False)),
                runtime=runtime, seed=seed,
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


def _flagged_indices(flagged, n: int) -> torch.Tensor:
    """Sorted unique int64 CPU indices from integer indices or a boolean mask of length ``n``; anything else is a
    ValueError that says what was received."""
    flagged = torch.as_tensor(flagged).cpu()
    if flagged.dim() > 1:
        raise ValueError(f"flagged: expected a 1-D set of indices or a boolean mask, got shape {tuple(flagged.shape)}")
    flagged = flagged.reshape(-1)
    if flagged.dtype == torch.bool:
        if len(flagged) != n:
            raise ValueError(f"flagged: a boolean mask of length {n} (one entry per sample) is expected, got one of "
                             f"length {len(flagged)}")
        flagged = torch.nonzero(flagged).flatten()
    elif len(flagged) and (flagged.is_floating_point() or flagged.is_complex()):
        raise ValueError(f"flagged: expected integer indices or a boolean mask, got dtype {flagged.dtype}")
    flagged = flagged.to(torch.int64).unique()
    if len(flagged) == 0 or int(flagged.min()) < 0 or int(flagged.max()) >= n:
        raise ValueError(f"flagged: expected a non-empty set of indices in [0, {n - 1}], got "
                         f"{len(flagged)} indices spanning [{int(flagged.min()) if len(flagged) else '-'}, "
                         f"{int(flagged.max()) if len(flagged) else '-'}]")
    return flagged
