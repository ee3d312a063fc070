"""The one checking engine of every config value and every registry's parameters (the ground floor: it imports
nothing from the package, so every layer may import it).

Two halves:

- types: :func:`check_type` checks a value against an annotation (``int``, ``list[str]``, ``float | None``, a
  nested dataclass, ...); :func:`from_dict` builds a dataclass from a mapping with it;
- declarations: a registry declares each parameter as a :class:`Param` (its type, default, valid range or choices,
  a line of doc) and :func:`check_values` checks the values a user gives against the declarations, in the spirit
  of scikit-learn's ``_parameter_constraints``::

      PARAMS = {
          "lr": Param(float, 0.005, low=0, closed="neither", doc="learning rate"),
          "passes": Param(int, 10, low=1),
          "variant": Param(str, "original", choices=("original", "bench")),
      }
      hp = check_values({"lr": 0.01}, PARAMS, where="method rem", noun="hyperparameter")

Every message says where, what was expected and what was received: ``method rem: hyperparameter 'lr': expected
float, got str '0.1'``, ``trigger blend: alpha must be in (0, 1], got 2``.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message says where, what was expected and
    what was received."""


# ------------------------------------------------------------------------------------------------------ types
def describe_value(value) -> str:
    """``str '100'``, ``int 5``, ``null``: what a config received, for error messages."""
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def type_name(kind) -> str:
    """``int``, ``list of int``, ``str or null``: what a config expected, for error messages."""
    if kind is None or kind is type(None):
        return "null"
    if kind is Any:
        return "any value"
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list and args:
        return f"list of {type_name(args[0])}"
    if origin is dict and len(args) == 2:
        return f"dict of {type_name(args[0])} to {type_name(args[1])}"
    if dataclasses.is_dataclass(kind):
        return "a mapping"
    return getattr(origin or kind, "__name__", str(kind))


def _matches(value, kind) -> bool:
    """Whether ``value`` has the outer type of annotation ``kind`` (elements are checked separately)."""
    if kind is Any:
        return True
    if kind is None or kind is type(None):
        return value is None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(kind))
    if origin is typing.Literal:
        return value in typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return value is None or isinstance(value, dict)
    kind = origin or kind
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(kind, type) and isinstance(value, kind)


def check_type(value, kind, where: str):
    """Return ``value`` if it matches annotation ``kind``, else raise a :class:`ConfigError` naming ``where``, the
    expected type and the value received. Supported: int, float (an int is accepted), bool (an int is not), str,
    list and ``list[X]``, dict and ``dict[K, V]``, None, unions and Optional, Literal, Any and nested dataclasses,
    which are built from their mapping with :func:`from_dict`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            if _matches(value, option):
                return check_type(value, option, where)
    elif _matches(value, kind):
        if dataclasses.is_dataclass(kind):
            return from_dict(kind, value, where)
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is list and args:
            for i, item in enumerate(value):
                check_type(item, args[0], f"{where}[{i}]")
        if origin is dict and len(args) == 2:
            for key, item in value.items():
                check_type(key, args[0], f"{where} key {key!r}")
                check_type(item, args[1], f"{where}.{key}")
        return value
    if dataclasses.is_dataclass(kind):  # the message of a nested section that is not a mapping
        raise ConfigError(f"{where}: expected a mapping, got {describe_value(value)}")
    raise ConfigError(f"{where}: expected {type_name(kind)}, got {describe_value(value)}")


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass ``cls`` from ``data``, recursing into dataclass fields; unknown keys and values that do not
    match a field's annotation are errors (see :func:`check_type`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {describe_value(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    hints = type_hints(cls)
    values = {name: check_type(value, hints.get(name, Any), f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def type_hints(cls) -> dict:
    """The resolved annotations of dataclass ``cls``; one that cannot be resolved is ``Any`` (not checked)."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {f.name: f.type if not isinstance(f.type, str) else Any for f in dataclasses.fields(cls)}


