"""Backdoor poisoning: n samples carry a trigger and get the attack's target label (SPEC section 2).

The trigger is any registered one (:mod:`corrective_unlearning.triggers`): ``trigger: {name: blend, alpha: 0.2}``.
Without ``trigger``, the legacy keys ``patch_size``, ``position``, ``value`` and ``pattern`` describe BadNets' patch,
and the recorded parameters (hence cache keys and cell ids) are exactly those of the configs written before
triggers were a registry. Options, each recorded only when set:

- ``target: all-to-all``: every poisoned sample of class y is labelled (y + 1) mod C (BackdoorBench's all-to-all).
- ``clean_label: true`` (SIG, label-consistent): the n poisoned samples are drawn from the target class and keep
  their labels; S_m is those samples, whose given labels are correct.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

from ..data import ImageDataset
from ..triggers import ALL_TO_ALL, TriggerContext, attack_labels, build_trigger
from ..triggers.patch import Patch
from . import MANIPULATIONS
from .base import Manipulated, TestView, choose

LEGACY_PATCH = dict(patch_size=3, position="bottom-right", value=255, pattern="square")


def _check_target(target, num_classes: int) -> None:
    if target == ALL_TO_ALL:
        return
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
        raise ValueError(f"poison target must be a class in [0, {num_classes - 1}] or '{ALL_TO_ALL}', "
                         f"got {target!r}")


@MANIPULATIONS.register("poison")
def poison(
    dataset: ImageDataset,
    candidates: torch.Tensor,
    n: int,
    seed: int,
    target: int | Literal["all-to-all"] = 0,
    patch_size: int = 3,
    position: str = "bottom-right",
    value: int = 255,
    pattern: str = "square",
    trigger: dict | None = None,
    clean_label: bool = False,
    _surrogate: Callable[[], torch.nn.Module] | None = None,
) -> Manipulated:
    """Chosen uniformly from all candidates, as in the reference: some were of the target class already.
    ``_surrogate`` (not a config key): a clean model on demand, for triggers computed against one."""
    _check_target(target, dataset.num_classes)
    legacy = dict(patch_size=patch_size, position=position, value=value, pattern=pattern)
    if trigger is not None and legacy != LEGACY_PATCH:
        raise ValueError("poison: give the patch's options inside trigger: {name: patch, size: ..., position: ..., "
                         f"value: ..., pattern: ...}}, not beside it (got trigger={trigger!r} and {legacy})")
    if clean_label and target == ALL_TO_ALL:
        raise ValueError("poison: clean_label keeps the target class's own labels, so it needs one target class, "
                         f"not '{ALL_TO_ALL}'")
    pool = candidates[dataset.train_labels[candidates] == target] if clean_label else candidates
    chosen = choose(pool, n, seed, f"poison (clean-label: of target class {target})" if clean_label else "poison")
    context = TriggerContext(
        shape=tuple(dataset.train_images.shape[1:]), seed=seed, target=None if target == ALL_TO_ALL else target,
        num_classes=dataset.num_classes, poisoned=chosen, candidates=candidates, images=dataset.train_images,
        labels=dataset.train_labels, surrogate=_surrogate, mean=dataset.mean, std=dataset.std)
    if trigger is None:
        stamp = Patch(size=patch_size, position=position, value=value, pattern=pattern)
        params: dict = dict(target=target, **legacy)
    else:
        stamp = build_trigger(trigger, context)
        params = dict(target=target, trigger=stamp.describe())
    if clean_label:
        params["clean_label"] = True
    labels = dataset.train_labels.clone()
    if not clean_label:
        labels[chosen] = attack_labels(labels[chosen], target, dataset.num_classes)
    triggered = torch.zeros(len(labels), dtype=torch.bool)
    triggered[chosen] = True
    triggered[stamp.extra_stamped] = True  # rendered with the trigger, true labels kept (WaNet's noise samples)
    all_test = torch.arange(len(dataset.test_labels))
    if target == ALL_TO_ALL:
        nontarget = all_test  # every class has a target other than itself
    else:
        nontarget = torch.nonzero(dataset.test_labels != target).flatten()
    return Manipulated(
        name="poison",
        params=params,
        labels=labels,
        clean_labels=dataset.train_labels.clone(),
        manipulated=chosen,
        triggered=triggered,
        trigger=stamp,
        test_views={
            "affected": TestView(all_test, triggered=True),
            "affected_nontarget": TestView(nontarget, triggered=True),
            "utility": TestView(all_test),
        },
    )
