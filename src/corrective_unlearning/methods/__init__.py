"""Unlearning methods. Each is one file here: a function ``(task, hparams) -> Unlearned`` (the new model and its
notes) registered with :func:`method`, declaring its hyperparameters (a default, or a
:class:`~corrective_unlearning.checks.Param` with a type and a valid range), the paper's search space and how the
report and ``method="auto"`` treat it.

    @method("eu", params={"last_k": Param(int | str, "all"), "steps": None}, grid={"last_k": ["all", 2, 4]},
            style=("tab:blue", "o"))
    def exact_unlearning(task: Task, hp: dict) -> Unlearned: ...
"""
from __future__ import annotations

import itertools
import json
import typing
from dataclasses import dataclass, replace
from typing import Any, Callable

from ..checks import ConfigError, Param, check_values, declare, defaults_of
from ..registry import Registry
from ..training.recipe import Recipe
from .task import SharedWork, Task, Unlearned

# A None default of a hyperparameter named like a recipe field (steps, lr, ...) means "the recipe's": the field's
# type (or null) is what it takes. Any other None default takes anything.
RECIPE_TYPES = typing.get_type_hints(Recipe)


@dataclass(frozen=True)
class AutoCandidate:
    """A method that ``method="auto"`` runs (:mod:`..fix.auto`): ``rank`` orders the candidates (they run in that
    order, and the first wins a tie); ``space`` is its search space, as a grid config's ``{grid, params}``; ``why``:
    where the benchmark maps show it winning, for the report's account of the choice."""

    rank: int
    space: dict
    why: str = ""


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[[Task, dict], Unlearned]
    params: dict  # name -> Param or a bare default (see checks.declare); normalised to Params
    grid: dict  # the paper's search space: name -> list of values
    summary: str
    style: tuple[str, str] | None = None  # (color, marker) of its curves in the report's figures
    auto: AutoCandidate | None = None  # whether, and how, method="auto" runs it
    reads_reserve: bool = False  # it trains on the task's clean reserve (a clean-data defence)
    needs_flagged: bool = True  # False: it reads no flagged sample, so it also runs with S_f empty (0% discovery)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", {name: declare(name, d, RECIPE_TYPES) for name, d in self.params.items()})

    @property
    def defaults(self) -> dict:
        """``name -> default`` of every hyperparameter: what cache keys and records hold for unset ones."""
        return defaults_of(self.params)

    def resolve(self, hparams: dict | None) -> dict:
        """Defaults overlaid with ``hparams``, each checked against its declaration: unknown names, a value of the
        wrong type and one out of its declared range or choices are :class:`ConfigError` s, before any work."""
        return check_values(hparams, self.params, where=f"method {self.name}", noun="hyperparameter",
                            label=lambda key: f"method {self.name}: hyperparameter {key!r}")

    def __call__(self, task: Task, hparams: dict | None = None) -> Unlearned:
        """Run the method on ``task``; the result carries the shared work this run paid for or reused. An empty
        S_f (the 0% discovery column) is refused unless the method needs no flagged sample."""
        hp = self.resolve(hparams)
        if len(task.forget_idx) == 0 and self.needs_flagged:
            raise ValueError(f"method {self.name}: the deletion set S_f is empty (0% discovery), and this method "
                             f"unlearns flagged samples; only methods that need none (clean-data defences such as "
                             f"ft_clean, nad, anp, i-bau) run without them")
        with task.accounting() as work:
            result = self.run(task, hp)
        return replace(result, shared=work)


METHODS: Registry[Method] = Registry("method")


def method(name: str, params: dict, grid: dict | None = None, style: tuple[str, str] | None = None,
           auto: AutoCandidate | None = None, reads_reserve: bool = False, needs_flagged: bool = True):
    """Register ``fn(task, hp) -> Unlearned`` as method ``name`` (see :class:`Method` for the other arguments)."""
    def decorator(fn: Callable[[Task, dict], Unlearned]) -> Callable[[Task, dict], Unlearned]:
        METHODS.register(name)(Method(name, fn, dict(params), dict(grid or {}), summary_of(fn), style, auto,
                                      reads_reserve, needs_flagged))
        return fn

    return decorator


def reads_reserve(name: str) -> bool:
    """Whether method ``name`` trains on the clean reserve (an unknown name: no)."""
    return name in METHODS and METHODS.get(name).reads_reserve


def needs_flagged(name: str) -> bool:
    """Whether method ``name`` needs a non-empty S_f (an unknown name: yes, as every corrective method)."""
    return name not in METHODS or METHODS.get(name).needs_flagged


def summary_of(fn: Callable) -> str:
    """The first paragraph of ``fn``'s docstring on one line: a method's summary in listings."""
    return " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Cartesian product of a ``name -> values`` grid, in a stable order; ``{}`` gives one empty setting."""
    names = sorted(grid)
    values = [grid[n] if isinstance(grid[n], list) else [grid[n]] for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def expand_settings(grid: dict | list, params: dict | None = None) -> list[dict]:
    """Every setting of a ``{grid, params}`` search space: the points of ``grid`` (a ``name -> values`` mapping,
    or a list of them whose points are joined) crossed with the fixed ``params``, each listed once, in order."""
    points = [p for g in (grid if isinstance(grid, list) else [grid]) for p in expand_grid(g)]
    points = list({hparams_key(p): p for p in points}.values())  # a setting listed twice runs once
    return [{**(params or {}), **point} for point in points]


def hparams_key(hparams: dict[str, Any]) -> str:
    return json.dumps(hparams, sort_keys=True, separators=(",", ":"))


# registration, one name per method file (anp, ft_after, ft_clean, i_bau, nad: the clean-data defences)
from . import (anp, bad_teacher, catastrophic_forgetting, exact_unlearning, ft_after, ft_clean, i_bau,  # noqa: E402,F401
               l1_sparse, nad, neggrad, neggrad_plus, npo, potion, random_label, rem, rum, salun, scrub, ssd,
               trigger_synthesis)  # noqa: F401

__all__ = ["METHODS", "AutoCandidate", "ConfigError", "Method", "Param", "RECIPE_TYPES", "SharedWork", "Task",
           "Unlearned", "expand_grid", "expand_settings", "hparams_key", "method", "needs_flagged", "reads_reserve",
           "summary_of"]
