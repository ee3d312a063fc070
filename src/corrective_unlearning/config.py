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
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# The type checks live on the ground floor (checks); re-exported here, where configs and users import them from.
from .checks import ConfigError, check_type, describe_value, from_dict, type_name
from .manipulations import check_params
from .training.recipe import DEFAULT_MODELS, Recipe, default_recipe

DEFAULT_VAL_FRACTION = 0.05


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
            return default_recipe(self.dataset.name, self.model_name).replace(**self.recipe)
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None


@dataclass
class TrainConfig(RunConfig):
    """``corrective train``: one manipulation, one seed."""

    manipulation: ManipulationConfig = field(default_factory=ManipulationConfig)
    seed: int = 0
    out: str = "runs"


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


__all__ = ["ConfigError", "DatasetConfig", "ManipulationConfig", "RunConfig", "TrainConfig", "apply_overrides",
           "check_type", "default_val_size", "describe_value", "from_dict", "read_yaml", "to_dict", "type_name",
           "write_yaml"]
