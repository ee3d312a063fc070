"""Running cells: what a worker does with one unit (the cells of one deletion set), whichever executor runs it.

The original model is trained once per (manipulation, size, seed) and cached (``$CORRECTIVE_CACHE_DIR``, which
every worker must see: on a cluster, a shared filesystem path); a file lock beside the cache makes a second worker
that needs the same original wait and then load it rather than train it again. A worker keeps its last setting
(data, original, clean oracle, forget-set selector) in memory, so the units of one setting cost one original.
A deletion set and its :class:`Task` are built once per unit and shared by every method and hyperparameter setting
of that rate. Each finished cell is written atomically as ``<out>/records/<cell id>.json`` by the worker that ran
it; a failing cell is recorded with its error and the grid goes on (failed cells are retried on the next run).

ToW references of a deletion set are obtained and scored once, before its first method runs, written to
``<out>/references/<deletion set>.json`` and copied into its records as ``references``; their cost is never in a
method's time. A forget set (grid key ``forget_sets``) is selected once per unit and described in
``<out>/forget_sets/<deletion set>.json`` and in its records as ``forget_set_info``.

A setting that provably gives the same model as another setting of its deletion set that already ran in this unit
(:data:`EQUIVALENT_SETTINGS`: SSD with ``alpha <= lambda`` depends on lambda alone, see
:func:`~corrective_unlearning.methods.ssd.equivalence_key`) is not run again: its record copies that cell's metrics,
notes and ToW, names it in ``shared_with``, and is charged 0 method and evaluation seconds (``timings.shared_model``
says whose time it was).

Here: the :class:`Worker`. One cell's run and its record: :mod:`.record`; ToW references: :mod:`.tow`; the cache
lock: :mod:`.lock`; memo helpers: :mod:`.memo`; the deletion set and its task:
:func:`~corrective_unlearning.experiment.deletion_set`, :func:`~corrective_unlearning.experiment.make_task`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..cache import cache_key
from ..data import load_dataset
from ..experiment import (
    OriginalInfo,
    Setting,
    build_setting,
    deletion_set,
    make_task,
    original_spec,
    train_original,
)
from ..forget_sets import ForgetSetSelector, timed_selection
from ..manipulations import index_hash
from ..methods import METHODS
from ..methods.ssd import equivalence_key as ssd_equivalence_key
from ..records import Record, environment, write_json_atomic
from ..references import clean_oracle_spec, train_clean_oracle
from ..runtime import Runtime
from ..suspects.expansion import Expansions
from .lock import cache_lock
from .memo import first_use, once
from .record import failed_record, run_cell, shared_record
from .spec import ORIGINAL, Cell, GridConfig, setting_key
from .store import ResultStore
from .tow import write_deletion_set_references

# method -> (resolved hyperparameters -> a key equal for exactly the settings that give bit-identical models on one
# deletion set, or None); each rule carries its proof
EQUIVALENT_SETTINGS: dict[str, Callable[[dict], object]] = {"ssd": ssd_equivalence_key}


def equivalence(cell: Cell) -> tuple | None:
    """The key of the cells of one deletion set whose models are provably identical to ``cell``'s, or None."""
    rule = EQUIVALENT_SETTINGS.get(cell.method)
    if rule is None:
        return None
    try:
        key = rule(METHODS.get(cell.method).resolve(cell.hparams))
    except (KeyError, TypeError, ValueError):  # a setting the method refuses runs (and fails) on its own
        return None
    return None if key is None else (cell.method, key)


# -- a worker: one unit (the cells of one deletion set) at a time, its setting kept warm ----------------------------

@dataclasses.dataclass
class _Original:
    """One setting as a worker holds it: its data and original model (or why they could not be had)."""

    setting: Setting | None = None
    original: torch.nn.Module | None = None
    info: OriginalInfo | None = None
    base: dict | None = None
    clean_oracle: Callable[[], tuple] | None = None
    selector: ForgetSetSelector | None = None
    expansions: Expansions | None = None  # the original's suspect rankings (grid option expand), once per rate
    error: str = ""
    traceback: str = ""


class _UnitFailed(Exception):
    """A step that every cell of a unit needs failed: they all fail with ``error``."""

    def __init__(self, error: str, trace: str) -> None:
        super().__init__(error)
        self.error, self.trace = error, trace


