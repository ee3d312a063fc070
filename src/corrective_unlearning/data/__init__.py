"""Data sources: each module registers a loader returning an :class:`ImageDataset`.

Adding a dataset is one file in this folder that decorates a loader with ``@SOURCES.register("name")``
and is imported below.
"""
from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from .base import ImageDataset, stratified_split
from .locate import DataNotFoundError

SOURCES: Registry[Callable[..., ImageDataset]] = Registry("dataset")


def load_dataset(name: str, **options: Any) -> ImageDataset:
    """Load a registered dataset, e.g. ``load_dataset("cifar10", data_dir="~/data", download=True)``."""
    return SOURCES.get(name)(**options)


from . import cifar, fashion_mnist, svhn, synthetic, tensors  # noqa: E402,F401  (registration)

__all__ = ["ImageDataset", "DataNotFoundError", "SOURCES", "load_dataset", "stratified_split"]
