"""What a cell's record holds (:class:`~corrective_unlearning.records.Record`), assembled here: its head, one cell
run (the method, its evaluation and ToW, timed), a record that reuses another setting's model, and the failed
records of a unit that could not start."""
from __future__ import annotations

import time
import traceback
from typing import Callable

import torch
from torch import nn

from ..evaluation import evaluate
from ..evaluation.tow import tow_accuracies
from ..experiment import OriginalInfo, Setting
from ..manipulations import index_hash
from ..methods import METHODS, Task, Unlearned
from ..records import RECORD_VERSION, Record, RecordHead, Timings
from ..references import DeletionSetReferences
from ..runtime import Runtime, Stopwatch
from .spec import ORIGINAL, Cell


def record_head(cell: Cell) -> RecordHead:
    """The fields every record of ``cell`` starts with: the schema version and the cell's identity."""
    return {"record_version": RECORD_VERSION, "cell": cell.id, "manipulation": cell.manipulation,
            "manipulation_variant": cell.variant, "n": cell.n, "seed": cell.seed, "rate": cell.rate,
            "forget_set": cell.forget_set, "method": cell.method, "hparams": cell.hparams,
            "setting_index": cell.setting_index, "expand": cell.expand}  # type: ignore[typeddict-item]


def failed_record(base: dict, cell: Cell, error: str, trace: str) -> Record:
    """The record of a cell that could not run: ``error`` says why (one line), ``trace`` where."""
    return {**base, **record_head(cell), "status": "failed", "traceback": trace, "error": error}


def shared_work(result: Unlearned) -> Timings:
    """Work shared with later cells of this deletion set is included in method_seconds of the cell that paid it;
    the report adds it back to the cells that reused it to show what one run costs."""
    return {"shared_seconds": sum(result.shared.paid.values()), "shared_paid": dict(result.shared.paid),
            "shared_reused": list(result.shared.reused)}


def run_cell(cell: Cell, setting: Setting, original: nn.Module, info: OriginalInfo, make_task: Callable[[], Task],
             forget: torch.Tensor | None, runtime: Runtime, base: dict,
             references: Callable[[], DeletionSetReferences] | None = None,
             charge: Callable[[dict], None] | None = None) -> Record:
    """Run one cell and return its record (ok, or failed with its error: the grid goes on). ``references``: this
    deletion set's ToW references (grid option ``tow``), obtained before the method runs (their cost is never in
    ``method_seconds``); the ``original`` cell has no deletion set and no ToW: the original model's ToW at each
    deletion set is ``original_tow_*`` in that deletion set's records. ``charge``: books the suspects that grew
    this deletion set (grid option ``expand``) on the cell's timings, as shared work."""
    record = {**base, **record_head(cell), "started": time.time()}
    try:
        # before the method: their cost is never in its time
        refs = _obtained(references) if cell.method != ORIGINAL and references is not None else None
        model, timings = _run_model(cell, original, info, make_task, forget, runtime, record)
        with Stopwatch(runtime) as clock:
            # an empty S_f (the 0% discovery column) has no deletion-set metrics
            metrics = evaluate(model, setting, runtime, forget if forget is not None and len(forget) else None)
        timings = {"method_seconds": timings.pop("method_seconds"), "eval_seconds": clock.seconds,
                   **_tow(record, metrics, model, setting, forget, refs, runtime), **timings}
        if charge is not None and cell.method != ORIGINAL:
            charge(timings)
        record.update(status="ok", metrics=metrics, timings=timings)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # recorded, and the grid goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    return record


def _obtained(references: Callable[[], DeletionSetReferences]) -> DeletionSetReferences:
    """The deletion set's ToW references (obtained once per deletion set: a memo)."""
    try:
        return references()
    except Exception as error:
        raise RuntimeError(f"ToW references: {type(error).__name__}: {error}") from error


def _run_model(cell: Cell, original: nn.Module, info: OriginalInfo, make_task: Callable[[], Task],
               forget: torch.Tensor | None, runtime: Runtime, record: dict) -> tuple[nn.Module, dict]:
    """The cell's model and its timings so far (method_seconds, shared work), adding the method's fields to
    ``record``. The ``original`` cell's model is the original, its time the original's training."""
    if cell.method == ORIGINAL:
        record["original_cache"] = info["cache"]
        return original, {"method_seconds": info["train_seconds"]}
    task = make_task()
    record["index_hashes"] = {**record["index_hashes"], "forget": index_hash(forget)}
    record["forget_size"] = len(forget)
    with Stopwatch(runtime) as clock:
        result = METHODS.get(cell.method)(task, cell.hparams)
    record["method_notes"] = dict(result.notes)
    if "clean_samples" in result.notes:  # the clean reserve's samples the method consumed
        record["clean_samples"] = int(result.notes["clean_samples"])
    return result.model, {"method_seconds": clock.seconds, **shared_work(result)}


def _tow(record: dict, metrics: dict, model: nn.Module, setting: Setting, forget: torch.Tensor | None,
         refs: DeletionSetReferences | None, runtime: Runtime) -> dict:
    """ToW of the cell's model against the deletion set's references, added to ``metrics`` and ``record``;
    returns its timing ({} without references)."""
    if refs is None:
        return {}
    with Stopwatch(runtime) as clock:  # the same test predictions as test_acc: not made twice
        u = tow_accuracies(model, setting, forget, refs.retain, runtime, test_acc=metrics["test_acc"])
    metrics.update(refs.metrics(u))
    record.update(tow={"accuracies": u}, references=refs.block())
    return {"tow_eval_seconds": clock.seconds}


def shared_record(cell: Cell, source: Record) -> Record:
    """The record of ``cell`` whose model equals the one ``source`` (a finished cell of the same deletion set)
    computed: its metrics, notes and ToW, with 0 seconds charged here."""
    timings = source.get("timings") or {}
    record = {**source, **record_head(cell), "started": time.time(), "shared_with": source["cell"]}
    record["metrics"] = dict(source["metrics"])
    record["method_notes"] = dict(source.get("method_notes") or {})
    record["timings"] = {"method_seconds": 0.0, "eval_seconds": 0.0, "shared_seconds": 0.0, "shared_paid": {},
                         "shared_reused": [], "shared_model": {
                             "cell": source["cell"], "method_seconds": timings.get("method_seconds"),
                             "eval_seconds": timings.get("eval_seconds"),
                             "why": "same model: this method's equivalence rule (runner.cells.EQUIVALENT_SETTINGS)"}}
    record.pop("worker", None)
    return record
