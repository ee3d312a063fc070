"""The grid runner: a YAML recipe -> cells -> one record per cell, resumable.

Cells are (manipulation, size, seed, discovery rate, method, hyperparameters), plus one ``original`` cell per
(manipulation, size, seed) holding the original model's metrics. The original model is trained once per
(manipulation, size, seed) and cached; a deletion set and its :class:`Task` are built once per rate and shared
by every method and hyperparameter setting of that rate. Each finished cell is written atomically as
``<out>/records/<cell id>.json``, so an interrupted run resumes where it stopped; a failing cell is recorded
with its error and the grid goes on (failed cells are retried on the next run).

With ``tow: {references: [retrain, clean], retain_samples: 5000}`` (default ``tow: null``: off) every method cell
also gets RUM's ToW (SPEC 7, in percent) against two references, both cached (:mod:`.references`): the model
retrained on the retain set (one per deletion set) and the clean oracle (one per seed). A deletion set's references
are obtained and scored once, before its first method runs, written to ``<out>/references/<deletion set>.json``
and copied into its records as ``references``; their cost is never in a method's time.

With ``forget_sets: [{by: confidence, level: high, size: 600}, ...]`` (RUM's study; it replaces ``rates``) the
deletion sets are chosen from the trained original over the whole training split (:mod:`.forget_sets`), not
from S_m: each forget set is one group of cells (``Cell.forget_set``, its label, e.g. ``confidence-high-600``;
``rate`` 1.0), selected once after the original is trained and described (measured ES, proxy range) in
``<out>/forget_sets/<deletion set>.json`` and in its records as ``forget_set_info``. Manipulation ``none`` (the
clean training set, n = 0) is the setting of RUM's own study and needs forget sets.

With ``expand: [0, 500]`` (default absent: ``[0]``) each rate also gets a deletion set grown by the original
model's top-500 suspects (:mod:`.suspects`, ranked by ``expand_ranking``, default ``combined``): its cells'
ids end in ``-expand500-combined`` (cells without expansion keep their ids), their records carry
``suspects: {k, ranking, precision, recall, ...}`` against the true S_m, and the ranking's cost is shared work of
the rate (:class:`~corrective_unlearning.suspects.expansion.Expansions`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import ConfigError, RunConfig, apply_overrides, from_dict, read_yaml, to_dict, write_yaml
from .data import load_dataset
from .evaluation.tow import tow_accuracies
from .evaluation import collect_predictions, compute_metrics, predict
from .experiment import Setting, build_setting, train_original
from .forget_sets import ForgetSetSelector, ForgetSetSpec, parse_forget_sets, timed_selection
from .manipulations import index_hash
from .methods import METHODS, Task, expand_grid, hparams_key
from .records import environment, write_json_atomic
from .references import REFERENCES, DeletionSetReferences, deletion_set_references, train_clean_oracle
from .runtime import Runtime, Stopwatch
from .suspects.expansion import Expansions

ORIGINAL = "original"


@dataclass
class ManipulationGrid:
    name: str
    sizes: list[int]
    params: dict = field(default_factory=dict)


@dataclass
class TowConfig:
    """``tow:`` in a grid config. ``references``: which of ``retrain`` (the model retrained on the retain set, RUM's
    reference) and ``clean`` (the clean oracle, every manipulation undone) to compare against; ``retain_samples``:
    how many retain samples (a seeded subsample, the same for every model of a deletion set) A_r is measured on
    (null: all of them)."""

    references: list[str] = field(default_factory=lambda: list(REFERENCES))
    retain_samples: int | None = 5000


@dataclass
class GridConfig(RunConfig):
    """``corrective run``: manipulations x sizes x seeds x rates x methods and their grids."""

    manipulations: list = field(default_factory=list)
    rates: list = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])
    seeds: list = field(default_factory=lambda: [0])
    # name -> {grid: {...}, params: {...}} or null for the paper grid; a grid may also be a list of grids (their
    # settings one after the other, e.g. [{method: [cf, salun]}, {order: [shuffle]}] for RUM)
    methods: dict = field(default_factory=dict)
    projection: dict = field(default_factory=lambda: {"sizes": 3, "rates": 10, "seeds": 1})
    # ToW (RUM, SPEC 7) against cached references: null = off (no reference is trained), or
    # {references: [retrain, clean], retain_samples: 5000}; see TowConfig.
    tow: dict | None = None
    # RUM's study: forget sets chosen from the original by a memorization proxy, entanglement or at random, e.g.
    # [{by: confidence, level: high, size: 600}, {by: entanglement, level: low, size: 600}]; when present it
    # replaces ``rates`` (see corrective_unlearning.forget_sets).
    forget_sets: list | None = None
    # Finding the rest (corrective_unlearning.suspects): per rate, deletion sets grown by the original model's top-K
    # suspects, e.g. expand: [0, 500] (0 = S_f as identified); ranked by expand_ranking.
    expand: list | None = None
    expand_ranking: str = "combined"

    def expand_sizes(self) -> list[int]:
        """The ``expand`` entries, validated; [0] when absent."""
        from .suspects import ranking_names

        sizes = [0] if self.expand is None else self.expand
        if not isinstance(sizes, list) or not sizes or any(
                isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in sizes) or len(set(sizes)) != len(sizes):
            raise ConfigError(f"expand: expected a non-empty list of distinct integers >= 0 (0 = no expansion), "
                              f"got {self.expand!r}")
        if self.expand_ranking not in ranking_names():
            raise ConfigError(f"expand_ranking: expected one of {ranking_names()}, got {self.expand_ranking!r}")
        if self.forget_sets and any(sizes):
            raise ConfigError("expand grows deletion sets drawn from S_m by a discovery rate; it does not apply to "
                              "forget_sets")
        return sorted(sizes)

    def forget_set_specs(self) -> list[ForgetSetSpec]:
        """The ``forget_sets`` entries, validated; [] for a rate-based grid."""
        return [] if self.forget_sets is None else parse_forget_sets(self.forget_sets)

    def tow_options(self) -> TowConfig | None:
        """The ``tow`` section with its defaults filled in, validated; None when ToW is off."""
        if self.tow is None:
            return None
        options = from_dict(TowConfig, self.tow, "tow")
        if not isinstance(options.references, list) or not options.references:
            raise ConfigError(f"tow.references: expected a non-empty list of {list(REFERENCES)}, got "
                              f"{options.references!r}")
        unknown = [r for r in options.references if r not in REFERENCES]
        if unknown or len(set(options.references)) != len(options.references):
            raise ConfigError(f"tow.references: expected distinct names among {list(REFERENCES)}, got "
                              f"{options.references!r}")
        if options.retain_samples is not None and options.retain_samples < 1:
            raise ConfigError(f"tow.retain_samples: expected an integer >= 1 (or null: the whole retain set), got "
                              f"{options.retain_samples!r}")
        return options

    def manipulation_grids(self) -> list[ManipulationGrid]:
        if not self.manipulations:
            raise ConfigError("grid config: 'manipulations' is empty; expected e.g. [{name: poison, sizes: [500]}]")
        return [from_dict(ManipulationGrid, m, f"manipulations[{i}]") for i, m in enumerate(self.manipulations)]

    def method_settings(self, name: str) -> list[dict]:
        """Every hyperparameter setting to run for method ``name``: its grid (the paper's unless overridden)
        crossed with fixed params, each validated against the method's declared hyperparameters."""
        spec = METHODS.get(name)
        options = self.methods.get(name) or {}
        if not isinstance(options, dict):
            raise ConfigError(f"methods.{name}: expected a mapping with 'grid' and/or 'params' (or null for the "
                              f"paper grid), got {type(options).__name__} {options!r}")
        grids = options.get("grid")
        if isinstance(grids, list) and grids and all(isinstance(g, dict) for g in grids):
            pass  # a union of grids: e.g. RUM^F for several methods, and the shuffle control of full RUM only
        elif grids is not None and not isinstance(grids, dict):
            raise ConfigError(f"methods.{name}.grid: expected a mapping (name -> list of values), or a non-empty "
                              f"list of them, got {type(grids).__name__} {grids!r}")
        if options.get("params") is not None and not isinstance(options["params"], dict):
            raise ConfigError(f"methods.{name}.params: expected a mapping (name -> value), got "
                              f"{type(options['params']).__name__} {options['params']!r}")
        unknown = sorted(set(options) - {"grid", "params"})
        if unknown:
            raise ConfigError(f"methods.{name}: unknown key(s) {unknown}; expected 'grid' and/or 'params'")
        grid = options.get("grid", spec.grid) or {}
        points = [p for g in (grid if isinstance(grid, list) else [grid]) for p in expand_grid(g)]
        points = list({hparams_key(p): p for p in points}.values())  # a setting listed twice runs once
        settings = [{**options.get("params", {}), **point} for point in points]
        for setting in settings:
            spec.resolve(setting)  # raises on unknown hyperparameter names
        return settings


def load_grid_config(path: str | None, overrides: list[str]) -> GridConfig:
    data = read_yaml(path) if path else {}
    config = from_dict(GridConfig, apply_overrides(data, overrides))
    for rate in config.rates:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < float(rate) <= 1:
            raise ConfigError(f"discovery rates must be numbers in (0, 1], got {rate!r}")
    forget_sets = config.forget_set_specs()
    for m in config.manipulation_grids():
        for n in m.sizes:
            if m.name == "none":
                if n != 0 or isinstance(n, bool):
                    raise ConfigError(f"manipulations: none leaves the training set clean, so its only size is 0 "
                                      f"(S_m is empty), got {n!r}")
                if not forget_sets:
                    raise ConfigError("manipulations: none has no manipulated samples for discovery rates to draw "
                                      "from: give forget_sets, e.g. [{by: confidence, level: high, size: 600}]")
                continue
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ConfigError(f"manipulations: {m.name} size {n!r} must be an integer >= 1")
            if forget_sets:
                continue  # forget sets replace the rates
            empty = [rate for rate in config.rates if round(float(rate) * n) == 0]
            if empty:
                raise ConfigError(f"discovery rate {empty[0]} of {m.name} n = {n} gives an empty deletion set "
                                  f"(round({empty[0]} * {n}) = 0): raise the rate or n")
    for name in config.methods:
        config.method_settings(name)
    from .manipulations import check_params

    for i, m in enumerate(config.manipulation_grids()):
        check_params(m.name, m.params, f"manipulations[{i}].params")
    config.tow_options()
    config.expand_sizes()
    return config


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Cell:
    manipulation: str
    params: str  # the manipulation's params as canonical JSON, "" when it has none
    n: int
    seed: int
    rate: float
    method: str
    hparams: dict
    setting_index: int = 0  # position of ``hparams`` in the method's grid: selection ties go to grid order
    forget_set: str = ""  # a forget set's label (grid key forget_sets; rate 1.0), "" for a rate-based cell
    expand: int = 0  # top-K suspects added to the deletion set (grid key expand); 0 = S_f as identified
    expand_ranking: str = ""  # the ranking that chose them ("" when expand is 0)

    @property
    def variant(self) -> str:
        """The manipulation with its params: two variants of one manipulation are different settings."""
        return f"{self.manipulation} {self.params}" if self.params else self.manipulation

    @property
    def id(self) -> str:
        return f"{self.deletion_set_id}-{self.method}-{_digest(hparams_key(self.hparams))}"

    @property
    def deletion_set_id(self) -> str:
        """The cell id up to the rate (or the forget set's label): the cells of one deletion set share it."""
        manipulation = f"{self.manipulation}-{_digest(self.params)}" if self.params else self.manipulation
        if self.forget_set:
            return f"{manipulation}-n{self.n}-seed{self.seed}-{self.forget_set}"
        expanded = f"-expand{self.expand}-{self.expand_ranking}" if self.expand else ""  # 0: the ids of old
        return f"{manipulation}-n{self.n}-seed{self.seed}-rate{self.rate:.2f}{expanded}"

    def manipulation_params(self) -> dict:
        return json.loads(self.params) if self.params else {}


def expand_cells(config: GridConfig) -> list[Cell]:
    """Ordered so that cells sharing an original model, then a deletion set, are contiguous. With
    ``forget_sets``, one deletion set per forget set (in the config's order, rate 1.0) instead of the rates."""
    cells = []
    forget_sets = config.forget_set_specs()
    for m in config.manipulation_grids():
        params = hparams_key(m.params) if m.params else ""
        for n, seed in itertools.product(m.sizes, config.seeds):
            cells.append(Cell(m.name, params, n, seed, 0.0, ORIGINAL, {}))
            for spec in forget_sets:
                for name in config.methods:
                    cells += [Cell(m.name, params, n, seed, 1.0, name, hp, i, spec.label)
                              for i, hp in enumerate(config.method_settings(name))]
            for rate in ([] if forget_sets else sorted(float(r) for r in config.rates)):
                for k in config.expand_sizes():
                    ranking = config.expand_ranking if k else ""
                    for name in config.methods:
                        cells += [Cell(m.name, params, n, seed, rate, name, hp, i, "", k, ranking)
                                  for i, hp in enumerate(config.method_settings(name))]
    return cells


def deletion_set(setting: Setting, rate: float) -> torch.Tensor:
    """A seeded uniform subset of S_m of size round(rate * n). Nested across rates for one seed (the first
    k of one permutation), so curves over the discovery rate compare like with like."""
    manipulated = setting.manipulated.manipulated
    order = np.random.default_rng([setting.seed, 7]).permutation(len(manipulated))
    return torch.sort(manipulated[order[: round(rate * len(manipulated))]]).values


def make_task(setting: Setting, original, forget: torch.Tensor, recipe, runtime: Runtime,
              info: dict | None = None) -> Task:
    """The task of one deletion set. Its ``memorization`` capability reads the original's proxy scores through
    :func:`~corrective_unlearning.proxies.memorization_scores` with ``info`` from ``train_original`` (without
    ``info``, only scores kept with the model object in memory and proxies that need no record of the original
    can be read)."""
    from .proxies import memorization_scores

    device = runtime.device
    m = setting.manipulated

    def memorization(name: str, params: dict) -> torch.Tensor:
        return memorization_scores(name, setting, original, info or {}, runtime, **params)

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
        memorization=memorization,
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
    return itertools.groupby(cells, key=lambda c: (c.manipulation, c.params, c.n, c.seed))


# What an original model and its manipulation depend on: a finished cell computed under other values is not a
# cell of this config, so resuming with any of them changed is refused. Data locations may move.
IDENTITY_KEYS = ("dataset", "model", "recipe", "manipulations")
LOCATION_KEYS = ("data_dir", "path", "download")


def _identity(config: dict) -> dict:
    identity = {key: config.get(key) for key in IDENTITY_KEYS}
    identity["dataset"] = {k: v for k, v in (identity["dataset"] or {}).items() if k not in LOCATION_KEYS}
    identity["manipulations"] = {}  # name -> its params variants: adding a manipulation is fine, changing one is not
    for m in config.get("manipulations") or []:
        identity["manipulations"].setdefault(m.get("name"), []).append(hparams_key(m.get("params") or {}))
    identity["manipulations"] = {name: sorted(set(params)) for name, params in identity["manipulations"].items()}
    return identity


def check_resume(out: Path, resolved: dict) -> None:
    """Refuse to resume ``out`` with another dataset, model, recipe or manipulation than the one it holds."""
    stored_path = out / "config.yaml"
    if not stored_path.exists():
        return
    try:
        stored = read_yaml(stored_path)
    except ConfigError as error:
        raise ConfigError(f"{out} holds an unreadable config.yaml ({error}); use another --out") from None
    old, new = _identity(stored), _identity(resolved)
    old["recipe"], new["recipe"] = stored.get("resolved_recipe", old["recipe"]), resolved.get("resolved_recipe")
    only_one_side = set(old["manipulations"]) ^ set(new["manipulations"])  # added or left out: not a change
    for name in only_one_side:
        old["manipulations"].pop(name, None)
        new["manipulations"].pop(name, None)
    changed = _differences(old, new)
    if changed:
        raise ConfigError(f"{out} holds results of another setting: {', '.join(changed)} changed since they "
                          f"were computed. Use another --out, or delete {out} to start over (methods, rates, "
                          f"seeds and further manipulations may be added on resume; the dataset, model, recipe and "
                          f"the params of a manipulation already there may not change)")


def _differences(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))]
    return [] if old == new else [f"{prefix} ({old!r} -> {new!r})"]


