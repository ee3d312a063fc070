"""The report of a grid run, from its records alone: a tidy table of every cell (CSV, and Parquet when pyarrow is
installed), a Markdown summary (paper 1's figures as tables, and its Table 3) and paper 1's Figures 2-7.

    paths = build_report("results/c10-poison")   # -> {"cells.csv": ..., "summary.md": ..., "figures/...": ...}
    print_summary(paths)
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import TextIO

import numpy as np

from ..config import read_yaml
from ..grid import ORIGINAL, load_records
from ..methods import hparams_key
from ..selection import mark_selection
from .figures import Curve, plot_metric

FIXED_COLUMNS = ["cell", "status", "error", "dataset", "model", "manipulation", "n", "seed", "rate", "method",
                 "hparams", "selected", "oracle", "selection_score", "forget_size", "method_seconds", "eval_seconds",
                 "method_notes"]
_STRING_COLUMNS = {"cell", "status", "error", "dataset", "model", "manipulation", "method", "hparams",
                   "method_notes"}
_INT_COLUMNS = {"n", "seed", "forget_size"}
_BOOL_COLUMNS = {"selected", "oracle"}

ORACLE_NOTE = "oracle (peeks at test data: an upper bound, not a result)"
CHOICES = {"selected": "hyperparameters selected without test data",
           "oracle": "ORACLE hyperparameters, chosen on test data: an upper bound, not a result"}

# (metric, which choice of hyperparameters, figure file suffix, what the metric measures): each is one summary
# section and one figure per manipulation. Paper 1, Table 1: Figures 2/4, 5/6 and 3/7.
VIEWS = [
    ("affected_acc", "selected", "affected", "clean-label accuracy on the affected test domain D_m"),
    ("manipulated_acc", "selected", "manipulated", "clean-label accuracy on the manipulated training samples S_m"),
    ("utility_acc", "selected", "utility", "utility (accuracy on the unaffected test domain)"),
    ("affected_acc", "oracle", "affected-oracle", "clean-label accuracy on the affected test domain D_m"),
]

Setting = tuple  # (dataset, model, manipulation, n)
SeedValues = dict  # setting -> method -> rate -> finite values, one per seed


def build_report(results_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the tidy table, ``summary.md`` and the figures; return them by name relative to ``out_dir``
    (default ``<results_dir>/report``)."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    records = load_records(results_dir)
    if not records:
        raise ValueError(f"no records in {results_dir / 'records'}: run the grid with --out {results_dir} first")
    marked = mark_selection(records)
    failed = [r for r in records if r.get("status") != "ok"]
    methods = method_order(records, results_dir)
    out.mkdir(parents=True, exist_ok=True)

    columns, rows = tidy_table([*marked, *failed], methods)
    paths = {"cells.csv": write_csv(out / "cells.csv", columns, rows)}
    parquet = write_parquet(out / "cells.parquet", columns, rows)
    if parquet is None:
        print("note: pyarrow is not installed, so cells.parquet was skipped (pip install pyarrow)", file=sys.stderr)
    else:
        paths["cells.parquet"] = parquet
    figures = write_figures(marked, methods, out / "figures")
    summary = summary_markdown(marked, failed, methods, results_dir, [p.relative_to(out) for p in figures])
    (out / "summary.md").write_text(summary)
    paths["summary.md"] = out / "summary.md"
    paths.update({str(p.relative_to(out)): p for p in figures})
    return paths


def print_summary(paths: dict[str, Path], file: TextIO | None = None) -> str:
    """Print (and return) the written files and the headline table section of ``summary.md``: the affected
    domain with hyperparameters selected without test data."""
    sections = paths["summary.md"].read_text().split("\n## ")
    text = "\n".join(["report:", *(f"  {path}" for path in paths.values()), "", f"## {sections[1].rstrip()}"])
    print(text, file=file or sys.stdout)
    return text


def method_order(records: list[dict], results_dir: Path) -> list[str]:
    """``original``, then the methods in the order of ``config.yaml`` (the grid's order), then any others A-Z."""
    config = results_dir / "config.yaml"
    configured = list(read_yaml(config).get("methods") or []) if config.exists() else []
    present = {r.get("method") for r in records} - {None}
    listed = [ORIGINAL, *configured]
    return [m for m in listed if m in present] + sorted(present - set(listed))


def _finite(value) -> float | None:
    """Records store NaN as null; tables and means treat both as missing."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def _setting(record: dict) -> Setting:
    return record["dataset"], record["model"], record["manipulation"], record["n"]


# -- the tidy table ----------------------------------------------------------------------------------------------

def tidy_table(records: list[dict], methods: list[str]) -> tuple[list[str], list[dict]]:
    """Column names and one row per record, ordered like the grid: setting, seed, rate, method, hparams."""
    names = list(dict.fromkeys(k for r in records for k in r.get("metrics") or {}))
    per_class = [k for k in names if k.startswith("class_acc/")]  # kept in class order, not A-Z
    columns = FIXED_COLUMNS + sorted(set(names) - set(per_class)) + per_class
    rank = {m: i for i, m in enumerate(methods)}
    rows = sorted((_row(r) for r in records), key=lambda row: (
        str(row["dataset"]), str(row["model"]), str(row["manipulation"]), row["n"] or 0, row["seed"] or 0,
        row["rate"] or 0.0, rank.get(row["method"], len(rank)), row["hparams"]))
    return columns, rows


def _row(record: dict) -> dict:
    timings = record.get("timings") or {}
    row = {key: record.get(key) for key in ("cell", "status", "error", "dataset", "model", "manipulation", "n",
                                            "seed", "rate", "method", "selected", "oracle", "forget_size")}
    row.update(hparams=hparams_key(record.get("hparams") or {}),
               selection_score=_finite(record.get("selection_score")),
               method_seconds=timings.get("method_seconds"), eval_seconds=timings.get("eval_seconds"),
               method_notes=hparams_key(record["method_notes"]) if record.get("method_notes") else None)
    row.update({k: _finite(v) for k, v in (record.get("metrics") or {}).items()})
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
        import pyarrow as pa
        import pyarrow.parquet as pq
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


# -- aggregation over seeds --------------------------------------------------------------------------------------

def seed_values(marked: list[dict], flag: str, metric: str) -> SeedValues:
    """The ``flag`` (selected or oracle) cells' finite values of ``metric``, grouped by setting, method and rate.
    A cell whose metric is missing leaves an empty list, so the table shows n/a rather than nothing."""
    values: SeedValues = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in marked:
        if record[flag]:
            bucket = values[_setting(record)][record["method"]][record["rate"]]
            value = _finite(record["metrics"].get(metric))
            if value is not None:
                bucket.append(value)
    return values


def _rates(marked: list[dict], setting: Setting) -> list[float]:
    return sorted({r["rate"] for r in marked if _setting(r) == setting and r["method"] != ORIGINAL})


def _curve(by_rate: dict[float, list[float]]) -> Curve | None:
    points = sorted((rate, values) for rate, values in by_rate.items() if values)
    if not points:
        return None
    return Curve(rates=np.array([rate for rate, _ in points]),
                 mean=np.array([np.mean(v) for _, v in points]),
                 lo=np.array([np.min(v) for _, v in points]),
                 hi=np.array([np.max(v) for _, v in points]))


# -- summary.md --------------------------------------------------------------------------------------------------

def _mean_std(values: list[float] | None) -> str:
    if values is None:
        return ""  # no such cell in the grid
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _setting_label(setting: Setting, multi: bool) -> str:
    dataset, model, manipulation, n = setting
    return f"{manipulation}, n = {n}" + (f" ({dataset} / {model})" if multi else "")


def _table(by_method: dict, methods: list[str], rates: list[float]) -> list[str]:
    lines = ["| method | " + " | ".join(f"{100 * r:g}%" for r in rates) + " |",
             "|---|" + "---:|" * len(rates)]
    for method in (m for m in methods if m in by_method):
        # The original model does not depend on the discovery rate: its one value fills every column.
        cells = [_mean_std(by_method[method].get(0.0 if method == ORIGINAL else rate)) for rate in rates]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _view_section(marked: list[dict], methods: list[str], metric: str, flag: str, description: str,
                  multi: bool) -> list[str]:
    values = seed_values(marked, flag, metric)
    title = f"{ORACLE_NOTE}: {description}" if flag == "oracle" else description
    lines = [f"## {title[0].upper()}{title[1:]} (`{metric}`, %)", ""]
    for setting in sorted(values):
        lines += [f"### {_setting_label(setting, multi)}", "",
                  *_table(values[setting], methods, _rates(marked, setting)), ""]
    return lines if values else lines + ["_no finished cells_", ""]


def _time_section(marked: list[dict], methods: list[str]) -> list[str]:
    lines = ["## Unlearning time (Table 3 analogue)", "",
             "Synchronised wall-clock time of the method alone (evaluation excluded), mean over all its finished "
             "cells, every hyperparameter setting included; for `original`, the original model's training time.",
             "", "| method | cells | mean time (s) | mean time (min) |", "|---|---:|---:|---:|"]
    for method in methods:
        times = [t for r in marked if r["method"] == method
                 if (t := _finite((r.get("timings") or {}).get("method_seconds"))) is not None]
        if times:
            label = f"{ORIGINAL} (training)" if method == ORIGINAL else method
            lines.append(f"| {label} | {len(times)} | {np.mean(times):.2f} | {np.mean(times) / 60:.2f} |")
    return lines + [""]


def _failed_section(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    lines = [f"## Failed cells ({len(failed)})", "", "Re-running the grid retries them.", ""]
    for record in failed:
        error = (record.get("error") or "no error recorded").strip().splitlines()[0]
        lines.append(f"- `{record.get('cell')}`: {error}")
    return lines + [""]


def summary_markdown(marked: list[dict], failed: list[dict], methods: list[str], results_dir: Path,
                     figures: list[Path]) -> str:
    pairs = sorted({(r["dataset"], r["model"]) for r in marked})
    multi = len(pairs) > 1
    lines = [
        "# Corrective unlearning report", "",
        f"Results `{results_dir}`: {', '.join(f'{d} / {m}' for d, m in pairs) or 'no finished cells'}; "
        f"{len(marked)} finished cells, {len(failed)} failed.", "",
        "Each entry is the mean ± sample standard deviation over seeds (one seed: its value) of the hyperparameter "
        "setting selected without test data: per (rate, seed, method), the best (deletion change on S_f + "
        "validation accuracy) / 2. Columns are discovery rates |S_f| / |S_m|. The original model does not depend "
        "on the rate, so its value fills every column. n/a: the metric is undefined (null) in every seed.", "",
    ]
    for metric, flag, _, description in VIEWS:
        lines += _view_section(marked, methods, metric, flag, description, multi)
    lines += _time_section(marked, methods)
    lines += _failed_section(failed)
    if figures:
        lines += ["## Figures", "", *(f"- [{p.stem}]({p.as_posix()})" for p in figures), ""]
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------------------------

def write_figures(marked: list[dict], methods: list[str], fig_dir: Path) -> list[Path]:
    """One figure per manipulation and view, one panel per manipulation size."""
    groups = sorted({_setting(r)[:3] for r in marked})
    multi = len({g[:2] for g in groups}) > 1
    values = [seed_values(marked, flag, metric) for metric, flag, _, _ in VIEWS]
    paths = []
    for dataset, model, manipulation in groups:
        stem = f"{dataset}-{model}-{manipulation}" if multi else manipulation
        for (_, flag, suffix, description), by_setting in zip(VIEWS, values):
            panels = {setting[3]: _panel(by_setting[setting], methods) for setting in by_setting
                      if setting[:3] == (dataset, model, manipulation)}
            panels = {n: curves for n, curves in panels.items() if curves}
            if panels:
                heading = (f"{dataset} / {model}, {manipulation}\n{description}\n{CHOICES[flag]}\n"
                           f"line: mean over seeds; band: min-max over seeds")
                paths.append(plot_metric(panels, fig_dir / f"{stem}-{suffix}.png", heading))
    return paths


def _panel(by_method: dict, methods: list[str]) -> dict[str, Curve]:
    curves = {m: _curve(by_method[m]) for m in methods if m in by_method}
    return {m: c for m, c in curves.items() if c is not None}