# ----------------------------------------------------------------------------------------------- declarations
REQUIRED: Any = inspect.Parameter.empty  # the default of a parameter that has none
Closed = Literal["both", "left", "right", "neither"]


@dataclass(frozen=True)
class Interval:
    """``low <= value <= high`` (``closed`` says which ends belong); None is an open end (-inf, inf)."""

    low: float | None = None
    high: float | None = None
    closed: Closed = "both"

    def __contains__(self, value) -> bool:
        above = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        below = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return above and below

    def bound(self) -> str:
        """``>= 0``, ``> 0``, ``<= 1`` for a one-sided interval; ``in [0, 1]`` otherwise."""
        if self.high is None and self.low is not None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {self.low}"
        if self.low is None and self.high is not None:
            return f"{'<=' if self.closed in ('both', 'right') else '<'} {self.high}"
        return f"in {self}"

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{left}{low}, {high}{right}"


@dataclass(frozen=True)
class Param:
    """One declared parameter. ``kind``: the annotation its values must match (``Any``: not checked); ``default``
    (:data:`REQUIRED` when there is none); ``low``/``high``/``closed``: the valid range of a number; ``choices``:
    the valid values; ``nullable``: null is accepted too (and skips every other
    check); ``doc``: one line for listings. A float is always refused when NaN or infinite."""

    kind: Any = Any
    default: Any = REQUIRED
    low: float | None = None
    high: float | None = None
    closed: Closed = "both"
    choices: tuple | None = None
    nullable: bool = False
    doc: str = ""

    @property
    def interval(self) -> Interval | None:
        return None if self.low is None and self.high is None else Interval(self.low, self.high, self.closed)

    @classmethod
    def of(cls, annotation, default=REQUIRED, **constraints) -> "Param":
        """A Param from an annotation: ``X | None`` becomes ``kind=X, nullable=True``."""
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            annotation = rest[0] if len(rest) == 1 else typing.Union[rest]
            constraints.setdefault("nullable", True)
        return cls(annotation, default, **constraints)


def declare(name: str, declaration, null_kinds: Mapping[str, Any] | None = None) -> Param:
    """A registry's declaration of parameter ``name``: a :class:`Param` as given, or a bare default whose Param is
    inferred. An int or float default takes its type (a float also an int) or null, which the registries read as
    unset; a bool, str, list or dict default takes its type; a None default takes null or ``null_kinds[name]``
    (e.g. a recipe field's type, where None means "the recipe's"), or anything when the name is not there."""
    if isinstance(declaration, Param):
        return declaration
    if declaration is None:
        return Param((null_kinds or {}).get(name, Any), None, nullable=True)
    kind = type(declaration)
    return Param(kind, declaration, nullable=kind in (int, float))


Phrasing = Literal["expected", "must be"]  # "x: expected int, got float 2.5" or "x must be an integer, got 2.5"
_MUST_BE = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _choices_text(choices: tuple) -> str:
    return " or ".join(repr(c) for c in choices)


def check_value(value, param: Param, label: str, phrasing: Phrasing = "expected",
                error: type[Exception] = ConfigError, subject: str | None = None):
    """Raise ``error`` unless ``value`` satisfies ``param``: null where nullable; else of its kind, one of its
    choices (if any), finite when a float, inside its interval (if any). The messages (``subject`` defaults to
    ``label``): a wrong type ``label: expected int, got float 2.5``, or with ``phrasing="must be"`` ``subject must
    be an integer, got 2.5``; out of range ``label: expected an integer >= 1, got 0``, or ``subject must be in [1,
    inf], got 0``; a wrong choice ``subject must be 'a' or 'b', got 'c'``; ``subject must be a finite number, got
    nan``."""
    subject = subject or label
    if value is None and param.nullable:
        return value
    _check_kind(value, param.kind, label if phrasing == "expected" else subject, phrasing, error)
    if param.choices is not None and value not in param.choices:
        raise error(f"{subject} must be {_choices_text(param.choices)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{subject} must be a finite number, got {value!r}")
    interval = param.interval
    if interval is not None and value not in interval:
        if phrasing == "must be":
            raise error(f"{subject} must be in {interval}, got {value!r}")
        number = "an integer" if param.kind is int else "a number"
        raise error(f"{label}: expected {number} {interval.bound()}, got {value!r}")
    return value