def _unit_step(what: str, step: Callable, *args):
    """``step(*args)``; its failure as :class:`_UnitFailed`, named by ``what``."""
    try:
        return step(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:
        raise _UnitFailed(f"{what}: {type(error).__name__}: {error}", traceback.format_exc()) from error


class Worker:
    """Runs units of one grid, writing each finished cell's record to the store. Long-lived: the dataset, the
    runtime (and its compiled models) and the last setting's original stay in memory across units.
    ``name`` identifies its progress file (``<out>/progress/<name>.json``) for ``corrective status``."""

    def __init__(self, config: GridConfig, out: str | Path, name: str = "local", device: str | None = None) -> None:
        self.config, self.out, self.name = config, Path(out), name
        self.store = ResultStore(out)
        self.recipe = config.resolved_recipe()
        self.runtime = Runtime.create(device or config.device, config.compile, progress=False)
        self.dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
        self.val_size = config.dataset.resolved_val_size(len(self.dataset.train_labels))
        self.common = {"dataset": self.dataset.name, "model": config.model_name,
                       "recipe": self.recipe.to_dict(),
                       "environment": {**environment(), **self.runtime.describe()}}
        self.tow = config.tow_options()
        self.forget_specs = {spec.label: spec for spec in config.forget_set_specs()}
        self.oracles: dict = {}  # clean oracles obtained by this worker, by cache key (one serves every variant)
        self._held: tuple[tuple, _Original] | None = None

    def run_unit(self, cells: list[Cell], on_record: Callable[[dict], None] | None = None) -> list[dict]:
        """Run ``cells`` (one deletion set, grid order); every record is in the store when this returns."""
        written = []
        for record in self.iter_unit(cells):
            written.append(record)
            if on_record is not None:
                on_record(record)
        return written

    def iter_unit(self, cells: list[Cell]) -> Iterator[dict]:
        """The records of ``cells``, each yielded after it is written to the store."""
        if not cells:
            return
        self._progress(cells, cells[0])
        held = self._original(cells[0])
        for cell, record in self._records(cells, held):
            record["worker"] = self.name  # provenance, and what benchmarks/executors.py measures gaps by
            self.store.write(cell, record)
            self._progress(cells, None)
            yield record
        self._progress([], None)

    def _records(self, cells: list[Cell], held: _Original) -> Iterator[tuple[Cell, Record]]:
        if held.error:  # a diverging original fails its own cells; the other settings go on
            for cell in cells:
                yield cell, failed_record(self.common, cell, f"original model: {held.error}", held.traceback)
            return
        try:
            forget, cell_base, charge = self._deletion_set(cells, held)
        except _UnitFailed as failure:  # e.g. a proxy the original lacks, cleanlab missing: this unit's cells fail
            for cell in cells:
                yield cell, failed_record(held.base, cell, failure.error, failure.trace)
            return
        yield from self._run_cells(cells, held, forget, cell_base, charge)

    def _deletion_set(self, cells: list[Cell], held: _Original) -> tuple[torch.Tensor | None, dict, Callable | None]:
        """The unit's deletion set, the base of its records and what books its suspects' cost (or None): a forget
        set chosen from the original (once per set; its cost is no method's), or the seeded subset of S_m at
        the rate, grown by the original's top-k suspects (grid key expand); at rate 0 with a method to run (the
        0% discovery column), an empty S_f."""
        first, cell_base, charge = cells[0], held.base, None
        if first.forget_set:
            forget, description = _unit_step(f"forget set {first.forget_set}", timed_selection, held.selector,
                                             self.forget_specs[first.forget_set], first.seed)
            write_json_atomic(self.out / "forget_sets" / f"{first.deletion_set_id}.json",
                              {"deletion_set": first.deletion_set_id, "written": time.time(),
                               "original_cache_key": held.info["cache_key"], "forget_hash": index_hash(forget),
                               **description})
            cell_base = {**held.base, "forget_set_info": description}
        else:
            forget = deletion_set(held.setting, first.rate) if first.rate > 0 else None
            if forget is None and any(cell.method != ORIGINAL for cell in cells):  # the 0% discovery column
                forget = torch.empty(0, dtype=torch.long)
        if first.expand:
            forget, block = _unit_step("suspects", held.expansions.grow, forget, first.rate, first.expand,
                                       first.expand_ranking)
            cell_base = {**cell_base, "suspects": {"k": first.expand, **block}}
            charge = functools.partial(held.expansions.charge, first.rate, first.expand, first.expand_ranking)
        return forget, cell_base, charge

    def _run_cells(self, cells: list[Cell], held: _Original, forget: torch.Tensor | None, cell_base: dict,
                   charge: Callable | None) -> Iterator[tuple[Cell, Record]]:
        first, setting, original, info = cells[0], held.setting, held.original, held.info
        # Built once per deletion set, on first use inside a cell: a task that cannot be built fails its cells.
        flagged = forget if forget is not None and len(forget) else None  # None: the 0% discovery column
        task = functools.cache(lambda: make_task(setting, original, flagged, self.recipe, self.runtime, info))
        references = None
        if self.tow is not None and flagged is not None:  # ToW: both references once per deletion set, on first use
            references = once(functools.partial(
                write_deletion_set_references, setting, original, info, forget, task, self.tow, held.clean_oracle,
                self.runtime, self.config.cache, self.out / "references" / f"{first.deletion_set_id}.json"))
        ran: dict[tuple, Record] = {}  # equivalence key -> the finished record of the first cell that had it
        for cell in cells:
            self._progress(cells, cell)
            _crash_hook(cell)
            key = equivalence(cell)
            if key in ran:
                yield cell, shared_record(cell, ran[key])
                continue
            record = run_cell(cell, setting, original, info, task, forget, self.runtime, cell_base, references,
                              charge)
            if key is not None and record.get("status") == "ok":
                ran[key] = record
            yield cell, record

    def _original(self, cell: Cell) -> _Original:
        """The setting of ``cell`` with its original model: the one held, or built now (trained under the cache
        lock, or loaded from the cache when another worker trained it)."""
        key = setting_key(cell)
        if self._held is not None and self._held[0] == key:
            return self._held[1]
        self._held = None  # free the previous setting's memory first
        config, runtime = self.config, self.runtime
        try:
            setting = build_setting(self.dataset, cell.manipulation, cell.n, cell.seed, runtime, self.val_size,
                                    self.recipe, **cell.manipulation_params())
            with cache_lock(cache_key(original_spec(setting, config.model_name, self.recipe))):
                original, info = train_original(setting, config.model_name, self.recipe, runtime,
                                                use_cache=config.cache)
            # clean reserve: carved after M_o is trained (M_o, its cache entry and checkpoint choice are unchanged)
            setting = setting.with_reserve(config.reserve_fraction())
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            held = _Original(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        else:
            base = {**self.common, "setting": setting.describe(), "index_hashes": setting.index_hashes(),
                    "original_cache_key": info["cache_key"]}
            oracle = functools.partial(_locked_clean_oracle, setting, config.model_name, self.recipe, runtime,
                                       config.cache, self.oracles)
            # the training split is embedded once per original, and only when an entanglement set needs it
            selector = ForgetSetSelector(setting, original, info, runtime, full_embeddings=any(
                s.kind == "entanglement" for s in self.forget_specs.values())) if self.forget_specs else None
            held = _Original(setting, original, info, base, first_use(once(oracle)), selector,
                             expansions=Expansions(setting, original, runtime, key=info["cache_key"]))
        self._held = (key, held)
        return held

    def _progress(self, unit: list[Cell], running: Cell | None) -> None:
        """``<out>/progress/<worker>.json``: the unit this worker holds and the cell it is running, for
        ``corrective status`` (cells of the unit without a record are waiting on this worker)."""
        write_json_atomic(self.out / "progress" / f"{self.name}.json", {
            "worker": self.name, "updated": time.time(), "unit": [c.id for c in unit],
            "running": running.id if running is not None else None, "method": running.method if running else None})


def _locked_clean_oracle(setting, model_name, recipe, runtime, use_cache, memo) -> tuple:
    """:func:`train_clean_oracle` under its cache entry's lock: two workers never train the same oracle."""
    with cache_lock(cache_key(clean_oracle_spec(setting, model_name, recipe))):
        return train_clean_oracle(setting, model_name, recipe, runtime, use_cache, memo)


def _crash_hook(cell: Cell) -> None:
    """Tests of worker loss: ``CORRECTIVE_CRASH_METHOD=<method>`` kills the worker process when it starts a cell
    of that method; with ``CORRECTIVE_CRASH_ONCE=<path>`` only the first time (the file marks that it happened)."""
    if os.environ.get("CORRECTIVE_CRASH_METHOD") != cell.method:
        return
    marker = os.environ.get("CORRECTIVE_CRASH_ONCE")
    if marker:
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return
    os._exit(77)
