"""A grid recipe -> cells: the config (``GridConfig``, validated by :func:`load_grid_config`) and its cells.

Cells are (manipulation, size, seed, discovery rate, method, hyperparameters), plus one ``original`` cell per
(manipulation, size, seed) holding the original model's metrics. :func:`units` cuts the pending cells into the
executors' units of work: the cells of one deletion set (they share an original model and a task).

With ``tow: {references: [retrain, clean], retain_samples: 5000}`` (default ``tow: null``: off) every method cell
also gets RUM's ToW (SPEC 7, in percent) against two references, both cached (:mod:`..references`). With
``forget_sets: [{by: confidence, level: high, size: 600}, ...]`` (RUM's study; it replaces ``rates``) the deletion
sets are chosen from the trained original over the whole training split (:mod:`..forget_sets`), not from S_m.
Manipulation ``none`` (the clean training set, n = 0) is the setting of RUM's own study and needs forget sets.

With ``expand: [0, 500]`` (default absent: ``[0]``; ``auto`` among them: K chosen from the scores by
:mod:`..suspects.auto`) each rate also gets a deletion set grown by the original
model's top-500 suspects (:mod:`..suspects`, ranked by ``expand_ranking``, default ``combined``): its cells' ids end
in ``-expand500-combined`` (cells without expansion keep their ids), their records carry ``suspects: {k, ranking,
precision, recall, ...}`` against the true S_m, and the ranking's cost is shared work of the rate
(:class:`~corrective_unlearning.suspects.expansion.Expansions`).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Iterator

from ..config import ConfigError, RunConfig, apply_overrides, from_dict, read_yaml
from ..forget_sets import ForgetSetSpec, parse_forget_sets
from ..manipulations import check_params
from ..methods import METHODS, expand_settings, hparams_key, needs_flagged, reads_reserve
from ..models import MODELS
from ..references import REFERENCES
from ..reserve import DEFAULT_FRACTION, check_fraction
from ..suspects import ranking_names

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
    # Clean reserve (corrective_unlearning.reserve): the fraction of the validation split that methods may train on
    # (selection and the guarded rule use the rest); null = half where a method of the grid reads the reserve
    # (ft_clean, nad, anp, i-bau, ft_after), else none (0). A rate of 0 in ``rates`` (the 0% discovery column) runs
    # only the methods that need no flagged sample, and those run only there (their result does not depend on S_f).
    clean_reserve: float | None = None

    def reserve_fraction(self) -> float:
        """``clean_reserve`` resolved: its value, or half when a method of the grid reads the reserve, else 0."""
        if self.clean_reserve is None:
            return DEFAULT_FRACTION if any(reads_reserve(name) for name in self.methods) else 0.0
        try:
            return check_fraction(self.clean_reserve)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def expand_sizes(self, method: str | None = None) -> list[int]:
        """The ``expand`` entries, validated; [0] when absent. With ``method``: that method's own ``expand``
        (``methods: {eu: {expand: [0, 300]}}``: only EU's deletion sets are grown) or else the grid's."""

        options = self.methods.get(method) if method is not None else None
        own = options.get("expand") if isinstance(options, dict) else None
        sizes = [0] if self.expand is None and own is None else own if own is not None else self.expand
        where = f"methods.{method}.expand" if own is not None else "expand"
        if not isinstance(sizes, list) or not sizes or any(
                k != "auto" and (isinstance(k, bool) or not isinstance(k, int) or k < 0) for k in sizes) or len(
                set(sizes)) != len(sizes):
            raise ConfigError(f"{where}: expected a non-empty list of distinct integers >= 0 (0 = no expansion) "
                              f"or auto (as many as the suspects' scores suggest), got {sizes!r}")
        if self.expand_ranking not in ranking_names():
            raise ConfigError(f"expand_ranking: expected one of {ranking_names()}, got {self.expand_ranking!r}")
        if self.forget_sets and any(sizes):
            raise ConfigError("expand grows deletion sets drawn from S_m by a discovery rate; it does not apply to "
                              "forget_sets")
        return sorted(sizes, key=_expand_order)

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
        unknown = sorted(set(options) - {"grid", "params", "expand"})
        if unknown:
            raise ConfigError(f"methods.{name}: unknown key(s) {unknown}; expected 'grid', 'params' and/or "
                              f"'expand'")
        settings = expand_settings(options.get("grid", spec.grid) or {}, options.get("params"))
        for setting in settings:
            spec.resolve(setting)  # raises on unknown hyperparameter names
        return settings


def load_grid_config(path: str | None, overrides: list[str]) -> GridConfig:
    data = read_yaml(path) if path else {}
    config = from_dict(GridConfig, apply_overrides(data, overrides))
    check_grid_lists(config)
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
            empty = [rate for rate in config.rates if rate != 0 and round(float(rate) * n) == 0]
            if empty:
                raise ConfigError(f"discovery rate {empty[0]} of {m.name} n = {n} gives an empty deletion set "
                                  f"(round({empty[0]} * {n}) = 0): raise the rate or n")
    for name in config.methods:
        config.method_settings(name)
    _check_reserve(config)  # clean reserve

    for i, m in enumerate(config.manipulation_grids()):
        check_params(m.name, m.params, f"manipulations[{i}].params")
    config.tow_options()
    for name in [None, *config.methods]:
        config.expand_sizes(name)
    seen = set()
    for cell in expand_cells(config):  # e.g. one manipulation listed twice: its cells would run twice
        if cell.id in seen:
            raise ConfigError(f"the grid has cell {cell.id} twice: a manipulation, size, seed or rate is listed "
                              f"more than once")
        seen.add(cell.id)
    return config


def check_grid_lists(config: GridConfig) -> None:
    """Seeds: distinct integers >= 0; rates: distinct numbers in (0, 1], also at the two decimals of a cell id;
    each manipulation's sizes distinct; a registered model. A ConfigError (one line) names the first problem."""

    seeds = config.seeds
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"seeds: expected a non-empty list of distinct integers >= 0, got {seeds!r}")
    for i, seed in enumerate(seeds):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seeds: expected distinct integers >= 0, got seeds[{i}] = {seed!r} "
                              f"({type(seed).__name__})")
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:
        raise ConfigError(f"seeds: {twice[0]} is listed twice (its cells would run twice); got {seeds!r}")
    if not isinstance(config.rates, list) or not config.rates:
        raise ConfigError(f"rates: expected a non-empty list of discovery rates in (0, 1], got {config.rates!r}")
    for rate in config.rates:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= float(rate) <= 1:
            raise ConfigError(f"discovery rates must be numbers in (0, 1] (or 0: the 0% discovery column of the "
                              f"methods that need no flagged sample), got {rate!r}")
    by_id: dict[str, object] = {}
    for rate in config.rates:
        label = f"{float(rate):.2f}"  # a cell id holds the rate to two decimals
        if label in by_id:
            same = float(by_id[label]) == float(rate)
            raise ConfigError(f"rates: {by_id[label]!r} and {rate!r} are one rate, listed twice (its cells would "
                              f"run twice)" if same else
                              f"rates: {by_id[label]!r} and {rate!r} are one rate in cell ids (rate{label}); "
                              f"give rates with at most two decimals")
        by_id[label] = rate
    for i, m in enumerate(config.manipulations or []):
        sizes = m.get("sizes") if isinstance(m, dict) else None
        if isinstance(sizes, list):
            twice = [n for j, n in enumerate(sizes) if n in sizes[:j]]
            if twice:
                raise ConfigError(f"manipulations[{i}].sizes: {twice[0]!r} is listed twice (its cells would run "
                                  f"twice); got {sizes!r}")
    if config.model_name not in MODELS:
        raise ConfigError(f"model: unknown model {config.model_name!r}; known models: {', '.join(MODELS.names())}")


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
    # top-K suspects added to the deletion set (grid key expand); 0 = S_f as identified; "auto": K chosen from the
    # scores (suspects.auto), the id then ends in -expandauto-<ranking>
    expand: int | str = 0
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


