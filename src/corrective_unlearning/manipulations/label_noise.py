"""Class-dependent label noise: n samples of the map's source classes get the class the map sends them to.

The default map for CIFAR-10 is the standard asymmetric noise of the label-noise literature (Patrini et al. 2017):
truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog. Any dataset takes an explicit map in the config,
by class index or name: ``params: {map: {pullover: coat, coat: pullover, shirt: t-shirt/top}}``. The n samples are
split evenly over the source classes (the first classes in the map's order take the remainder), each drawn
uniformly (seeded) from its class's candidates.

Test views: ``affected`` is the test images of the source classes (clean labels), ``utility`` the others.
"""
from __future__ import annotations

import torch

from ..data import ImageDataset
from . import MANIPULATIONS
from .base import Manipulated, TestView, choose, resolve_class

DEFAULT_MAPS = {"cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}}


def resolve_map(dataset: ImageDataset, mapping: dict | None) -> dict[int, int]:
    if mapping is None:
        if dataset.name not in DEFAULT_MAPS:
            raise ValueError(f"label_noise has a default map for {sorted(DEFAULT_MAPS)} only; give one for "
                             f"{dataset.name}, e.g. map: {{0: 6, 6: 0}} (class indices or names)")
        return dict(DEFAULT_MAPS[dataset.name])
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"label_noise map must be a non-empty mapping source class -> noisy class, got {mapping!r}")
    resolved = {resolve_class(source, dataset.classes): resolve_class(dest, dataset.classes)
                for source, dest in mapping.items()}
    same = [source for source, dest in resolved.items() if source == dest]
    if same:
        raise ValueError(f"label_noise map sends class {same[0]} to itself: a noisy label must differ")
    if len(resolved) != len(mapping):
        raise ValueError(f"label_noise map names a source class twice (by index and by name?): {mapping!r}")
    return resolved


@MANIPULATIONS.register("label_noise")
def label_noise(dataset: ImageDataset, candidates: torch.Tensor, n: int, seed: int,
                map: dict | None = None) -> Manipulated:  # noqa: A002  (the config's word)
    mapping = resolve_map(dataset, map)
    sources = list(mapping)
    shares = [n // len(sources) + (i < n % len(sources)) for i in range(len(sources))]
    labels = dataset.train_labels.clone()
    chosen = []
    for offset, (source, share) in enumerate(zip(sources, shares)):
        pool = candidates[dataset.train_labels[candidates] == source]
        if share > len(pool):
            raise ValueError(f"label_noise: class {source} has {len(pool)} candidate samples, fewer than its share "
                             f"{share} of n = {n}")
        picked = choose(pool, share, seed + offset, f"label_noise class {source}")
        labels[picked] = mapping[source]
        chosen.append(picked)
    in_sources = torch.isin(dataset.test_labels, torch.tensor(sources))
    return Manipulated(
        name="label_noise",
        params={"map": {str(source): dest for source, dest in mapping.items()}},
        labels=labels,
        clean_labels=dataset.train_labels.clone(),
        manipulated=torch.sort(torch.cat(chosen)).values,
        triggered=torch.zeros(len(labels), dtype=torch.bool),
        trigger=None,
        test_views={"affected": TestView(torch.nonzero(in_sources).flatten()),
                    "utility": TestView(torch.nonzero(~in_sources).flatten())},
    )
