"""Manipulations of the training set. Each module registers one ``apply`` function:

    apply(dataset, candidates, n, seed, **params) -> Manipulated

``candidates`` are the training indices the adversary may touch (the validation split is excluded). Adding a
manipulation is one file here that decorates its function with ``@MANIPULATIONS.register("name")``.
"""
from __future__ import annotations

import inspect
import typing
from typing import Any, Callable

import torch

from ..data import ImageDataset
from ..registry import Registry
from ..triggers import TRIGGERS, TriggerError, check_trigger_spec
from .base import Manipulated, TestView, index_hash

MANIPULATIONS: Registry[Callable[..., Manipulated]] = Registry("manipulation")


def check_params(name: str, params: dict, where: str = "manipulation.params") -> None:
    """Raise a :class:`ConfigError` unless ``params`` are keyword arguments that manipulation ``name`` accepts
    (the parameters of its ``apply(dataset, candidates, n, seed, **params)`` after the first four), each of the
    type its annotation names (unannotated ones take any value)."""
    from ..config import ConfigError, check_type, describe_value  # late: config imports the training layer

    try:
        apply = MANIPULATIONS.get(name)
    except KeyError as error:
        raise ConfigError(error.args[0]) from None
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: expected dict, got {describe_value(params)}")
    signature = list(inspect.signature(apply).parameters.values())[4:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature):
        return
    accepted = [p.name for p in signature
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not p.name.startswith("_")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"{where}: unknown param(s) {unknown} for manipulation {name}; "
                          f"accepted: {', '.join(accepted) or '(none)'}")
    try:
        hints = typing.get_type_hints(apply)
    except (NameError, TypeError):  # annotations that cannot be resolved are not checked
        hints = {}
    for key, value in params.items():
        check_type(value, hints.get(key, Any), f"{where}.{key}")
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