def _expand_order(k) -> tuple:
    """Expansion sizes in order: the numbers ascending, then ``auto``."""
    return (1, 0) if k == "auto" else (0, k)


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
            sizes = {name: config.expand_sizes(name) for name in config.methods}
            for rate in ([] if forget_sets else sorted(float(r) for r in config.rates)):
                for k in sorted({k for own in sizes.values() for k in own}, key=_expand_order):
                    ranking = config.expand_ranking if k else ""
                    for name in (name for name in config.methods if k in sizes[name]
                                 and _runs_at(config, name, rate, k)):
                        cells += [Cell(m.name, params, n, seed, rate, name, hp, i, "", k, ranking)
                                  for i, hp in enumerate(config.method_settings(name))]
    return cells



def _runs_at(config: GridConfig, name: str, rate: float, expand: int) -> bool:
    """The 0% discovery column (rate 0): only methods that need no flagged sample, and, when the grid has it,
    those methods run only there and unexpanded (they read no S_f, so every other rate would repeat them)."""
    if needs_flagged(name):
        return rate > 0
    has_zero = any(float(r) == 0 for r in config.rates)
    return (rate == 0 and expand == 0) if has_zero else True


def _check_reserve(config: GridConfig) -> None:
    """The clean reserve's fraction is valid, and a grid with a reserve-reading method has a reserve; rate 0 needs
    a method that runs without flagged samples."""
    fraction = config.reserve_fraction()
    readers = [name for name in config.methods if reads_reserve(name)]
    if readers and fraction == 0:
        raise ConfigError(f"methods {readers} train on the clean reserve, and clean_reserve is 0: give it a "
                          f"fraction of the validation split, e.g. clean_reserve: 0.5")
    if readers and config.dataset.val_size == 0:
        raise ConfigError(f"methods {readers} train on the clean reserve, a part of the validation split, and "
                          f"dataset.val_size is 0")
    if any(float(r) == 0 for r in config.rates if isinstance(r, (int, float))) and all(
            needs_flagged(name) for name in config.methods):
        raise ConfigError("rates: 0 (0% discovery) runs only methods that need no flagged sample (ft_clean, nad, "
                          "anp, i-bau), and the grid has none")


def setting_key(cell: Cell) -> tuple:
    """The cells with one key share an original model (and its manipulated training set)."""
    return cell.manipulation, cell.params, cell.n, cell.seed


def units(cells: list[Cell]) -> list[list[Cell]]:
    """The executors' units of work: the cells of one deletion set (in grid order), so a unit shares one task and
    its shared work (SSD's importances, SCRUB's teacher logits), and a crash loses at most one unit's unfinished
    cells. Units of one setting are contiguous: a worker that runs them one after the other keeps the original."""
    key = lambda c: (*setting_key(c), c.rate, c.forget_set, c.expand)  # noqa: E731
    return [list(group) for _, group in itertools.groupby(cells, key=key)]


def groups(cells: list[Cell]) -> Iterator[tuple[tuple, list[Cell]]]:
    return itertools.groupby(cells, key=setting_key)
