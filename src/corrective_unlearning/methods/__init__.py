"""Unlearning methods. Each is one file here: a function ``(task, hparams) -> new model`` registered with
:func:`method`, declaring its hyperparameter defaults and the paper's search space.

    @method("eu", defaults={"last_k": 0}, grid={"last_k": [0]})
    def exact_unlearning(task: Task, hp: dict) -> nn.Module: ...
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
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

    def resolve(self, hparams: dict | None) -> dict:
        """Defaults overlaid with ``hparams``; unknown names are errors."""
        hparams = dict(hparams or {})
        unknown = sorted(set(hparams) - set(self.defaults))
        if unknown:
            raise ValueError(f"method {self.name}: unknown hyperparameter(s) {unknown}; "
                             f"expected some of {sorted(self.defaults)}")
        return {**self.defaults, **hparams}

    def __call__(self, task: Task, hparams: dict | None = None) -> nn.Module:
        return self.run(task, self.resolve(hparams))


METHODS: Registry[Method] = Registry("method")


def method(name: str, defaults: dict, grid: dict | None = None):
    def decorator(fn: Callable[[Task, dict], nn.Module]) -> Callable[[Task, dict], nn.Module]:
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        METHODS.register(name)(Method(name, fn, dict(defaults), dict(grid or {}), summary))
        return fn

    return decorator


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Cartesian product of a ``name -> values`` grid, in a stable order; ``{}`` gives one empty setting."""
    names = sorted(grid)
    values = [grid[n] if isinstance(grid[n], list) else [grid[n]] for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def hparams_key(hparams: dict[str, Any]) -> str:
    return json.dumps(hparams, sort_keys=True, separators=(",", ":"))


from . import bad_teacher, catastrophic_forgetting, exact_unlearning, scrub, ssd  # noqa: E402,F401

__all__ = ["METHODS", "Method", "Task", "expand_grid", "hparams_key", "method"]
