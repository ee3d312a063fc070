"""REM's capacity-restricted original training (REFERENCE-NOTES 3.2, the reference's ``mem0`` models): a network
with spare channels that are held at zero throughout training, so the deployed model is the narrow one and REM
later switches the (untrained) spare channels on instead of adding new ones.

The wide network is initialised as a whole, spare weights included (as the reference's wide network is), and
trained with the spare capacity off: spare channels output zero, so their weights get no gradient and only weight
decay shrinks them. The narrowed network computes exactly the same function and is what every other method sees;
the trained wide network stays attached to it for REM (:func:`trained_spare`).
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from .core import WideModel, narrow, widen

_TRAINED_SPARE: "weakref.WeakKeyDictionary[nn.Module, WideModel]" = weakref.WeakKeyDictionary()


def restricted_model(model: nn.Module, spare_fraction: float, seed: int) -> WideModel:
    """``model``'s architecture widened by ``spare_fraction`` and freshly initialised as a whole (seeded): every
    layer's ``reset_parameters``, batch-norm statistics included. Runs with the spare capacity off."""
    wide = widen(model, spare_fraction)
    torch.manual_seed(seed)
    for module in wide.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return wide


def deployable(wide: WideModel) -> nn.Module:
    """The narrowed network (original shapes, same function as ``wide`` with spare capacity off), with ``wide``
    attached for :func:`trained_spare`."""
    model = narrow(wide)
    _TRAINED_SPARE[model] = wide
    return model


def trained_spare(model: nn.Module) -> WideModel | None:
    """The wide network ``model`` was narrowed from by :func:`deployable` (its spare channels were held at zero in
    training), or None for a model trained without spare capacity. Copy it before changing it."""
    return _TRAINED_SPARE.get(model)
