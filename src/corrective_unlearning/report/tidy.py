"""The tidy table of a run: one row per record (``cells.csv``, and ``cells.parquet`` when pyarrow is installed), and
``seeds.csv``, every entry of the rate tables as numbers."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..methods import hparams_key
from .seeds import seed_stats
from .timing import shared_seconds
from .views import VIEWS, finite, seed_values, setting_order


FIXED_COLUMNS = ["cell", "status", "error", "dataset", "model", "manipulation", "manipulation_variant", "n", "seed",
                 "rate", "forget_set", "method", "hparams", "setting_index", "selected", "guarded", "guard", "oracle",
                 "selection_score", "forget_size", "method_seconds", "shared_seconds", "eval_seconds",
                 "method_notes", "shared_with"]
_STRING_COLUMNS = {"cell", "status", "error", "dataset", "model", "manipulation", "manipulation_variant", "method",
                   "hparams", "guard", "method_notes", "forget_set", "shared_with"}
_INT_COLUMNS = {"n", "seed", "forget_size", "setting_index"}
_BOOL_COLUMNS = {"selected", "guarded", "oracle"}


def tidy_table(records: list[dict], methods: list[str]) -> tuple[list[str], list[dict]]:
    """Column names and one row per record, ordered like the grid: setting, seed, rate, method, hparams."""
    names = list(dict.fromkeys(k for r in records for k in r.get("metrics") or {}))
    per_class = [k for k in names if k.startswith("class_acc/")]  # kept in class order, not A-Z
    columns = FIXED_COLUMNS + sorted(set(names) - set(per_class)) + per_class
    rank = {m: i for i, m in enumerate(methods)}
    rows = sorted((_row(r) for r in records), key=lambda row: (
        str(row["dataset"]), str(row["model"]), str(row["manipulation_variant"]), row["n"] or 0, row["seed"] or 0,
        row["rate"] or 0.0, row["forget_set"] or "", rank.get(row["method"], len(rank)),
        row["setting_index"] if row["setting_index"] is not None else float("inf"), row["hparams"]))
    return columns, rows


def _row(record: dict) -> dict:
    timings = record.get("timings") or {}
    row = {key: record.get(key) for key in ("cell", "status", "error", "dataset", "model", "manipulation", "n",
                                            "seed", "rate", "method", "setting_index", "selected", "guarded",
                                            "guard", "oracle", "forget_size")}
    row.update(manipulation_variant=record["manipulation_variant"], forget_set=record["forget_set"],
               hparams=hparams_key(record.get("hparams") or {}),
               selection_score=finite(record.get("selection_score")),
               method_seconds=timings.get("method_seconds"), shared_seconds=shared_seconds(timings),
               eval_seconds=timings.get("eval_seconds"),
               method_notes=hparams_key(record["method_notes"]) if record.get("method_notes") else None,
               shared_with=record.get("shared_with"))
    row.update({k: finite(v) for k, v in (record.get("metrics") or {}).items()})
    return row


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)  # None is written as an empty field
        writer.writeheader()
        writer.writerows({c: row.get(c) for c in columns} for row in rows)
    return path


def write_parquet(path: Path, columns: list[str], rows: list[dict]) -> Path | None:
    """Same columns as the CSV, typed; ``None`` when pyarrow is not installed (it is an optional extra)."""
    try:
        import pyarrow as pa  # lazy: an optional extra
        import pyarrow.parquet as pq  # lazy: an optional extra
    except ImportError:
        return None

    def kind(column: str):
        if column in _STRING_COLUMNS:
            return pa.string()
        if column in _INT_COLUMNS:
            return pa.int64()
        return pa.bool_() if column in _BOOL_COLUMNS else pa.float64()

    table = pa.table({c: pa.array([row.get(c) for row in rows], type=kind(c)) for c in columns})
    pq.write_table(table, path)
    return path


SEED_COLUMNS = ["dataset", "model", "manipulation_variant", "n", "method", "rate", "rule", "metric", "seeds", "mean",
                "std", "ci95_low", "ci95_high"]


def seed_table(marked: list[dict], methods: list[str]) -> tuple[list[str], list[dict]]:
    """``seeds.csv``: every entry of the rate tables (each view: metric and rule) as numbers: how many seeds, the
    mean, the sample standard deviation and the 95% t-interval of the mean (empty when undefined: one seed)."""
    rows = []
    for metric, flag, _, _ in VIEWS:
        values = seed_values(marked, flag, metric)
        for setting in sorted(values, key=setting_order):
            for method in (m for m in methods if m in values[setting]):
                for rate, found in sorted(values[setting][method].items()):
                    if not found:
                        continue
                    stats = seed_stats(found)
                    rows.append(dict(zip(SEED_COLUMNS, [*setting, method, rate, flag, metric, stats.n, stats.mean,
                                                        *(None if np.isnan(v) else v for v in
                                                          (stats.std, stats.lo, stats.hi))])))
    return SEED_COLUMNS, rows
