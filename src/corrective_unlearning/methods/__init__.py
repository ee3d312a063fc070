"""Unlearning methods. Each is one file here: a function ``(task, hparams) -> new model`` registered with
:func:`method`, declaring its hyperparameter defaults and the paper's search space.

    @method("eu", defaults={"last_k": "all"}, grid={"last_k": ["all", 2, 4]})
    def exact_unlearning(task: Task, hp: dict) -> nn.Module: ...
"""
from __future__ import annotations

import itertools
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..registry import Registry
from .task import Task


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Task, dict], nn.Module]
    defaults: dict
    grid: dict  # the paper's search space: name -> list of values
    summary: str
    types: dict = field(default_factory=dict)  # name -> type, where a default's own type is too narrow

    def resolve(self, hparams: dict | None) -> dict:
        """Defaults overlaid with ``hparams``. Unknown names are errors, and so is a value that is not of its
        default's type: an int default takes an int, a float default an int or a float (either also takes null,
        which methods read as unset), a bool default a bool, a str default a str. A None default takes anything,
        except where the name is one of the recipe's fields (``steps``, ``lr``, ...), which a None default means
        "the recipe's": then the recipe field's type (or null). A type the method declares in ``types`` (for a
        hyperparameter whose values are wider than its default's type) replaces all of these."""
        from ..config import ConfigError, check_type, describe_value  # late: config imports the training layer
        from ..training.recipe import Recipe

        where = f"method {self.name}"
        if hparams is not None and not isinstance(hparams, dict):
            raise ConfigError(f"{where}: hyperparameters: expected dict, got {describe_value(hparams)}")
        hparams = dict(hparams or {})
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise ConfigError(f"{where}: unknown hyperparameter(s) {unknown}; expected some of {sorted(self.defaults)}")
        recipe_types = typing.get_type_hints(Recipe)
        for name, value in hparams.items():
            default = self.defaults[name]
            if value is None and (default is None or type(default) in (int, float)):
                continue
            kind = self.types.get(name) or (recipe_types.get(name, Any) if default is None else type(default))
            check_type(value, kind, f"{where}: hyperparameter {name!r}")
        return {**self.defaults, **hparams}

    def __call__(self, task: Task, hparams: dict | None = None) -> nn.Module:
        from ..reserve import needs_flagged  # clean reserve: only declared defences run on an empty S_f

        if len(task.forget_idx) == 0 and needs_flagged(self.name):
            raise ValueError(f"method {self.name}: the deletion set S_f is empty (0% discovery), and this method "
                             f"unlearns flagged samples; only methods that need none (clean-data defences such as "
                             f"ft_clean, nad, anp, i-bau) run without them")
        return self.run(task, self.resolve(hparams))


METHODS: Registry[Method] = Registry("method")


def method(name: str, defaults: dict, grid: dict | None = None, types: dict | None = None):
    def decorator(fn: Callable[[Task, dict], nn.Module]) -> Callable[[Task, dict], nn.Module]:
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        METHODS.register(name)(Method(name, fn, dict(defaults), dict(grid or {}), summary, dict(types or {})))
        return fn

    return decorator


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Cartesian product of a ``name -> values`` grid, in a stable order; ``{}`` gives one empty setting."""
    names = sorted(grid)
    values = [grid[n] if isinstance(grid[n], list) else [grid[n]] for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def hparams_key(hparams: dict[str, Any]) -> str:
    return json.dumps(hparams, sort_keys=True, separators=(",", ":"))


from . import (bad_teacher, catastrophic_forgetting, exact_unlearning, l1_sparse, neggrad, neggrad_plus,  # noqa: E402,F401
               npo, potion, random_label, rem, rum, salun, scrub, ssd)
from . import anp, ft_after, ft_clean, i_bau, nad  # noqa: E402,F401  (clean-data defences, reserve.py)

__all__ = ["METHODS", "Method", "Task", "expand_grid", "hparams_key", "method"]
