"""``corrective run``: a grid config -> the pending cells -> an executor -> one record per cell in the store.

Before any work: ``--out`` must be a folder this process can write, the cache folder too, no other run may hold
``--out`` (:func:`.outdir.out_lock`), the stored config must be the same setting (:func:`.outdir.check_resume`), and
every manipulation size must be drawable from the dataset (:func:`check_sizes`). Then files of ``records/`` that
are not records are set aside, orphan temporary files of dead writers are swept, and the pending cells run."""
from __future__ import annotations

import time
from pathlib import Path

from ..cache import check_cache_writable
from ..config import ConfigError, to_dict, write_yaml
from ..data import load_dataset, stratified_split
from ..manipulations import manipulate
from ..progress import progress_bar
from .executors import create_executor
from .outdir import check_out_dir, check_resume, clear_progress, out_lock, sweep_out, write_plan
from .spec import GridConfig, expand_cells, units
from .store import ResultStore


def run_grid(config: GridConfig, out: str | Path, progress: bool = True, executor: str = "local",
             workers: int | None = None, retries: int = 2) -> list[dict]:
    """Run every unfinished cell on ``executor`` (``local`` or ``ray``); returns the records written in this call.
    ``workers``: how many worker processes/actors (default: one per GPU, else one in-process worker for ``local``
    and one per CPU for ``ray``); ``retries``: how many times the cells of a worker that died are resubmitted."""

    started = time.time()
    check_out_dir(out)
    check_cache_writable()
    with out_lock(out):
        try:
            return _run_locked(config, Path(out), progress, executor, workers, retries)
        finally:
            # temporary files older than this run are no writer's of this run: orphans of an earlier one
            sweep_out(out, older_than=started)


def _run_locked(config: GridConfig, out: Path, progress: bool, executor: str, workers: int | None,
                retries: int) -> list[dict]:
    store = ResultStore(out)
    recipe = config.resolved_recipe()
    resolved = to_dict(config) | {"model": config.model_name, "resolved_recipe": recipe.to_dict()}
    check_resume(out, resolved)
    runner = create_executor(executor, config, out, workers, retries)  # a missing Ray fails before any work
    check_sizes(config)
    write_yaml(out / "config.yaml", resolved)
    sweep_out(out)  # temporary files of writers that died (a killed run)
    store.set_aside_invalid()
    cells = expand_cells(config)
    pending = [c for c in cells if not store.done(c)]
    print(f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run -> {out}", flush=True)
    if not pending:
        return []
    write_plan(out, cells, executor)
    written: list[dict] = []
    bar = progress_bar(len(pending), f"grid ({executor})", progress, unit="cell")

    def on_record(record: dict) -> None:
        written.append(record)
        metrics = record.get("metrics", {})
        bar.set_postfix_str(f"last {record['method']}: affected {metrics.get('affected_acc', float('nan')):.1f} "
                            f"utility {metrics.get('utility_acc', float('nan')):.1f}"
                            if record["status"] == "ok" else f"last {record['method']}: FAILED")
        bar.update()

    try:
        runner.run(units(pending), on_record)
    finally:
        bar.close()
        clear_progress(out)
    return written


class _SurrogateAsked(Exception):
    """A trigger (label-consistent) asked for a surrogate model during the size check."""


def _no_surrogate():
    raise _SurrogateAsked


def check_sizes(config: GridConfig) -> None:
    """Every (manipulation, size) of the grid can be drawn from the dataset: n at most the candidates (the training
    split less the validation split; for a class-restricted manipulation, that class's samples), as the
    manipulation itself checks it on the dataset's labels (no training; the first seed's split, whose per-class
    sizes every seed shares). A ConfigError names the first that cannot; a dataset this process cannot load is
    left to the workers, which report it."""
    grids = [(i, m) for i, m in enumerate(config.manipulation_grids()) if m.name != "none"]
    if not grids:
        return

    try:
        dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
    except Exception:  # not found here (e.g. a cluster's workers see other paths): the workers say why
        return
    labels = dataset.train_labels
    val_size = config.dataset.resolved_val_size(len(labels))
    try:
        train_idx, _ = stratified_split(labels, val_size, config.seeds[0])
    except ValueError as error:
        raise ConfigError(f"dataset.val_size: {error}") from None
    for i, m in grids:
        for n in sorted(set(m.sizes), reverse=True):  # the largest first: the one most likely too large
            where = f"manipulations[{i}] ({m.name}) size {n}"
            if n > len(train_idx):
                raise ConfigError(f"{where}: n exceeds the {len(train_idx)} samples it can be drawn from "
                                  f"({dataset.name}: {len(labels)} training samples less the {val_size} of the "
                                  f"validation split)")
            try:
                manipulate(m.name, dataset, train_idx, n, config.seeds[0], surrogate=_no_surrogate, **m.params)
            except _SurrogateAsked:
                pass  # n was drawn before a trigger asked for a surrogate model: too costly to train for a check
            except (ValueError, KeyError, TypeError) as error:
                message = error.args[0] if isinstance(error, KeyError) and error.args else error
                raise ConfigError(f"{where}: {message} ({dataset.name}: {len(labels)} training samples, "
                                  f"{val_size} held out for validation)") from None
