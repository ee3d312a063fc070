"""Interclass confusion: n/2 samples of class A relabelled B and n/2 of B relabelled A (SPEC section 2)."""
from __future__ import annotations

import torch

from ..data import ImageDataset
from . import MANIPULATIONS
from .base import Manipulated, TestView, choose, resolve_class

# Default confused pairs. CIFAR-100: the paper's maple/oak (47, 52); the reference code's pair is maple/orange
# (47, 53), selectable with pair=reference. Fashion-MNIST: pullover/coat, two visually close classes, as cat/dog.
DEFAULT_PAIRS = {"cifar10": (3, 5), "cifar100": (47, 52), "fashion-mnist": (2, 4)}
NAMED_PAIRS = {("cifar100", "reference"): (47, 53), ("cifar100", "paper"): (47, 52)}


def resolve_pair(dataset: ImageDataset, pair) -> tuple[int, int]:
    if pair is None:
        pair = DEFAULT_PAIRS.get(dataset.name, (0, 1))
    elif isinstance(pair, str):
        if (dataset.name, pair) not in NAMED_PAIRS:
            known = [name for (ds, name) in NAMED_PAIRS if ds == dataset.name]
            raise ValueError(f"unknown pair {pair!r} for {dataset.name}; named pairs: {known}, or give two classes")
        pair = NAMED_PAIRS[(dataset.name, pair)]
    if len(pair) != 2:
        raise ValueError(f"interclass pair must name two classes, got {pair!r}")
    a, b = (resolve_class(c, dataset.classes) for c in pair)
    if a == b:
        raise ValueError(f"interclass pair must name two different classes, got {a} twice")
    return a, b


@MANIPULATIONS.register("interclass")
def interclass(
    dataset: ImageDataset,
    candidates: torch.Tensor,
    n: int,
    seed: int,
    pair=None,
    selection: str = "random",
) -> Manipulated:
    """``selection='random'`` (seeded) or ``'first'`` (the reference: lowest indices of each class)."""
    if n % 2:
        raise ValueError(f"interclass confusion relabels n/2 samples of each class; n must be even, got {n}")
    if selection not in ("random", "first"):
        raise ValueError(f"selection must be 'random' or 'first', got {selection!r}")
    a, b = resolve_pair(dataset, pair)
    labels = dataset.train_labels.clone()
    chosen = []
    for offset, (source, destination) in enumerate(((a, b), (b, a))):
        pool = candidates[dataset.train_labels[candidates] == source]
        if selection == "first":
            if n // 2 > len(pool):
                raise ValueError(f"interclass: n/2 = {n // 2} exceeds the {len(pool)} samples of class {source}")
            picked = torch.sort(pool).values[: n // 2]
        else:
            picked = choose(pool, n // 2, seed + offset, f"interclass class {source}")
        labels[picked] = destination
        chosen.append(picked)
    test_labels = dataset.test_labels
    in_pair = (test_labels == a) | (test_labels == b)
    return Manipulated(
        name="interclass",
        params=dict(pair=[a, b], selection=selection),
        labels=labels,
        clean_labels=dataset.train_labels.clone(),
        manipulated=torch.sort(torch.cat(chosen)).values,
        triggered=torch.zeros(len(labels), dtype=torch.bool),
        trigger=None,
        test_views={
            "affected": TestView(torch.nonzero(in_pair).flatten()),
            "utility": TestView(torch.nonzero(~in_pair).flatten()),
        },
    )