def _check_kind(value, kind, label: str, phrasing: Phrasing, error: type[Exception]) -> None:
    if phrasing == "must be" and not _matches(value, kind):
        raise error(f"{label} must be {_MUST_BE.get(kind, type_name(kind))}, got {value!r}")
    try:
        check_type(value, kind, label)
    except ConfigError as problem:
        raise error(str(problem)) from None


def check_values(values: Mapping | None, declared: Mapping[str, Param], *, where: str, noun: str = "parameter",
                 owner: str | None = None, label: Callable[[str], str] | None = None,
                 phrasing: Phrasing = "expected", error: type[Exception] = ConfigError) -> dict:
    """The declared defaults overlaid with ``values``, each checked (:func:`check_value`); else ``error``.

    ``where`` starts the messages (``method rem``, ``manipulation.params``); ``noun`` names a parameter
    (``hyperparameter``, ``param``); ``owner`` is what they belong to when ``where`` does not say it (``trigger
    patch``); ``label(name)`` names one value in a type error (default ``where.name``), and ``owner or where``
    followed by the name is the subject of every "must be" (``method rem: beta must be in (0, inf), got 0``)."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise error(f"{where}: expected dict, got {describe_value(values)}")
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise error(_unknown_message(unknown, list(declared), where, noun, owner))
    label = label or (lambda name: f"{where}.{name}")
    for name, value in values.items():
        check_value(value, declared[name], label(name), phrasing, error, subject=f"{owner or where}: {name}")
    return {**defaults_of(declared), **values}


def _unknown_message(unknown: list[str], known: list[str], where: str, noun: str, owner: str | None) -> str:
    accepted = ", ".join(known) or "(none)"
    if owner is not None:
        return f"{where}: unknown {noun}(s) {unknown} for {owner}; accepted: {accepted}"
    return f"{where}: unknown {noun}(s) {unknown}: {where} has no {noun} of that name; accepted: {accepted}"


def defaults_of(declared: Mapping[str, Param]) -> dict:
    """``name -> default`` of the parameters that have one, in declaration order."""
    return {name: p.default for name, p in declared.items() if p.default is not REQUIRED}


def signature_params(fn: Callable, skip: int = 0) -> dict[str, Param] | None:
    """The keyword parameters of ``fn`` after its first ``skip`` ones as Params (annotation and default; names
    starting with ``_`` are private, not declared); None when it takes ``**kwargs`` (any name is accepted)."""
    signature = list(inspect.signature(fn).parameters.values())[skip:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature):
        return None
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):  # annotations that cannot be resolved are not checked
        hints = {}
    return {p.name: Param(hints.get(p.name, Any), p.default) for p in signature
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not p.name.startswith("_")}


def field_params(cls) -> dict[str, Param]:
    """The init fields of dataclass ``cls`` not starting with ``_`` as Params: the annotation, the default and the
    constraints a field declares with :func:`param`."""
    hints = type_hints(cls)
    declared = {}
    for f in dataclasses.fields(cls):
        if f.init and not f.name.startswith("_"):
            constraints = dict(f.metadata.get("constraints", {}))
            declared[f.name] = Param.of(hints.get(f.name, Any), f.default, **constraints)
    return declared


def param(default, **constraints) -> Any:
    """A dataclass field with a default and :class:`Param` constraints (``low``, ``high``, ``closed``,
    ``choices``, ``doc``), read back by :func:`field_params`."""
    return dataclasses.field(default=default, metadata={"constraints": constraints})
