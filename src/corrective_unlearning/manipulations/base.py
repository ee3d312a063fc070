"""What a manipulation produces: corrupted labels, the index set S_m, trigger flags, and the test views."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..triggers import Trigger


@dataclass(frozen=True)
class TestView:
    """A slice of the test set scored against its *clean* labels, optionally with the trigger stamped."""

    indices: torch.Tensor
    triggered: bool = False


@dataclass(frozen=True)
class Manipulated:
    """The manipulated training set. Label tensors are fresh copies: shared arrays are never mutated."""

    name: str
    params: dict
    labels: torch.Tensor  # labels the model trains on, over the whole training split (validation untouched)
    clean_labels: torch.Tensor
    manipulated: torch.Tensor  # S_m, sorted indices into the training split
    triggered: torch.Tensor  # bool [N]: which training images carry the trigger
    trigger: Trigger | None  # rendering of the training images that carry it; the test bank's: for_test()
    test_views: dict[str, TestView] = field(default_factory=dict)
    affected_view: str = "affected"  # the view over D_m
    utility_view: str = "utility"  # the test data outside D_m

    @property
    def size(self) -> int:
        return len(self.manipulated)


def index_hash(indices: torch.Tensor) -> str:
    """A short, order-independent fingerprint of an index set, recorded with every run."""
    values = np.sort(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def choose(candidates: torch.Tensor, n: int, seed: int, what: str) -> torch.Tensor:
    """A seeded uniform choice of ``n`` distinct candidates, returned sorted."""
    if not 0 <= n <= len(candidates):
        raise ValueError(f"{what}: n must be in [0, {len(candidates)}] (the candidates available), got {n}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.asarray(candidates), size=n, replace=False)
    return torch.from_numpy(np.sort(chosen)).long()


def resolve_class(value: int | str, classes: tuple[str, ...]) -> int:
    """Accept a class index or a class name."""
    if isinstance(value, str) and not value.isdigit():
        if value not in classes:
            raise ValueError(f"unknown class {value!r}; expected one of {list(classes)}")
        return classes.index(value)
    index = int(value)
    if not 0 <= index < len(classes):
        raise ValueError(f"class index must be in [0, {len(classes) - 1}], got {index}")
    return index
