"""BadNet poisoning: n samples get a square trigger patch and the target label (SPEC section 2)."""
from __future__ import annotations

import torch

from ..data import ImageDataset
from . import MANIPULATIONS
from .base import Manipulated, TestView, Trigger, choose


@MANIPULATIONS.register("poison")
def poison(
    dataset: ImageDataset,
    candidates: torch.Tensor,
    n: int,
    seed: int,
    target: int = 0,
    patch_size: int = 3,
    position: str = "bottom-right",
    value: int = 255,
    pattern: str = "square",
) -> Manipulated:
    """Chosen uniformly from all candidates, as in the reference: some were of the target class already."""
    if not 0 <= target < dataset.num_classes:
        raise ValueError(f"poison target must be a class in [0, {dataset.num_classes - 1}], got {target}")
    trigger = Trigger(size=patch_size, position=position, value=value, pattern=pattern)
    chosen = choose(candidates, n, seed, "poison")
    labels = dataset.train_labels.clone()
    labels[chosen] = target
    triggered = torch.zeros(len(labels), dtype=torch.bool)
    triggered[chosen] = True
    all_test = torch.arange(len(dataset.test_labels))
    nontarget = torch.nonzero(dataset.test_labels != target).flatten()
    return Manipulated(
        name="poison",
        params=dict(target=target, patch_size=patch_size, position=position, value=value, pattern=pattern),
        labels=labels,
        clean_labels=dataset.train_labels.clone(),
        manipulated=chosen,
        triggered=triggered,
        trigger=trigger,
        test_views={
            "affected": TestView(all_test, triggered=True),
            "affected_nontarget": TestView(nontarget, triggered=True),
            "utility": TestView(all_test),
        },
    )