def run_grid(config: GridConfig, out: str | Path, progress: bool = True) -> list[dict]:
    """Run every unfinished cell; returns the records written in this call."""
    store = ResultStore(out)
    recipe = config.resolved_recipe()
    resolved = to_dict(config) | {"model": config.model_name, "resolved_recipe": dataclasses.asdict(recipe)}
    check_resume(Path(out), resolved)
    write_yaml(Path(out) / "config.yaml", resolved)
    cells = expand_cells(config)
    pending = [c for c in cells if not store.done(c)]
    print(f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run -> {out}")
    if not pending:
        return []
    runtime = Runtime.create(config.device, config.compile, progress=False)
    dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
    val_size = config.dataset.resolved_val_size(len(dataset.train_labels))
    common = {"dataset": dataset.name, "model": config.model_name, "recipe": dataclasses.asdict(recipe),
              "environment": {**environment(), **runtime.describe()}}
    written = []
    tow = config.tow_options()
    forget_specs = {spec.label: spec for spec in config.forget_set_specs()}
    oracles: dict = {}  # clean oracles obtained in this run, by cache key (one serves every variant and size)
    bar = tqdm(total=len(pending), desc="grid", unit="cell", disable=not progress)
    for (name, _, n, seed), group in _groups(pending):
        group = list(group)
        bar.set_description(f"grid: original {group[0].variant} n={n} seed {seed}")
        try:
            setting = build_setting(dataset, name, n, seed, runtime, val_size, **group[0].manipulation_params())
            original, info = train_original(setting, config.model_name, recipe, runtime, use_cache=config.cache)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # a diverging original fails its own cells; the other settings go on
            for cell in group:
                record = {**common, **_cell_fields(cell), "status": "failed", "traceback": traceback.format_exc(),
                          "error": f"original model: {type(error).__name__}: {error}"}
                store.write(cell, record)
                written.append(record)
                bar.update()
            continue
        base = {**common, "setting": setting.describe(), "index_hashes": setting.index_hashes(),
                "original_cache_key": info["cache_key"]}
        clean_oracle = _first_use(_once(functools.partial(train_clean_oracle, setting, config.model_name, recipe,
                                                          runtime, config.cache, oracles)))
        # the training split is embedded once per original, and only when an entanglement set needs it
        selector = ForgetSetSelector(setting, original, info, runtime,
                                     full_embeddings=any(s.kind == "entanglement" for s in forget_specs.values()))
        expansions = Expansions(setting, original, runtime, key=info["cache_key"])  # once per (rate, ranking)
        for (rate, label, k), rate_cells in itertools.groupby(group, key=lambda c: (c.rate, c.forget_set, c.expand)):
            rate_cells = list(rate_cells)
            cell_base, where = base, f"rate {rate:.2f}"
            if label:  # a forget set chosen from the original (once per set; its cost is no method's)
                where = label
                try:
                    forget, description = timed_selection(selector, forget_specs[label], seed)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # e.g. a proxy the original lacks: that set's cells fail
                    for cell in rate_cells:
                        record = {**base, **_cell_fields(cell), "status": "failed", "traceback":
                                  traceback.format_exc(), "error": f"forget set {label}: {type(error).__name__}: "
                                                                   f"{error}"}
                        store.write(cell, record)
                        written.append(record)
                        bar.update()
                    continue
                write_json_atomic(Path(out) / "forget_sets" / f"{rate_cells[0].deletion_set_id}.json",
                                  {"deletion_set": rate_cells[0].deletion_set_id, "written": time.time(),
                                   "original_cache_key": info["cache_key"], "forget_hash": index_hash(forget),
                                   **description})
                cell_base = {**base, "forget_set_info": description}
            else:
                forget = deletion_set(setting, rate) if rate > 0 else None
            charge = None
            if k:  # grown by the original's top-k suspects (grid key expand)
                ranking = rate_cells[0].expand_ranking
                try:
                    forget, block = expansions.grow(forget, rate, k, ranking)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # e.g. cleanlab missing: this deletion set's cells fail
                    for cell in rate_cells:
                        record = {**base, **_cell_fields(cell), "status": "failed", "traceback":
                                  traceback.format_exc(), "error": f"suspects: {type(error).__name__}: {error}"}
                        store.write(cell, record)
                        written.append(record)
                        bar.update()
                    continue
                cell_base = {**cell_base, "suspects": {"k": k, **block}}
                charge = functools.partial(expansions.charge, rate, k, ranking)
            # Built once per deletion set, on first use inside a cell: a task that cannot be built fails its cells.
            task = functools.cache(lambda forget=forget: make_task(setting, original, forget, recipe, runtime, info))
            references = None
            if tow is not None and forget is not None:  # ToW: both references once per deletion set, on first use
                references = _once(functools.partial(
                    _deletion_set_references, setting, original, info, forget, task, tow, clean_oracle, runtime,
                    config.cache, Path(out) / "references" / f"{rate_cells[0].deletion_set_id}.json"))
            for cell in rate_cells:
                bar.set_description(f"grid: {cell.method} {cell.variant} n={n} {where}")
                record = _run_cell(cell, setting, original, info, task, forget, runtime, cell_base, references, charge)
                store.write(cell, record)
                written.append(record)
                bar.update()
                metrics = record.get("metrics", {})
                bar.set_postfix_str(f"last {cell.method}: affected {metrics.get('affected_acc', float('nan')):.1f} "
                                    f"utility {metrics.get('utility_acc', float('nan')):.1f}"
                                    if record["status"] == "ok" else f"last {cell.method}: FAILED")
    bar.close()
    return written


def _once(compute: Callable[[], object]) -> Callable[[], object]:
    """``compute()`` on the first call; later calls return its value, or raise its error again (a reference that
    cannot be trained fails every cell that needs it, without being retrained for each)."""
    outcome: list = []

    def get():
        if not outcome:
            try:
                outcome.append((True, compute()))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:
                outcome.append((False, error))
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    return get


def _first_use(get: Callable[[], tuple]) -> Callable[[], tuple]:
    """A (model, info) getter whose info says ``cache: reused`` (nothing paid) after its first use: the cost of a
    reference shared by several deletion sets is recorded with the first of them only."""
    uses = []

    def first() -> tuple:
        model, info = get()
        uses.append(True)
        return (model, info) if len(uses) == 1 else (model, {**info, "cache": "reused", "seconds_this_run": 0.0})

    return first


def _deletion_set_references(setting, original, info, forget, task, tow: TowConfig, clean_oracle, runtime,
                             use_cache: bool, path: Path) -> DeletionSetReferences:
    """One deletion set's ToW references, scored once; also written to ``<out>/references/<deletion set>.json``,
    the one record of their cost (``train_seconds``: the synchronised training time, measured when the model was
    trained; ``cache``: miss = trained in this run, hit = read from the cache, reused = already obtained in this
    run for another deletion set; ``seconds_this_run``: what obtaining it cost this run). None of it is charged to
    a method's ``method_seconds``."""
    references = deletion_set_references(setting, original, forget, task, tow.references, tow.retain_samples,
                                         info["cache_key"], clean_oracle, runtime, use_cache)
    write_json_atomic(path, {"deletion_set": path.stem, "written": time.time(), "retain_samples": tow.retain_samples,
                             "original_cache_key": info["cache_key"], **references.block()})
    return references


def _cell_fields(cell: Cell) -> dict:
    return {"cell": cell.id, "manipulation": cell.manipulation, "manipulation_variant": cell.variant,
            "n": cell.n, "seed": cell.seed, "rate": cell.rate, "forget_set": cell.forget_set,
            "method": cell.method, "hparams": cell.hparams, "setting_index": cell.setting_index, "expand": cell.expand}


def evaluate_cell(model, setting: Setting, runtime: Runtime, forget: torch.Tensor | None) -> dict:
    """SPEC 8's metrics of one cell (:func:`~corrective_unlearning.evaluation.compute_metrics`). The training
    predictions cover S_m and the validation split; a forget set chosen outside S_m (grid key ``forget_sets``)
    is predicted too, so its deletion change and forget accuracy are measured, not read from unset entries. For
    a deletion set inside S_m this is exactly ``experiment.evaluate``."""
    predictions = collect_predictions(model, setting, runtime)
    if forget is not None:
        forget = forget.cpu()
        missing = forget[predictions.train[forget] < 0]
        if len(missing):
            predictions.train[missing] = predict(model, setting.train_bank, missing, runtime,
                                                 stamp=setting.manipulated.triggered[missing]).cpu()
    return compute_metrics(setting, predictions, forget)


def _run_cell(cell: Cell, setting, original, info, make_task: Callable[[], Task], forget, runtime, base,
              references: Callable[[], DeletionSetReferences] | None = None,
              charge: Callable[[dict], None] | None = None) -> dict:
    """``references``: this deletion set's ToW references (grid option ``tow``), obtained before the method runs
    (their cost is never in ``method_seconds``); the ``original`` cell has no deletion set and no ToW: the original
    model's ToW at each deletion set is ``original_tow_*`` in that deletion set's records. ``charge``: books the
    suspects that grew this deletion set (grid option ``expand``) on the cell's timings, as shared work."""
    record = {**base, **_cell_fields(cell), "started": time.time()}
    try:
        shared = {}
        refs = None
        if cell.method == ORIGINAL:
            model, method_seconds = original, info["train_seconds"]
            record["original_cache"] = info["cache"]
        else:
            if references is not None:
                try:
                    refs = references()
                except Exception as error:
                    raise RuntimeError(f"ToW references: {type(error).__name__}: {error}") from error
            task = make_task()
            record["index_hashes"] = {**base["index_hashes"], "forget": index_hash(forget)}
            record["forget_size"] = len(forget)
            task.start_run()
            with Stopwatch(runtime) as clock:
                model = METHODS.get(cell.method)(task, cell.hparams)
            method_seconds = clock.seconds
            record["method_notes"] = dict(task.notes)
            # Work shared with later cells of this deletion set is included in method_seconds of the cell that
            # paid it; the report adds it back to the cells that reused it to show what one run costs.
            shared = {"shared_seconds": sum(task.shared_paid.values()), "shared_paid": dict(task.shared_paid),
                      "shared_reused": list(task.shared_reused)}
        with Stopwatch(runtime) as clock:
            metrics = evaluate_cell(model, setting, runtime, forget)
        tow_timing = {}
        if refs is not None:
            with Stopwatch(runtime) as tow_clock:  # the same test predictions as test_acc: not made twice
                u = tow_accuracies(model, setting, forget, refs.retain, runtime, test_acc=metrics["test_acc"])
            metrics.update(refs.metrics(u))
            record.update(tow={"accuracies": u}, references=refs.block())
            tow_timing = {"tow_eval_seconds": tow_clock.seconds}
        timings = {"method_seconds": method_seconds, "eval_seconds": clock.seconds, **tow_timing, **shared}
        if charge is not None and cell.method != ORIGINAL:
            charge(timings)
        record.update(status="ok", metrics=metrics, timings=timings)
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
    deletion_sets = len(config.forget_set_specs()) or p["rates"]
    if config.forget_sets:
        lines[0] = lines[0].replace(f"{p['rates']} rates", f"{deletion_sets} forget sets")
    for method in [ORIGINAL, *config.methods]:
        times = [r["timings"]["method_seconds"] + r["timings"]["eval_seconds"] for r in ok if r["method"] == method]
        if not times:
            continue
        per_cell = float(np.mean(times))
        count = manipulations * p["sizes"] * p["seeds"] * (
            1 if method == ORIGINAL else deletion_sets * len(config.method_settings(method)))
        total += per_cell * count
        lines.append(f"  {method:10s} {per_cell:8.2f} s/cell x {count:5d} cells = {per_cell * count / 60:7.1f} min")
    lines.append(f"  projected total: {total / 3600:.2f} h")
    return "\n".join(lines)
