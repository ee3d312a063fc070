"""YAML configs with ``key=value`` overrides, parsed into dataclasses that reject unknown keys.

A training config (``corrective train``)::

    dataset: {name: fashion-mnist, data_dir: null, path: null, download: false, val_size: null}
    model: small_cnn                  # default per dataset
    manipulation: {name: poison, n: 600, params: {target: 0}}
    recipe: {steps: 600}              # overrides of the dataset's default recipe A
    seed: 0
    device: auto
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .training.recipe import DEFAULT_MODELS, Recipe, default_recipe

DEFAULT_VAL_FRACTION = 0.05


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message says where, what was expected and
    what was received."""


def default_val_size(train_size: int) -> int:
    """The validation split held out of a training set of ``train_size`` samples when none is asked for: 5%,
    rounded. The one default of the CLI, the grid, :func:`experiment.build_setting` and :func:`api.correct`."""
    return round(DEFAULT_VAL_FRACTION * train_size)


@dataclass
class DatasetConfig:
    name: str = "fashion-mnist"
    data_dir: str | None = None
    path: str | None = None
    download: bool = False
    # Held out of the training set, stratified and seeded; 0 = the reference's exact setting; null = 5%.
    val_size: int | None = None

    def resolved_val_size(self, train_size: int) -> int:
        return default_val_size(train_size) if self.val_size is None else self.val_size

    def loader_options(self) -> dict:
        return {"data_dir": self.data_dir, "path": self.path, "download": self.download}


@dataclass
class ManipulationConfig:
    name: str = "poison"
    n: int = 600
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .manipulations import check_params  # late: the manipulations import the data layer

        check_params(self.name, self.params, "manipulation.params")


@dataclass
class RunConfig:
    """What every run shares: the data, the model, recipe A's overrides and where it runs."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: str | None = None  # default: the dataset's (DEFAULT_MODELS)
    recipe: dict = field(default_factory=dict)  # overrides of the dataset's default recipe A
    device: str = "auto"
    compile: bool | str = "auto"  # auto: CUDA graphs on CUDA, off on the CPU; or false, true, a torch.compile mode
    cache: bool = True

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODELS.get(self.dataset.name, "resnet9")

    def __post_init__(self) -> None:
        self.check_recipe()  # when the config loads, not when the run starts

    def check_recipe(self) -> None:
        """The ``recipe`` overrides name Recipe's fields, each with a value of the field's type."""
        if not isinstance(self.recipe, dict):
            raise ConfigError(f"recipe: expected dict, got {describe_value(self.recipe)}")
        names = [f.name for f in dataclasses.fields(Recipe)]
        unknown = sorted(set(self.recipe) - set(names))
        if unknown:
            raise ConfigError(f"recipe: unknown key(s) {unknown}; known keys: {', '.join(names)}")
        hints = typing.get_type_hints(Recipe)
        for name, value in self.recipe.items():
            check_type(value, hints[name], f"recipe.{name}")

    def resolved_recipe(self) -> Recipe:
        """The dataset's default recipe A with the ``recipe`` overrides, each checked against Recipe's fields."""
        self.check_recipe()
        try:
            return default_recipe(self.dataset.name).replace(**self.recipe)
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None


@dataclass
class TrainConfig(RunConfig):
    """``corrective train``: one manipulation, one seed."""

    manipulation: ManipulationConfig = field(default_factory=ManipulationConfig)
    seed: int = 0
    out: str = "runs"


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
    hints = _type_hints(cls)
    values = {name: check_type(value, hints.get(name, Any), f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def _type_hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved is not checked
        return {f.name: f.type if not isinstance(f.type, str) else Any for f in dataclasses.fields(cls)}


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


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``a.b=value`` sets ``data['a']['b']``; the value is parsed as YAML (numbers, lists, booleans, null)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. recipe.steps=1000")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data or {}


def write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
