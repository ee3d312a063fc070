"""User data: tensors in memory (:func:`from_tensors`) or a ``.npz``/``.pt`` file holding them (``tensors``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import SOURCES
from .base import ImageDataset, channel_stats, content_checksum

KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def from_tensors(
    train_images,
    train_labels,
    test_images,
    test_labels,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str = "tensors",
) -> ImageDataset:
    """Wrap user arrays: images uint8 ``[N, C, H, W]``, labels integer ``[N]``.

    Mean/std default to the per-channel statistics of the training images.
    """
    train_images, test_images = torch.as_tensor(train_images), torch.as_tensor(test_images)
    train_labels, test_labels = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    if classes is None:
        classes = [str(c) for c in range(int(max(train_labels.max(), test_labels.max())) + 1)]
    if train_images.dtype == torch.uint8 and train_images.dim() == 4 and (mean is None or std is None):
        measured_mean, measured_std = channel_stats(train_images)
        mean, std = mean or measured_mean, std or measured_std
    return ImageDataset(
        name=name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        classes=tuple(classes),
        mean=tuple(mean or ()),
        std=tuple(std or ()),
        checksum=content_checksum(train_images, train_labels, test_images, test_labels),
        origin="tensors",
    )


@SOURCES.register("tensors")
def load_tensor_file(path=None, **_ignored) -> ImageDataset:
    """A ``.npz`` or ``.pt`` file with arrays train_images, train_labels, test_images, test_labels (+ classes)."""
    if path is None:
        raise ValueError("dataset 'tensors' needs dataset.path: a .npz or .pt file with " + ", ".join(KEYS))
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        arrays = torch.load(path, map_location="cpu", weights_only=True)
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; expected {list(KEYS)} (+ optional classes, mean, std)")
    extras = {k: [x.item() if hasattr(x, "item") else x for x in arrays[k]] for k in ("classes", "mean", "std")
              if k in arrays}
    return from_tensors(*(arrays[k] for k in KEYS), name=path.stem, **extras)
