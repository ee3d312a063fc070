"""Random label noise: n samples get a uniformly random *wrong* label (SPEC section 2, from the REM paper)."""
from __future__ import annotations

import numpy as np
import torch

from ..data import ImageDataset
from . import MANIPULATIONS
from .base import Manipulated, TestView, choose


@MANIPULATIONS.register("random_labels")
def random_labels(dataset: ImageDataset, candidates: torch.Tensor, n: int, seed: int) -> Manipulated:
    """``y -> (y + U{1..C-1}) mod C``: never the true label, for any number of classes."""
    num_classes = dataset.num_classes
    if num_classes < 2:
        raise ValueError("random label noise needs at least two classes")
    chosen = choose(candidates, n, seed, "random_labels")
    shift = np.random.default_rng([seed, 1]).integers(1, num_classes, size=len(chosen))
    labels = dataset.train_labels.clone()
    labels[chosen] = (labels[chosen] + torch.from_numpy(shift)) % num_classes
    all_test = torch.arange(len(dataset.test_labels))
    return Manipulated(
        name="random_labels",
        params={},
        labels=labels,
        clean_labels=dataset.train_labels.clone(),
        manipulated=chosen,
        triggered=torch.zeros(len(labels), dtype=torch.bool),
        trigger=None,
        # D_m is the whole input domain: the affected view and the utility view are both the full test set.
        test_views={"affected": TestView(all_test), "utility": TestView(all_test)},
    )
