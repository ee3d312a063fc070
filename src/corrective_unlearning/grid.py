"""The grid runner: a YAML recipe -> cells -> one record per cell, resumable.

Cells are (manipulation, size, seed, discovery rate, method, hyperparameters), plus one ``original`` cell per
(manipulation, size, seed) holding the original model's metrics. The original model is trained once per
(manipulation, size, seed) and cached; a deletion set and its :class:`Task` are built once per rate and shared
by every method and hyperparameter setting of that rate. Each finished cell is written atomically as
``<out>/records/<cell id>.json``, so an interrupted run resumes where it stopped; a failing cell is recorded
with its error and the grid goes on (failed cells are retried on the next run).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import ConfigError, RunConfig, apply_overrides, from_dict, read_yaml, to_dict, write_yaml
from .data import load_dataset
from .experiment import Setting, build_setting, evaluate, train_original
from .manipulations import index_hash
from .methods import METHODS, Task, expand_grid, hparams_key
from .records import environment, write_json_atomic
from .runtime import Runtime, Stopwatch

ORIGINAL = "original"


@dataclass
class ManipulationGrid:
    name: str
    sizes: list[int]
    params: dict = field(default_factory=dict)


@dataclass
class GridConfig(RunConfig):
    """``corrective run``: manipulations x sizes x seeds x rates x methods and their grids."""

    manipulations: list = field(default_factory=list)
    rates: list = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])
    seeds: list = field(default_factory=lambda: [0])
    methods: dict = field(default_factory=dict)  # name -> {grid: {...}, params: {...}} or null for the paper grid
    projection: dict = field(default_factory=lambda: {"sizes": 3, "rates": 10, "seeds": 1})

    def manipulation_grids(self) -> list[ManipulationGrid]:
        if not self.manipulations:
            raise ConfigError("grid config: 'manipulations' is empty; expected e.g. [{name: poison, sizes: [500]}]")
        return [from_dict(ManipulationGrid, m, f"manipulations[{i}]") for i, m in enumerate(self.manipulations)]

    def method_settings(self, name: str) -> list[dict]:
        """Every hyperparameter setting to run for method ``name``: its grid (the paper's unless overridden)
        crossed with fixed params, each validated against the method's declared hyperparameters."""
        spec = METHODS.get(name)
        options = self.methods.get(name) or {}
        unknown = sorted(set(options) - {"grid", "params"})
        if unknown:
            raise ConfigError(f"methods.{name}: unknown key(s) {unknown}; expected 'grid' and/or 'params'")
        grid = options.get("grid", spec.grid) or {}
        settings = [{**options.get("params", {}), **point} for point in expand_grid(grid)]
        for setting in settings:
            spec.resolve(setting)  # raises on unknown hyperparameter names
        return settings


def load_grid_config(path: str | None, overrides: list[str]) -> GridConfig:
    data = read_yaml(path) if path else {}
    config = from_dict(GridConfig, apply_overrides(data, overrides))
    for rate in config.rates:
        if not 0 < float(rate) <= 1:
            raise ConfigError(f"discovery rates must be in (0, 1], got {rate}")
    config.manipulation_grids()
    for name in config.methods:
        config.method_settings(name)
    return config


@dataclass(frozen=True)
class Cell:
    manipulation: str
    n: int
    seed: int
    rate: float
    method: str
    hparams: dict

    @property
    def id(self) -> str:
        digest = hashlib.sha256(hparams_key(self.hparams).encode()).hexdigest()[:8]
        return f"{self.manipulation}-n{self.n}-seed{self.seed}-rate{self.rate:.2f}-{self.method}-{digest}"


def expand_cells(config: GridConfig) -> list[Cell]:
    """Ordered so that cells sharing an original model, then a deletion set, are contiguous."""
    cells = []
    for m in config.manipulation_grids():
        for n, seed in itertools.product(m.sizes, config.seeds):
            cells.append(Cell(m.name, n, seed, 0.0, ORIGINAL, {}))
            for rate in sorted(float(r) for r in config.rates):
                for name in config.methods:
                    cells += [Cell(m.name, n, seed, rate, name, hp) for hp in config.method_settings(name)]
    return cells


def deletion_set(setting: Setting, rate: float) -> torch.Tensor:
    """A seeded uniform subset of S_m of size round(rate * n). Nested across rates for one seed (the first
    k of one permutation), so curves over the discovery rate compare like with like."""
    manipulated = setting.manipulated.manipulated
    order = np.random.default_rng([setting.seed, 7]).permutation(len(manipulated))
    return torch.sort(manipulated[order[: round(rate * len(manipulated))]]).values


def make_task(setting: Setting, original, forget: torch.Tensor, recipe, runtime: Runtime) -> Task:
    device = runtime.device
    m = setting.manipulated
    return Task(
        original=original,
        bank=setting.train_bank,
        labels=m.labels.to(device),
        forget_idx=forget,
        retain_idx=setting.train_idx[~torch.isin(setting.train_idx, forget)],
        val_idx=setting.val_idx,
        val_labels=m.clean_labels[setting.val_idx],
        num_classes=setting.dataset.num_classes,
        recipe=recipe,
        runtime=runtime,
        seed=setting.seed,
        _triggered=m.triggered.to(device),
    )


class ResultStore:
    """``<out>/records/<cell id>.json``: one file per finished cell."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.records = self.out / "records"

    def path(self, cell: Cell) -> Path:
        return self.records / f"{cell.id}.json"

    def done(self, cell: Cell) -> bool:
        path = self.path(cell)
        try:
            return path.exists() and json.loads(path.read_text()).get("status") == "ok"
        except (json.JSONDecodeError, OSError):
            return False  # unreadable: run the cell again

    def write(self, cell: Cell, record: dict) -> None:
        write_json_atomic(self.path(cell), record)

    def load(self) -> list[dict]:
        return load_records(self.out)


def load_records(out: str | Path) -> list[dict]:
    records = []
    for path in sorted((Path(out) / "records").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"record {path} is corrupt ({error}); delete it and re-run the grid") from None
    return records


def _groups(cells: list[Cell]) -> Iterator[tuple[tuple, list[Cell]]]:
    return itertools.groupby(cells, key=lambda c: (c.manipulation, c.n, c.seed))


def run_grid(config: GridConfig, out: str | Path, progress: bool = True) -> list[dict]:
    """Run every unfinished cell; returns the records written in this call."""
    store = ResultStore(out)
    resolved = to_dict(config) | {"model": config.model_name}
    write_yaml(Path(out) / "config.yaml", resolved)
    cells = expand_cells(config)
    pending = [c for c in cells if not store.done(c)]
    print(f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run -> {out}")
    if not pending:
        return []
    runtime = Runtime.create(config.device, config.compile, progress=False)
    recipe = config.resolved_recipe()
    dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
    val_size = config.dataset.resolved_val_size(len(dataset.train_labels))
    params = {m.name: m.params for m in config.manipulation_grids()}
    common = {"dataset": dataset.name, "model": config.model_name, "recipe": dataclasses.asdict(recipe),
              "environment": {**environment(), **runtime.describe()}}
    written = []
    bar = tqdm(total=len(pending), desc="grid", unit="cell", disable=not progress)
    for (name, n, seed), group in _groups(pending):
        setting = build_setting(dataset, name, n, seed, runtime, val_size, **params[name])
        bar.set_description(f"grid: original {name} n={n} seed {seed}")
        original, info = train_original(setting, config.model_name, recipe, runtime, use_cache=config.cache)
        base = {**common, "setting": setting.describe(), "index_hashes": setting.index_hashes(),
                "original_cache_key": info["cache_key"]}
        for rate, rate_cells in itertools.groupby(group, key=lambda c: c.rate):
            forget = deletion_set(setting, rate) if rate > 0 else None
            task = make_task(setting, original, forget, recipe, runtime) if forget is not None else None
            for cell in rate_cells:
                bar.set_description(f"grid: {cell.method} {name} n={n} rate {rate:.2f}")
                record = _run_cell(cell, setting, original, info, task, forget, runtime, base)
                store.write(cell, record)
                written.append(record)
                bar.update()
                metrics = record.get("metrics", {})
                bar.set_postfix_str(f"last {cell.method}: affected {metrics.get('affected_acc', float('nan')):.1f} "
                                    f"utility {metrics.get('utility_acc', float('nan')):.1f}"
                                    if record["status"] == "ok" else f"last {cell.method}: FAILED")
    bar.close()
    return written


def _run_cell(cell: Cell, setting, original, info, task, forget, runtime, base) -> dict:
    record = {**base, "cell": cell.id, "manipulation": cell.manipulation, "n": cell.n, "seed": cell.seed,
              "rate": cell.rate, "method": cell.method, "hparams": cell.hparams, "started": time.time()}
    try:
        if cell.method == ORIGINAL:
            model, method_seconds = original, info["train_seconds"]
            record["original_cache"] = info["cache"]
        else:
            record["index_hashes"] = {**base["index_hashes"], "forget": index_hash(forget)}
            record["forget_size"] = len(forget)
            task.notes.clear()
            with Stopwatch(runtime) as clock:
                model = METHODS.get(cell.method)(task, cell.hparams)
            method_seconds = clock.seconds
            record["method_notes"] = dict(task.notes)
        with Stopwatch(runtime) as clock:
            metrics = evaluate(model, setting, runtime, forget)
        record.update(status="ok", metrics=metrics,
                      timings={"method_seconds": method_seconds, "eval_seconds": clock.seconds})
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # recorded, and the grid goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    return record


def projection(config: GridConfig, records: list[dict]) -> str:
    """Projected wall time of the full paper grid for this config's methods and grids, from measured cells."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return "projection: no finished cells to measure"
    p = {"sizes": 3, "rates": 10, "seeds": 1, **config.projection}
    lines = [f"measured mean seconds per cell (method + evaluation), and the projection for the full grid "
             f"({p['sizes']} sizes x {p['rates']} rates x {p['seeds']} seed(s) x each manipulation):"]
    total = 0.0
    manipulations = len(config.manipulation_grids())
    for method in [ORIGINAL, *config.methods]:
        times = [r["timings"]["method_seconds"] + r["timings"]["eval_seconds"] for r in ok if r["method"] == method]
        if not times:
            continue
        per_cell = float(np.mean(times))
        count = manipulations * p["sizes"] * p["seeds"] * (
            1 if method == ORIGINAL else p["rates"] * len(config.method_settings(method)))
        total += per_cell * count
        lines.append(f"  {method:10s} {per_cell:8.2f} s/cell x {count:5d} cells = {per_cell * count / 60:7.1f} min")
    lines.append(f"  projected total: {total / 3600:.2f} h")
    return "\n".join(lines)
