"""Manipulations of the training set. Each module registers one ``apply`` function:

    apply(dataset, candidates, n, seed, **params) -> Manipulated

``candidates`` are the training indices the adversary may touch (the validation split is excluded). Adding a
manipulation is one file here that decorates its function with ``@MANIPULATIONS.register("name")``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..data import ImageDataset
from ..registry import Registry
from .base import Manipulated, TestView, Trigger, index_hash

MANIPULATIONS: Registry[Callable[..., Manipulated]] = Registry("manipulation")


def manipulate(
    name: str, dataset: ImageDataset, candidates: torch.Tensor, n: int, seed: int, **params: Any
) -> Manipulated:
    return MANIPULATIONS.get(name)(dataset, candidates, n, seed, **params)


from . import interclass, poison, random_labels  # noqa: E402,F401  (registration)

__all__ = ["MANIPULATIONS", "Manipulated", "TestView", "Trigger", "index_hash", "manipulate"]
