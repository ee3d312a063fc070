"""No manipulation: the clean training set (RUM's own setting, SPEC 7). Labels unchanged, S_m empty, no trigger.

The original model trained on it is the clean model of RUM's study; its forget sets are chosen from the whole
training split by a memorization proxy or by entanglement (grid key ``forget_sets``,
:mod:`corrective_unlearning.forget_sets`), not from S_m, so discovery rates do not apply. Its only size is n = 0.

Test views: ``utility`` is the whole test set, and so is ``affected``: there is no affected domain, but the
report's tables and the oracle rule read ``affected_acc``, which is then simply the clean test accuracy.
"""
from __future__ import annotations

import torch

from ..data import ImageDataset
from . import MANIPULATIONS
from .base import Manipulated, TestView


@MANIPULATIONS.register("none")
def none(dataset: ImageDataset, candidates: torch.Tensor, n: int, seed: int) -> Manipulated:
    """The training set as it is: nothing manipulated (n must be 0)."""
    del candidates, seed  # nothing is chosen
    if n != 0:
        raise ValueError(f"manipulation none changes nothing, so its size n must be 0 (S_m is empty), got {n}; "
                         f"choose forget sets with the grid key forget_sets instead")
    labels = dataset.train_labels.clone()
    all_test = torch.arange(len(dataset.test_labels))
    return Manipulated(
        name="none",
        params={},
        labels=labels,
        clean_labels=dataset.train_labels.clone(),
        manipulated=torch.zeros(0, dtype=torch.long),
        triggered=torch.zeros(len(labels), dtype=torch.bool),
        trigger=None,
        # No affected domain: both views are the whole clean test set (affected_acc = utility_acc = test_acc).
        test_views={"affected": TestView(all_test), "utility": TestView(all_test)},
    )
