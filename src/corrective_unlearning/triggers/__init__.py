"""Backdoor triggers, one file each behind a registry, below the manipulations and the training loop.

A trigger stamps uint8 images ``[B, C, H, W]`` on the device after crop and flip (:class:`base.Trigger`). In a
config it is ``trigger: {name: blend, alpha: 0.2}``; :func:`build_trigger` checks the parameter names, types and
ranges against the trigger's declarations (:func:`base.trigger_params`), with one-line messages. Adding a trigger
is one file here with ``@TRIGGERS.register("name")`` on a frozen dataclass subclassing :class:`Trigger` (a field
made with :func:`~corrective_unlearning.checks.param` declares its range), plus its import line below.
"""
from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import ALL_TO_ALL, Trigger, TriggerContext, TriggerError, attack_labels, check_params, trigger_params

TRIGGERS: Registry[type[Trigger]] = Registry("trigger")


def trigger_parameters(name: str) -> list[str]:
    """The parameter names trigger ``name`` accepts (its dataclass fields that do not start with ``_``)."""
    return list(trigger_params(TRIGGERS.get(name)))


def check_trigger_spec(spec: Any, where: str = "trigger") -> tuple[str, dict]:
    """``{name: ..., <param>: ...}`` -> (name, params), or a TriggerError naming the unknown key or name, or a
    value its declaration refuses."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise TriggerError(f"{where}: expected a mapping with a name, e.g. {{name: blend, alpha: 0.2}}; "
                           f"got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    name = spec["name"]
    try:
        declared = trigger_params(TRIGGERS.get(name))
    except KeyError as error:
        raise TriggerError(f"{where}: {error.args[0]}") from None
    check_params(name, params, declared, where)
    return name, params


def build_trigger(spec: dict, context: TriggerContext) -> Trigger:
    name, params = check_trigger_spec(spec)
    try:
        return TRIGGERS.get(name).build(context, **params)
    except TypeError as error:  # a parameter of the wrong kind reaching a computation
        raise TriggerError(f"trigger {name}: {error}") from None


from . import patch, blend, sig, bpp, ftrojan, wanet, lc  # noqa: E402,F401  (registration; one line per trigger file)

__all__ = ["ALL_TO_ALL", "TRIGGERS", "Trigger", "TriggerContext", "TriggerError", "attack_labels", "build_trigger",
           "check_trigger_spec", "trigger_parameters"]
