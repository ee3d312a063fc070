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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .training.recipe import DEFAULT_MODELS, Recipe, default_recipe


class ConfigError(ValueError):
    pass


@dataclass
class DatasetConfig:
    name: str = "fashion-mnist"
    data_dir: str | None = None
    path: str | None = None
    download: bool = False
    # Held out of the training set, stratified and seeded; 0 = the reference's exact setting; null = 5%.
    val_size: int | None = None

    def resolved_val_size(self, train_size: int) -> int:
        return round(0.05 * train_size) if self.val_size is None else self.val_size

    def loader_options(self) -> dict:
        return {"data_dir": self.data_dir, "path": self.path, "download": self.download}


@dataclass
class ManipulationConfig:
    name: str = "poison"
    n: int = 600
    params: dict = field(default_factory=dict)


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

    def resolved_recipe(self) -> Recipe:
        try:
            return default_recipe(self.dataset.name).replace(**self.recipe)
        except TypeError as error:
            known = ", ".join(f.name for f in dataclasses.fields(Recipe))
            raise ConfigError(f"recipe: {error}; known keys: {known}") from None


@dataclass
class TrainConfig(RunConfig):
    """``corrective train``: one manipulation, one seed."""

    manipulation: ManipulationConfig = field(default_factory=ManipulationConfig)
    seed: int = 0
    out: str = "runs"


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build dataclass ``cls`` from ``data``, recursing into dataclass fields; unknown keys are errors."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    values = {}
    for name, value in data.items():
        kind = fields[name].type
        nested = _dataclass_named(kind)
        values[name] = from_dict(nested, value, f"{where}.{name}") if nested else value
    return cls(**values)


def _dataclass_named(type_name) -> type | None:
    name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    return {c.__name__: c for c in (DatasetConfig, ManipulationConfig)}.get(name)


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
