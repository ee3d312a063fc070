"""The model's architecture: a registry name (``resnet9``) or a practitioner's own callable, ``module.path:callable``
(a class or a factory function, e.g. ``mypkg.nets:Net`` or an installed library's ``timm:create_model``), with
keyword arguments given as a YAML mapping (``--arch-kwargs '{width: 64}'``).

How a callable is called: ``num_classes`` and ``in_channels`` (what the data says) are passed only when the callable
names a parameter of that name in its signature (``**kwargs`` alone does not count: a factory such as timm's would
pass them on to a model that may not take them); the user's kwargs are passed as given and override both. So
``timm:create_model --arch-kwargs '{model_name: resnet18, num_classes: 10}'`` calls
``create_model(model_name="resnet18", num_classes=10)``, and a ``Net(num_classes=10, width=64)`` gets its classes
from the data unless the kwargs say otherwise. The result must be a ``torch.nn.Module``.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from torch import nn

from ..models import MODELS, create_model

DATA_ARGUMENTS = ("num_classes", "in_channels")


def is_user_arch(arch: str) -> bool:
    """``module.path:callable`` rather than a registry name."""
    return ":" in str(arch)


def parse_arch_kwargs(text: str | dict | None, option: str = "--arch-kwargs") -> dict:
    """A YAML mapping (``'{width: 64}'``) as a dict; None or empty text is ``{}``."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    import yaml  # lazy: read only when keyword arguments are given as text

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{option}: expected a YAML mapping such as '{{width: 64}}', got {text!r} which is not "
                         f"valid YAML ({problem})") from None
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{option}: expected a YAML mapping of argument names to values such as '{{width: 64}}', "
                         f"got {text!r}")
    return value


def resolve_callable(arch: str) -> Any:
    """The object ``module.path:name`` names (``name`` may be dotted: ``mod:Outer.factory``), imported."""
    module_name, _, attribute = str(arch).partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--arch {arch!r}: expected a registry name ({', '.join(MODELS.names())}) or "
                         f"module.path:callable (e.g. mypkg.nets:Net)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        where = "" if error.name == module_name else f" (it imports {error.name!r}, which is missing)"
        raise ValueError(f"--arch {arch!r}: expected an importable module {module_name!r}{where}; is it installed "
                         f"or on PYTHONPATH? (sys.path starts {sys.path[:3]})") from None
    except Exception as error:  # the user's module failed while importing: any error says so
        raise ValueError(f"--arch {arch!r}: importing module {module_name!r} failed: "
                         f"{type(error).__name__}: {error}") from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ValueError(f"--arch {arch!r}: expected module {module_name!r} to define {attribute!r}, it has no "
                             f"{part!r} (its callables: {', '.join(public[:8]) or 'none'})")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"--arch {arch!r}: expected a class or function, got {type(target).__name__}")
    return target


def call_arguments(target: Any, num_classes: int, in_channels: int, kwargs: dict | None = None) -> dict:
    """The keyword arguments ``target`` is called with: ``num_classes``/``in_channels`` where its signature names
    them, then ``kwargs`` over them."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: only the user's kwargs
        parameters = {}
    named = {name for name, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    data = {"num_classes": num_classes, "in_channels": in_channels}
    return {k: v for k, v in data.items() if k in named} | dict(kwargs or {})


def build_arch(arch: str, num_classes: int, in_channels: int, kwargs: dict | None = None,
               image_size: int | None = None) -> nn.Module:
    """A fresh model: ``create_model(arch, ...)`` for a registry name (``image_size``, the data's side, reaches the
    models whose shapes depend on it, e.g. the ViT's position embedding), else the user's callable (module
    docstring)."""
    if not is_user_arch(arch):
        return create_model(arch, num_classes, in_channels, image_size, **dict(kwargs or {}))
    target = resolve_callable(arch)
    arguments = call_arguments(target, num_classes, in_channels, kwargs)
    try:
        model = target(**arguments)
    except Exception as error:  # the user's code: any failure means these arguments do not build it
        raise ValueError(f"--arch {arch!r}: calling it with {arguments} failed: {type(error).__name__}: {error} "
                         f"(give its arguments with --arch-kwargs)") from error
    if not isinstance(model, nn.Module):
        raise ValueError(f"--arch {arch!r}: expected it to return a torch.nn.Module, got {type(model).__name__}")
    return model


def rebuild_note(arch: str, kwargs: dict | None, num_classes: int, in_channels: int) -> dict:
    """What a model card records to rebuild the model: the arch string, its kwargs, the data's sizes, and the
    Python call that does it."""
    kwargs = dict(kwargs or {})
    if is_user_arch(arch):
        module_name, _, attribute = arch.partition(":")
        try:
            arguments = call_arguments(resolve_callable(arch), num_classes, in_channels, kwargs)
        except ValueError:  # not importable where the card is written: record the kwargs as given
            arguments = kwargs
        call = f"from {module_name} import {attribute.split('.')[0]}; model = {attribute}(" + ", ".join(
            f"{k}={v!r}" for k, v in arguments.items()) + ")"
    else:
        call = (f"from corrective_unlearning.models import create_model; model = create_model({arch!r}, "
                f"{num_classes}, {in_channels}" + "".join(f", {k}={v!r}" for k, v in kwargs.items()) + ")")
    return {"arch": arch, "arch_kwargs": kwargs, "rebuild": call + "; model.load_state_dict(safetensors.torch."
            "load_file('model.safetensors'))"}
