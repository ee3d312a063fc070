"""The report of a grid run, from its records alone: a tidy table of every cell (CSV, and Parquet when pyarrow is
installed), a Markdown summary (paper 1's figures as tables, for the paper's selection rule and the guarded rule,
the oracle as an upper bound, and its Table 3) and paper 1's Figures 2-7.

    paths = build_report("results/c10-poison")   # -> {"cells.csv": ..., "summary.md": ..., "figures/...": ...}
    print_summary(paths)

Every entry aggregates over seeds: mean ± sample standard deviation [95% t-interval of the mean], and each table
says how many seeds it holds (:mod:`.seeds`); ``seeds.csv`` holds the same numbers for every rate-table entry.

Without validation data (``dataset.val_size=0``) no hyperparameters can be selected: the summary says so and shows
every setting's metrics instead, and ``cells.csv`` leaves the selection flags empty.

A grid with ``forget_sets`` (RUM's study) gets, instead of the rate tables, tables by forget set (ToW, forget and
test accuracy), the forget sets' measured ES and proxy ranges, and a figure of ToW per memorization level
(:func:`study_sections`, :func:`write_level_figures`).

Here: the report's entry points. What each part reports lives in a module of its own: loading (records in,
upgraded), tidy (cells.csv, seeds.csv), views (views, settings, seed aggregation), rates (the rate tables), timing
(Table 3), study (RUM's study), notes (method notes, failed cells), charts (figures), rem_map, attacks and
defences (clean-data defences beside corrective unlearning).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..selection import DEFAULT_MAX_VAL_DROP, NoValidationDataError, mark_selection
from .attacks import attack_sections
from .charts import write_figures, write_level_figures
from .loading import configured_forget_sets, load_run, method_order, unmarked
from .notes import failed_section, notes_section
from .rates import rate_sections
from .defences import defence_sections
from .rem_map import rem_map
from .study import rum_label, study_sections
from .tidy import FIXED_COLUMNS, seed_table, tidy_table, write_csv, write_parquet
from .timing import complete_run, shared_prices, time_section
from .views import has_rate_cells, rate_based, seed_curve

# the report's public names, importable from here as before the report was split by what it reports
__all__ = ["FIXED_COLUMNS", "build_report", "complete_run", "print_summary", "rum_label", "seed_curve",
           "shared_prices", "summary_markdown"]


def build_report(results_dir: str | Path, out_dir: str | Path | None = None,
                 max_val_drop: float = DEFAULT_MAX_VAL_DROP) -> dict[str, Path]:
    """Write the tidy table, ``summary.md`` and the figures; return them by name relative to ``out_dir``
    (default ``<results_dir>/report``). ``max_val_drop``: the guarded rule's allowed drop of validation accuracy
    below the original model's, in points."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    records = load_run(results_dir)
    try:
        marked, no_selection = mark_selection(records, max_val_drop), None
    except NoValidationDataError as error:
        marked, no_selection = unmarked(records), error
    failed = [r for r in records if r["status"] != "ok"]
    methods = method_order(records, results_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = _tables(marked, failed, methods, out, no_selection)
    figures, extra = _figures(marked, methods, out / "figures", max_val_drop, no_selection)
    extra += [] if no_selection else defence_sections(marked)  # clean-data defences beside unlearning
    summary = summary_markdown(marked, failed, methods, results_dir, [p.relative_to(out) for p in figures],
                               max_val_drop=max_val_drop, no_selection=no_selection, records=records, extra=extra)
    (out / "summary.md").write_text(summary)
    paths["summary.md"] = out / "summary.md"
    paths.update({str(p.relative_to(out)): p for p in figures})
    return paths


def _tables(marked: list[dict], failed: list[dict], methods: list[str], out: Path,
            no_selection: Exception | None) -> dict[str, Path]:
    """cells.csv, cells.parquet (when pyarrow is installed) and seeds.csv (when there is a selection)."""
    columns, rows = tidy_table([*marked, *failed], methods)
    paths = {"cells.csv": write_csv(out / "cells.csv", columns, rows)}
    parquet = write_parquet(out / "cells.parquet", columns, rows)
    if parquet is None:
        print("note: pyarrow is not installed, so cells.parquet was skipped (pip install pyarrow)", file=sys.stderr)
    else:
        paths["cells.parquet"] = parquet
    if not no_selection and has_rate_cells(marked):
        paths["seeds.csv"] = write_csv(out / "seeds.csv", *seed_table(rate_based(marked), methods))
    return paths


def _figures(marked: list[dict], methods: list[str], fig_dir: Path, max_val_drop: float,
             no_selection: Exception | None) -> tuple[list[Path], list[str]]:
    """Every figure, and the summary lines of the sections that come with figures of their own (REM's map, the
    attacks)."""
    rate_cells = rate_based(marked)
    figures = [] if no_selection or not has_rate_cells(marked) else write_figures(rate_cells, methods, fig_dir,
                                                                                  max_val_drop)
    figures += write_level_figures(marked, methods, fig_dir)
    # REM's regularity x discovery map: only where >= 2 of poison / interclass / random_labels share a grid
    map_lines, map_figures = rem_map(rate_cells, methods, fig_dir, max_val_drop, no_selection)
    attack_lines, attack_figures = ([], []) if no_selection else attack_sections(rate_cells, methods, fig_dir)
    return figures + map_figures + attack_figures, map_lines + attack_lines


def print_summary(paths: dict[str, Path], file: TextIO | None = None) -> str:
    """Print (and return) the written files and the headline table section of ``summary.md``: the affected
    domain with hyperparameters selected by the paper's rule (or, without validation data, every setting)."""
    sections = paths["summary.md"].read_text().split("\n## ")
    text = "\n".join(["report:", *(f"  {path}" for path in paths.values()), "", f"## {sections[1].rstrip()}"])
    print(text, file=file or sys.stdout)
    return text


def summary_markdown(marked: list[dict], failed: list[dict], methods: list[str], results_dir: Path,
                     figures: list[Path], max_val_drop: float = DEFAULT_MAX_VAL_DROP,
                     no_selection: Exception | None = None, records: list[dict] | None = None,
                     extra: list[str] = ()) -> str:
    pairs = sorted({(str(r["dataset"]), str(r["model"])) for r in marked})
    multi = len(pairs) > 1
    lines = [
        "# Corrective unlearning report", "",
        f"Results `{results_dir}`: {', '.join(f'{d} / {m}' for d, m in pairs) or 'no finished cells'}; "
        f"{len(marked)} finished cells, {len(failed)} failed.", "",
    ]
    # forget-set grids (RUM's study) only
    lines += study_sections(marked, methods, multi, no_selection, configured_forget_sets(Path(results_dir)))
    if has_rate_cells(marked):  # forget-set cells would pool their sets under rate 1.0: left out here
        lines += rate_sections(rate_based(marked), methods, multi, max_val_drop, no_selection)
    lines += list(extra)  # e.g. REM's regularity x discovery map (report.rem_map)
    lines += time_section(marked, methods, records if records is not None else [*marked, *failed])
    lines += notes_section(marked, methods)
    lines += failed_section(failed)
    if figures:
        lines += ["## Figures", "", *(f"- [{p.stem}]({p.as_posix()})" for p in figures), ""]
    return "\n".join(lines)
