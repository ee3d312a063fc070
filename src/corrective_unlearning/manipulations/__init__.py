"""Manipulations of the training set. Each module registers one ``apply`` function:

    apply(dataset, candidates, n, seed, **params) -> Manipulated

``candidates`` are the training indices the adversary may touch (the validation split is excluded). Adding a
manipulation is one file here that decorates its function with ``@MANIPULATIONS.register("name")``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from ..checks import ConfigError, check_values, describe_value, signature_params
from ..data import ImageDataset
from ..registry import Registry
from ..triggers import TRIGGERS, TriggerError, check_trigger_spec
from .base import Manipulated, TestView, index_hash

MANIPULATIONS: Registry[Callable[..., Manipulated]] = Registry("manipulation")


def check_params(name: str, params: dict, where: str = "manipulation.params") -> None:
    """Raise a :class:`ConfigError` unless ``params`` are keyword arguments that manipulation ``name`` accepts:
    its declaration is the signature of its ``apply(dataset, candidates, n, seed, **params)`` after the first four
    (each of the type its annotation names; unannotated ones take any value), checked by the one engine."""
    try:
        apply = MANIPULATIONS.get(name)
    except KeyError as error:
        raise ConfigError(error.args[0]) from None
    declared = signature_params(apply, skip=4)
    if declared is None:  # it takes **params: any name
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: expected dict, got {describe_value(params)}")
        return
    check_values(params, declared, where=where, noun="param", owner=f"manipulation {name}")
    if isinstance(params.get("trigger"), dict):
        try:
            check_trigger(params["trigger"])
        except TriggerError as error:
            raise ConfigError(f"{where}.{error}") from None


def check_trigger(spec: dict) -> None:
    """The trigger's name, parameter names and ranges, checked when the config loads (its seeded, data-dependent
    parts are built with the setting)."""
    name, params = check_trigger_spec(spec)
    TRIGGERS.get(name)(**params)


def manipulate(
    name: str, dataset: ImageDataset, candidates: torch.Tensor, n: int, seed: int,
    surrogate: Callable[[], torch.nn.Module] | None = None, **params: Any
) -> Manipulated:
    """``surrogate``: a clean model on demand, for triggers computed against one (label-consistent); passed to
    manipulations that take ``_surrogate``."""
    apply = MANIPULATIONS.get(name)  # an unknown name: the registry's KeyError, listing the known ones
    check_params(name, params)
    if "_surrogate" in inspect.signature(apply).parameters:
        params = {**params, "_surrogate": surrogate}
    return apply(dataset, candidates, n, seed, **params)


from . import interclass, label_noise, none, poison, random_labels  # noqa: E402,F401  (registration)

__all__ = ["MANIPULATIONS", "Manipulated", "TestView", "check_params", "index_hash", "manipulate"]
