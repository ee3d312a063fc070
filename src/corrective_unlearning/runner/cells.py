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
"""
from __future__ import annotations

import dataclasses
import fcntl
import functools
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..cache import cache_key
from ..data import load_dataset
from ..data.locate import cache_dir
from ..evaluation import collect_predictions, compute_metrics, predict
from ..evaluation.tow import tow_accuracies
from ..experiment import Setting, build_setting, original_spec, train_original
from ..forget_sets import ForgetSetSelector, timed_selection
from ..manipulations import index_hash
from ..methods import METHODS, Task
from ..methods.ssd import equivalence_key as ssd_equivalence_key
from ..records import environment, write_json_atomic
from ..references import DeletionSetReferences, clean_oracle_spec, deletion_set_references, train_clean_oracle
from ..runtime import Runtime, Stopwatch
from ..suspects.expansion import Expansions
from .spec import ORIGINAL, Cell, GridConfig, TowConfig, setting_key
from .store import ResultStore


def deletion_set(setting: Setting, rate: float) -> torch.Tensor:
    """A seeded uniform subset of S_m of size round(rate * n). Nested across rates for one seed (the first
    k of one permutation), so curves over the discovery rate compare like with like."""
    manipulated = setting.manipulated.manipulated
    order = np.random.default_rng([setting.seed, 7]).permutation(len(manipulated))
    return torch.sort(manipulated[order[: round(rate * len(manipulated))]]).values


def make_task(setting: Setting, original, forget: torch.Tensor | None, recipe, runtime: Runtime,
              info: dict | None = None) -> Task:
    """The task of one deletion set (``forget`` None: the 0% discovery column, an empty S_f that only methods
    needing no flagged sample accept; the setting's clean reserve, if any, goes with it). Its ``memorization`` capability reads the original's proxy scores through
    :func:`~corrective_unlearning.proxies.memorization_scores` with ``info`` from ``train_original`` (without
    ``info``, only scores kept with the model object in memory and proxies that need no record of the original
    can be read)."""
    from ..proxies import memorization_scores

    device = runtime.device
    m = setting.manipulated

    def memorization(name: str, params: dict) -> torch.Tensor:
        return memorization_scores(name, setting, original, info or {}, runtime, **params)

    empty = forget is None  # the 0% discovery column: no flagged sample (an empty tensor is still refused)
    if empty:
        forget = torch.empty(0, dtype=torch.long)

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
        clean_idx=setting.clean_idx,  # clean reserve (None without one)
        allow_empty_forget=empty,  # the 0% discovery column
    )


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
            if "clean_samples" in task.notes:  # clean reserve samples the method consumed
                record["clean_samples"] = int(task.notes["clean_samples"])
            # Work shared with later cells of this deletion set is included in method_seconds of the cell that
            # paid it; the report adds it back to the cells that reused it to show what one run costs.
            shared = {"shared_seconds": sum(task.shared_paid.values()), "shared_paid": dict(task.shared_paid),
                      "shared_reused": list(task.shared_reused)}
        with Stopwatch(runtime) as clock:  # an empty S_f (0% discovery) has no deletion-set metrics
            metrics = evaluate_cell(model, setting, runtime, forget if forget is not None and len(forget) else None)
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


def shared_record(cell: Cell, source: dict) -> dict:
    """The record of ``cell`` whose model equals the one ``source`` (a finished cell of the same deletion set)
    computed: its metrics, notes and ToW, with 0 seconds charged here."""
    timings = source.get("timings") or {}
    record = {**source, **_cell_fields(cell), "started": time.time(), "shared_with": source["cell"]}
    record["metrics"] = dict(source["metrics"])
    record["method_notes"] = dict(source.get("method_notes") or {})
    record["timings"] = {"method_seconds": 0.0, "eval_seconds": 0.0, "shared_seconds": 0.0, "shared_paid": {},
                         "shared_reused": [], "shared_model": {
                             "cell": source["cell"], "method_seconds": timings.get("method_seconds"),
                             "eval_seconds": timings.get("eval_seconds"),
                             "why": "same model: this method's equivalence rule (runner.cells.EQUIVALENT_SETTINGS)"}}
    record.pop("worker", None)
    return record


# -- a worker: one unit (the cells of one deletion set) at a time, its setting kept warm ----------------------------

@contextmanager
def cache_lock(key: str) -> Iterator[None]:
    """An exclusive lock on cache entry ``key`` (``$CORRECTIVE_CACHE_DIR/locks/<key>.lock``): the first worker
    trains the model, the others wait and then read it from the cache. flock is released when its holder dies."""
    path = cache_dir() / "locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass
class _Original:
    """One setting as a worker holds it: its data and original model (or why they could not be had)."""

    setting: Setting | None = None
    original: object = None
    info: dict | None = None
    base: dict | None = None
    clean_oracle: Callable[[], tuple] | None = None
    selector: ForgetSetSelector | None = None
    expansions: Expansions | None = None  # the original's suspect rankings (grid option expand), once per rate
    error: str = ""
    traceback: str = ""


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

    def _records(self, cells: list[Cell], held: _Original) -> Iterator[tuple[Cell, dict]]:
        first = cells[0]
        if held.error:  # a diverging original fails its own cells; the other settings go on
            for cell in cells:
                yield cell, {**self.common, **_cell_fields(cell), "status": "failed", "traceback": held.traceback,
                             "error": f"original model: {held.error}"}
            return
        setting, original, info, cell_base = held.setting, held.original, held.info, held.base
        if first.forget_set:  # a forget set chosen from the original (once per set; its cost is no method's)
            try:
                forget, description = timed_selection(held.selector, self.forget_specs[first.forget_set], first.seed)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # e.g. a proxy the original lacks: that set's cells fail
                for cell in cells:
                    yield cell, {**held.base, **_cell_fields(cell), "status": "failed", "traceback":
                                 traceback.format_exc(), "error": f"forget set {first.forget_set}: "
                                                                  f"{type(error).__name__}: {error}"}
                return
            write_json_atomic(self.out / "forget_sets" / f"{first.deletion_set_id}.json",
                              {"deletion_set": first.deletion_set_id, "written": time.time(),
                               "original_cache_key": info["cache_key"], "forget_hash": index_hash(forget),
                               **description})
            cell_base = {**held.base, "forget_set_info": description}
        else:
            forget = deletion_set(setting, first.rate) if first.rate > 0 else None
            if forget is None and any(cell.method != ORIGINAL for cell in cells):  # the 0% discovery column
                forget = torch.empty(0, dtype=torch.long)
        charge = None
        if first.expand:  # grown by the original's top-k suspects (grid key expand)
            try:
                forget, block = held.expansions.grow(forget, first.rate, first.expand, first.expand_ranking)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # e.g. cleanlab missing: this deletion set's cells fail
                for cell in cells:
                    yield cell, {**held.base, **_cell_fields(cell), "status": "failed", "traceback":
                                 traceback.format_exc(), "error": f"suspects: {type(error).__name__}: {error}"}
                return
            cell_base = {**cell_base, "suspects": {"k": first.expand, **block}}
            charge = functools.partial(held.expansions.charge, first.rate, first.expand, first.expand_ranking)
        # Built once per deletion set, on first use inside a cell: a task that cannot be built fails its cells.
        flagged = forget if forget is not None and len(forget) else None  # None: the 0% discovery column
        task = functools.cache(lambda: make_task(setting, original, flagged, self.recipe, self.runtime, info))
        references = None
        if self.tow is not None and forget is not None and len(forget):  # ToW: both references once per deletion set, on first use
            references = _once(functools.partial(
                _deletion_set_references, setting, original, info, forget, task, self.tow, held.clean_oracle,
                self.runtime, self.config.cache, self.out / "references" / f"{first.deletion_set_id}.json"))
        ran: dict[tuple, dict] = {}  # equivalence key -> the finished record of the first cell that had it
        for cell in cells:
            self._progress(cells, cell)
            _crash_hook(cell)
            key = equivalence(cell)
            if key in ran:
                yield cell, shared_record(cell, ran[key])
                continue
            record = _run_cell(cell, setting, original, info, task, forget, self.runtime, cell_base, references,
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
            held = _Original(setting, original, info, base, _first_use(_once(oracle)), selector,
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
