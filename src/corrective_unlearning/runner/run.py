"""``corrective run``: a grid config -> the pending cells -> an executor -> one record per cell in the store."""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from ..config import to_dict, write_yaml
from .executors import create_executor
from .spec import GridConfig, expand_cells, units
from .store import ResultStore, check_resume, clear_progress, write_plan


def run_grid(config: GridConfig, out: str | Path, progress: bool = True, executor: str = "local",
             workers: int | None = None, retries: int = 2) -> list[dict]:
    """Run every unfinished cell on ``executor`` (``local`` or ``ray``); returns the records written in this call.
    ``workers``: how many worker processes/actors (default: one per GPU, else one in-process worker for ``local``
    and one per CPU for ``ray``); ``retries``: how many times the cells of a worker that died are resubmitted."""
    store = ResultStore(out)
    recipe = config.resolved_recipe()
    resolved = to_dict(config) | {"model": config.model_name, "resolved_recipe": recipe.to_dict()}
    check_resume(Path(out), resolved)
    runner = create_executor(executor, config, out, workers, retries)  # a missing Ray fails before any work
    write_yaml(Path(out) / "config.yaml", resolved)
    cells = expand_cells(config)
    pending = [c for c in cells if not store.done(c)]
    print(f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run -> {out}", flush=True)
    if not pending:
        return []
    write_plan(out, cells, executor)
    written: list[dict] = []
    bar = tqdm(total=len(pending), desc=f"grid ({executor})", unit="cell", disable=not progress)

    def on_record(record: dict) -> None:
        written.append(record)
        bar.update()
        metrics = record.get("metrics", {})
        bar.set_postfix_str(f"last {record['method']}: affected {metrics.get('affected_acc', float('nan')):.1f} "
                            f"utility {metrics.get('utility_acc', float('nan')):.1f}"
                            if record["status"] == "ok" else f"last {record['method']}: FAILED")

    try:
        runner.run(units(pending), on_record)
    finally:
        bar.close()
        clear_progress(out)
    return written
