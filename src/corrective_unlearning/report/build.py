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
"""
from __future__ import annotations

import csv
import json
import re
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import TextIO

import numpy as np

from ..config import read_yaml
from ..runner.spec import ORIGINAL, GridConfig
from ..runner.store import read_records
from ..methods import METHODS, hparams_key
from ..selection import (DEFAULT_MAX_VAL_DROP, FALLBACK, NO_REFERENCE, NoValidationDataError, group_key,
                         manipulation_variant, mark_selection)
from .figures import Curve, plot_levels, plot_metric
from .attacks import attack_sections
from .defences import defence_sections
from .rem_map import rem_map
from .seeds import format_entry, seed_stats, seeds_note, seeds_phrase

FIXED_COLUMNS = ["cell", "status", "error", "dataset", "model", "manipulation", "manipulation_variant", "n", "seed",
                 "rate", "forget_set", "method", "hparams", "setting_index", "selected", "guarded", "guard", "oracle",
                 "selection_score", "forget_size", "method_seconds", "shared_seconds", "eval_seconds",
                 "method_notes", "shared_with"]
_STRING_COLUMNS = {"cell", "status", "error", "dataset", "model", "manipulation", "manipulation_variant", "method",
                   "hparams", "guard", "method_notes", "forget_set", "shared_with"}
_INT_COLUMNS = {"n", "seed", "forget_size", "setting_index"}
_BOOL_COLUMNS = {"selected", "guarded", "oracle"}

ORACLE_NOTE = "oracle (peeks at test data: an upper bound, not a result)"

# (metric, which choice of hyperparameters, figure file suffix, what the metric measures): each is one summary
# section and one figure per manipulation variant. Paper 1, Table 1: Figures 2/4, 5/6 and 3/7. The first is the
# headline (print_summary shows it).
VIEWS = [
    ("affected_acc", "selected", "affected", "clean-label accuracy on the affected test domain D_m"),
    ("manipulated_acc", "selected", "manipulated", "clean-label accuracy on the manipulated training samples S_m"),
    ("utility_acc", "selected", "utility", "utility (accuracy on the unaffected test domain)"),
    ("affected_acc", "guarded", "affected-guarded", "clean-label accuracy on the affected test domain D_m"),
    ("manipulated_acc", "guarded", "manipulated-guarded",
     "clean-label accuracy on the manipulated training samples S_m"),
    ("utility_acc", "guarded", "utility-guarded", "utility (accuracy on the unaffected test domain)"),
    ("affected_acc", "oracle", "affected-oracle", "clean-label accuracy on the affected test domain D_m"),
    # RUM's ToW (grid option ``tow``): sections only where the records have it, no figures (see TOW_BASELINES).
    ("tow_retrain", "selected", "tow-retrain",
     "ToW against the retrained model (RUM's reference; A_f on S_f's given labels)"),
    ("tow_clean", "selected", "tow-clean",
     "ToW against the clean oracle (every manipulation undone; A_f on S_f's given labels)"),
]
# Without validation data: every setting of the headline metric and of utility.
EVERY_SETTING_VIEWS = [VIEWS[0], VIEWS[2]]
# ToW metric -> the metric of the same deletion set's records that holds the *original* model's ToW there: unlike
# the other metrics it depends on the deletion set, so the original row of a ToW table shows it per rate.
TOW_BASELINES = {"tow_retrain": "original_tow_retrain", "tow_clean": "original_tow_clean"}

Setting = tuple  # (dataset, model, manipulation variant, n)
SeedValues = dict  # setting -> method -> rate -> finite values, one per seed


def _rule(flag: str, max_val_drop: float) -> str:
    return {"selected": "paper rule",
            "guarded": f"guarded rule (validation accuracy at most {max_val_drop:g} points below the original's)",
            "oracle": ORACLE_NOTE}[flag]


def _choice(flag: str, max_val_drop: float) -> str:
    """A figure's line saying how its hyperparameters were chosen."""
    return {"selected": "paper rule: hyperparameters selected without test data (best deletion change + val. acc.)",
            "guarded": f"guarded rule: the paper rule among settings within {max_val_drop:g} points of the "
                       f"original's validation accuracy (none within: the highest validation accuracy)",
            "oracle": "ORACLE hyperparameters, chosen on test data: an upper bound, not a result"}[flag]


def build_report(results_dir: str | Path, out_dir: str | Path | None = None,
                 max_val_drop: float = DEFAULT_MAX_VAL_DROP) -> dict[str, Path]:
    """Write the tidy table, ``summary.md`` and the figures; return them by name relative to ``out_dir``
    (default ``<results_dir>/report``). ``max_val_drop``: the guarded rule's allowed drop of validation accuracy
    below the original model's, in points."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    loaded = read_records(results_dir, config_only=True)  # the stored config's cells; the rest is counted, said
    for note in loaded.notes(results_dir):
        print(note, file=sys.stderr)
    records = [_expanded_as_method(r) for r in restore_grid_order(loaded.records, results_dir)]
    if not records:
        raise ValueError(f"no records in {results_dir / 'records'}"
                         + (f" of the cells of its config.yaml ({len(loaded.ignored)} of other cells ignored)"
                            if loaded.ignored else "") + f": run the grid with --out {results_dir} first")
    try:
        marked, no_selection = mark_selection(records, max_val_drop), None
    except NoValidationDataError as error:
        marked, no_selection = _unmarked(records), error
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
    rate_cells = _rate_based(marked)
    if not no_selection and _has_rate_cells(marked):
        paths["seeds.csv"] = write_csv(out / "seeds.csv", *seed_table(rate_cells, methods))
    figures = [] if no_selection or not _has_rate_cells(marked) else write_figures(rate_cells, methods,
                                                                                    out / "figures", max_val_drop)
    figures += write_level_figures(marked, methods, out / "figures")
    # REM's regularity x discovery map: only where >= 2 of poison / interclass / random_labels share a grid
    map_lines, map_figures = rem_map(rate_cells, methods, out / "figures", max_val_drop, no_selection)
    figures += map_figures
    attack_lines, attack_figures = ([], []) if no_selection else attack_sections(rate_cells, methods,
                                                                                 out / "figures")
    figures += attack_figures
    defence_lines = [] if no_selection else defence_sections(marked)  # clean-data defences beside unlearning
    summary = summary_markdown(marked, failed, methods, results_dir, [p.relative_to(out) for p in figures],
                               max_val_drop=max_val_drop, no_selection=no_selection, records=records,
                               extra=map_lines + attack_lines + defence_lines)
    (out / "summary.md").write_text(summary)
    paths["summary.md"] = out / "summary.md"
    paths.update({str(p.relative_to(out)): p for p in figures})
    return paths


def print_summary(paths: dict[str, Path], file: TextIO | None = None) -> str:
    """Print (and return) the written files and the headline table section of ``summary.md``: the affected
    domain with hyperparameters selected by the paper's rule (or, without validation data, every setting)."""
    sections = paths["summary.md"].read_text().split("\n## ")
    text = "\n".join(["report:", *(f"  {path}" for path in paths.values()), "", f"## {sections[1].rstrip()}"])
    print(text, file=file or sys.stdout)
    return text


def _unmarked(records: list[dict]) -> list[dict]:
    """The ok records without any selection: flags unknown (empty in the CSV)."""
    return [{**r, "metrics": r.get("metrics") or {}, "selected": None, "guarded": None, "oracle": None,
             "guard": None, "selection_score": None} for r in records if r.get("status") == "ok"]


def _expanded_as_method(record: dict) -> dict:
    """A cell whose deletion set was grown by K suspects (grid option expand) is its own line in every table and
    figure, ``<method> +K suspects``: averaging it with the plain cells of its rate would mix two deletion sets."""
    k = record.get("expand") or 0
    if not k or record.get("method") in (None, ORIGINAL):
        return record
    return {**record, "method": f"{record['method']} +{k} suspects", "base_method": record["method"]}


def method_order(records: list[dict], results_dir: Path) -> list[str]:
    """``original``, then the methods in the order of ``config.yaml`` (the grid's order), each followed by its
    expanded variants (``<method> +K suspects``, K ascending), then any others A-Z."""
    config = results_dir / "config.yaml"
    configured = list(read_yaml(config).get("methods") or []) if config.exists() else []
    present = {r.get("method") for r in records} - {None}
    variants = {}
    for r in records:
        if r.get("base_method"):
            variants.setdefault(r["base_method"], set()).add((r["expand"], r["method"]))
    listed = [ORIGINAL]
    for name in configured:
        listed += [name, *(label for _, label in sorted(variants.get(name, ())))]
    return [m for m in listed if m in present] + sorted(present - set(listed))


def restore_grid_order(records: list[dict], results_dir: Path) -> list[dict]:
    """Records written before ``setting_index`` existed get it from the run's ``config.yaml`` (the grid's order of
    each method's settings), so selection ties go to grid order, not to file-name order. A record whose setting
    the config does not list (or a config that no longer parses) keeps no index: its ties fall back to record
    order."""
    missing = {r.get("method") for r in records if r.get("setting_index") is None} - {None, ORIGINAL}
    config = results_dir / "config.yaml"
    if not missing or not config.exists():
        return records
    try:
        methods = dict(read_yaml(config).get("methods") or {})
    except (ValueError, TypeError, AttributeError):
        return records
    order = {}
    for name in missing & set(methods):
        try:
            settings = GridConfig(methods=methods).method_settings(name)
        except (ValueError, KeyError, TypeError, AttributeError):  # a stale or foreign config
            continue
        order[name] = {hparams_key(s): i for i, s in enumerate(settings)}
    restored = []
    for record in records:
        index = order.get(record.get("method"), {}).get(hparams_key(record.get("hparams") or {}))
        restored.append({**record, "setting_index": index} if record.get("setting_index") is None
                        and index is not None else record)
    return restored


def _finite(value) -> float | None:
    """Records store NaN as null; tables and means treat both as missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _setting(record: dict) -> Setting:
    return record.get("dataset"), record.get("model"), manipulation_variant(record), record.get("n")


def _setting_order(setting: Setting) -> tuple:
    dataset, model, variant, n = setting
    return str(dataset), str(model), str(variant), n if n is not None else -1


# -- the tidy table ----------------------------------------------------------------------------------------------

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


def _shared_seconds(timings: dict) -> float | None:
    """Seconds of shared work the cell computed (included in its method_seconds); older records: none known."""
    if timings.get("shared_seconds") is not None:
        return _finite(timings["shared_seconds"])
    paid = timings.get("shared_paid")
    return float(sum(_finite(v) or 0.0 for v in paid.values())) if paid else None


def _row(record: dict) -> dict:
    timings = record.get("timings") or {}
    row = {key: record.get(key) for key in ("cell", "status", "error", "dataset", "model", "manipulation", "n",
                                            "seed", "rate", "method", "setting_index", "selected", "guarded",
                                            "guard", "oracle", "forget_size")}
    row.update(manipulation_variant=manipulation_variant(record), forget_set=record.get("forget_set") or "",
               hparams=hparams_key(record.get("hparams") or {}),
               selection_score=_finite(record.get("selection_score")),
               method_seconds=timings.get("method_seconds"), shared_seconds=_shared_seconds(timings),
               eval_seconds=timings.get("eval_seconds"),
               method_notes=hparams_key(record["method_notes"]) if record.get("method_notes") else None,
               shared_with=record.get("shared_with"))
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
    """The ``flag`` (selected, guarded or oracle) cells' finite values of ``metric``, grouped by setting, method and
    rate. A rate whose cells have no chosen setting, or whose metric is missing, leaves an empty list, so the table
    shows n/a rather than nothing."""
    values: SeedValues = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in marked:
        bucket = values[_setting(record)][record["method"]][record["rate"]]
        value = _finite(record["metrics"].get(metric))
        if record.get(flag) and value is not None:
            bucket.append(value)
    return values


SEED_COLUMNS = ["dataset", "model", "manipulation_variant", "n", "method", "rate", "rule", "metric", "seeds", "mean",
                "std", "ci95_low", "ci95_high"]


def seed_table(marked: list[dict], methods: list[str]) -> tuple[list[str], list[dict]]:
    """``seeds.csv``: every entry of the rate tables (each view: metric and rule) as numbers: how many seeds, the
    mean, the sample standard deviation and the 95% t-interval of the mean (empty when undefined: one seed)."""
    rows = []
    for metric, flag, _, _ in VIEWS:
        values = seed_values(marked, flag, metric)
        for setting in sorted(values, key=_setting_order):
            for method in (m for m in methods if m in values[setting]):
                for rate, found in sorted(values[setting][method].items()):
                    if not found:
                        continue
                    stats = seed_stats(found)
                    rows.append(dict(zip(SEED_COLUMNS, [*setting, method, rate, flag, metric, stats.n, stats.mean,
                                                        *(None if np.isnan(v) else v for v in
                                                          (stats.std, stats.lo, stats.hi))])))
    return SEED_COLUMNS, rows


def _rates(marked: list[dict], setting: Setting) -> list[float]:
    return sorted({r["rate"] for r in marked if _setting(r) == setting and r["method"] != ORIGINAL})


def _curve(by_rate: dict[float, list[float]]) -> Curve | None:
    points = sorted((rate, values) for rate, values in by_rate.items() if values)
    if not points:
        return None
    return seed_curve(np.array([rate for rate, _ in points]), [values for _, values in points])


def seed_curve(xs: np.ndarray, values: list[list[float]]) -> Curve:
    """Mean over seeds at each x, with the 95% confidence interval of the mean as its band (NaN: one seed)."""
    stats = [seed_stats(v) for v in values]
    return Curve(rates=xs, mean=np.array([s.mean for s in stats]), lo=np.array([s.lo for s in stats]),
                 hi=np.array([s.hi for s in stats]), seeds=np.array([s.n for s in stats]))


# -- summary.md --------------------------------------------------------------------------------------------------

def _mean_std(values: list[float] | None, seeds: int | None = None) -> str:
    """mean ± std [95% CI] over seeds (see :mod:`.seeds`); "" for a cell not in the grid, n/a for no value."""
    return format_entry(values, seeds)


def _most(groups: list) -> int:
    return max((len(v) for v in groups if v), default=0)


def _setting_label(setting: Setting, multi: bool) -> str:
    dataset, model, variant, n = setting
    return f"{variant}, n = {n}" + (f" ({dataset} / {model})" if multi else "")


def _table(by_method: dict, methods: list[str], rates: list[float]) -> list[str]:
    lines = ["| method | " + " | ".join(f"{100 * r:g}%" for r in rates) + " |",
             "|---|" + "---:|" * len(rates)]
    rows = []
    for method in (m for m in methods if m in by_method):
        # The original model does not depend on the discovery rate: its one value fills every column.
        # (Except where the original has a value per rate: its ToW, see TOW_BASELINES.)
        by_rate = by_method[method]
        entries = [by_rate.get(rate) if method != ORIGINAL or rate in by_rate else by_rate.get(0.0)
                   for rate in rates]
        rows.append((method, entries))
    seeds = _most([v for _, entries in rows for v in entries])
    lines += [f"| {method} | " + " | ".join(_mean_std(v, seeds) for v in entries) + " |" for method, entries in rows]
    return lines + ["", seeds_note([v for _, entries in rows for v in entries])]


def _title(text: str) -> str:
    return text[0].upper() + text[1:]


def _view_section(marked: list[dict], methods: list[str], metric: str, flag: str, description: str,
                  multi: bool, max_val_drop: float, intro: list[str] = ()) -> list[str]:
    values = seed_values(marked, flag, metric)
    if metric in TOW_BASELINES:
        _original_per_rate(values, marked, TOW_BASELINES[metric])
    lines = [f"## {_title(_rule(flag, max_val_drop))}: {description} (`{metric}`, %)", "", *intro]
    for setting in sorted(values, key=_setting_order):
        lines += [f"### {_setting_label(setting, multi)}", "",
                  *_table(values[setting], methods, _rates(marked, setting)), ""]
    return lines if values else lines + ["_no finished cells_", ""]


def _original_per_rate(values: SeedValues, marked: list[dict], baseline: str) -> None:
    """Fill the original row of a ToW table with the original model's ToW at each deletion set (``baseline``, the
    same in every record of a deletion set: one value per seed)."""
    found = {}
    for record in marked:
        value = _finite((record.get("metrics") or {}).get(baseline))
        if record["method"] != ORIGINAL and value is not None:
            found.setdefault((_setting(record), record["rate"], record.get("seed")), value)
    for (setting, rate, _), value in found.items():
        values[setting][ORIGINAL][rate].append(value)


def _tow_intro(marked: list[dict], metric: str) -> list[str]:
    """What a ToW table shows, and what its references cost (recorded once per model, charged to no method)."""
    reference = {"tow_retrain": "retrain", "tow_clean": "clean"}[metric]
    models = {}
    for record in marked:
        block = (record.get("references") or {}).get(reference) or {}
        if block.get("cache_key") is not None and _finite(block.get("train_seconds")) is not None:
            models.setdefault(block["cache_key"], float(block["train_seconds"]))
    what = {"retrain": "the model retrained with recipe A on the retain set S_tr \\ S_f (EU, one per deletion set)",
            "clean": "the clean oracle, recipe A on S_tr with clean labels and no trigger (one per seed: every "
                     "manipulation undone leaves the same training set)"}[reference]
    cost = (f"{len(models)} reference model(s), {np.mean(list(models.values())):.2f} s of training each on average "
            f"(measured when trained; cached, and not in any method's time)" if models else "no recorded cost")
    return [f"ToW = 100 x (1 - |A_f(u) - A_f(r)|/100) (1 - |A_r(u) - A_r(r)|/100) (1 - |A_test(u) - A_test(r)|/100), "
            f"in percent (100: the reference's accuracies), with r {what}. A_f: on S_f, its given labels (cells.csv "
            f"`{metric}_sfclean`: its clean labels); A_r: on a seeded subsample of the retain set, given labels; "
            f"A_test: clean test accuracy. The `original` row is the original model's ToW at each deletion set "
            f"(doing nothing; `original_{metric}` in cells.csv). References: {cost}.", ""]


def _guard_lines(marked: list[dict], methods: list[str], max_val_drop: float) -> list[str]:
    """What the guarded rule could not do as stated: groups without a setting within the drop, groups without
    the original's validation accuracy."""
    guards = {group_key(r): (r["method"], r.get("guard")) for r in marked if r["method"] != ORIGINAL}
    total = len(guards)
    if not total:
        return []

    def count(kind: str) -> tuple[int, str]:
        by_method = Counter(method for method, guard in guards.values() if guard == kind)
        per_method = ", ".join(f"{m} {by_method[m]}" for m in [*methods, *sorted(set(by_method) - set(methods))]
                               if by_method[m])
        return sum(by_method.values()), per_method

    fallback, fallback_methods = count(FALLBACK)
    missing, missing_methods = count(NO_REFERENCE)
    lines = []
    if fallback:
        lines.append(f"No setting kept its validation accuracy within {max_val_drop:g} points of the original's in "
                     f"{fallback} of {total} groups ({fallback_methods}); there the guarded rule took the setting "
                     f"with the highest validation accuracy.")
    if missing:
        lines.append(f"In {missing} of {total} groups ({missing_methods}) the original model's validation accuracy "
                     f"is unknown (no finished `original` cell, or its val_acc is null), so the guarded rule chose "
                     f"nothing there (n/a).")
    if not lines:
        lines.append(f"Every group had a setting within {max_val_drop:g} points of the original's validation "
                     f"accuracy.")
    return [" ".join(lines), ""]


def _shared_prices(records: list[dict]) -> dict[tuple, float]:
    """(deletion set, shared-work key) -> the seconds the cell that computed it measured (mean, should a resumed
    grid have computed it twice)."""
    prices = defaultdict(list)
    for record in records:
        for key, seconds in ((record.get("timings") or {}).get("shared_paid") or {}).items():
            if _finite(seconds) is not None:
                prices[(_deletion_set(record), key)].append(float(seconds))
    return {key: float(np.mean(seconds)) for key, seconds in prices.items()}


def _deletion_set(record: dict) -> tuple:
    return (record.get("dataset"), record.get("model"), manipulation_variant(record), record.get("n"),
            record.get("seed"), record.get("rate"), record.get("forget_set") or "", record.get("expand") or 0)


def complete_run(record: dict, prices: dict[tuple, float]) -> tuple[float, float] | None:
    """(seconds of one complete run of this cell's method and setting, the shared work in it): its own work
    (method_seconds - shared_seconds) plus, for every shared key it used (paid or reused), what the cell of the
    same deletion set that computed it measured. None when its time, or the price of a key it reused, is
    unknown."""
    timings = record.get("timings") or {}
    seconds = _finite(timings.get("method_seconds"))
    if seconds is None:
        return None
    paid = timings.get("shared_paid") or {}
    shared = 0.0
    for key in dict.fromkeys([*paid, *(timings.get("shared_reused") or [])]):
        price = _finite(paid.get(key))
        if price is None:
            price = prices.get((_deletion_set(record), key))
        if price is None:
            return None
        shared += price
    return seconds - (_shared_seconds(timings) or 0.0) + shared, shared


def _time_section(marked: list[dict], methods: list[str], records: list[dict]) -> list[str]:
    prices = _shared_prices(records)
    lines = ["## Unlearning time (Table 3 analogue)", "",
             "Synchronised wall-clock seconds of the method alone (evaluation excluded); for `original`, the "
             "original model's training time. Some work is shared within a deletion set: the first cell that needs "
             "it computes it (SSD's importances, SCRUB's replayed teacher logits) and later cells of the same "
             "deletion set reuse it.", "",
             "- **one complete run**: what running the method once, with one setting, costs a user: its own work "
             "plus all the shared work it uses, priced at what the cell that computed it measured; mean over the "
             "method's cells.",
             "- **shared work**: the part of one complete run that is shared work (mean over the same cells).",
             "- **amortised per grid cell**: the measured method time averaged over all the method's cells, every "
             "hyperparameter setting included, shared work counted once in the cell that computed it: what the grid "
             "paid per cell, less than one run costs whenever work is shared.", "",
             "| method | cells | one complete run (s) | shared work (s) | amortised per grid cell (s) "
             "| one complete run (min) |", "|---|---:|---:|---:|---:|---:|"]
    unpriced, shared_models = [], []
    for method in methods:
        cells = [r for r in marked if r["method"] == method
                 if _finite((r.get("timings") or {}).get("method_seconds")) is not None]
        if not cells:
            continue
        amortised = np.mean([r["timings"]["method_seconds"] for r in cells])
        own = [r for r in cells if not r.get("shared_with")]  # a cell that reused a model ran nothing
        if len(own) < len(cells):
            shared_models.append(f"{len(cells) - len(own)} of {len(cells)} {method} cells gave provably the same "
                                 f"model as another setting of their deletion set, which ran once (`shared_with` in "
                                 f"cells.csv); they are charged 0 s, in the amortised column only.")
        runs = [run for r in own if (run := complete_run(r, prices)) is not None]
        if len(runs) < len(own):
            unpriced.append(f"{len(own) - len(runs)} {method} cell(s) reused shared work whose computing cell "
                            f"recorded no time for it; they are left out of its complete-run columns.")
        if runs:
            complete, shared = np.mean([c for c, _ in runs]), np.mean([s for _, s in runs])
            full = [f"{complete:.2f}", f"{shared:.2f}", f"{amortised:.2f}", f"{complete / 60:.2f}"]
        else:
            full = ["n/a", "n/a", f"{amortised:.2f}", "n/a"]
        label = f"{ORIGINAL} (training)" if method == ORIGINAL else method
        lines.append(f"| {label} | {len(cells)} | " + " | ".join(full) + " |")
    return lines + [""] + ([*unpriced, ""] if unpriced else []) + ([*shared_models, ""] if shared_models else [])


def _number_text(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4g}"


def _note_sentence(key: str, values: list) -> str:
    """Numeric notes: in how many cells the value is 0, and its range; others: each value's count. SSD's
    ``dampened_weights`` reads as a sentence of its own."""
    count = len(values)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        zero = sum(1 for v in values if v == 0)
        span = f"min {_number_text(min(values))}, max {_number_text(max(values))}"
        if key == "dampened_weights":
            return f"dampened nothing in {zero} of {count} cells (dampened weights per cell: {span})"
        return f"`{key}` is 0 in {zero} of {count} cells ({span})"
    if any(isinstance(v, (list, dict)) for v in values):  # e.g. RUM's per-step records: too long for a line
        return f"`{key}`: recorded in {count} cells (see `method_notes` in cells.csv)"
    counts = Counter(v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values)
    return f"`{key}`: " + ", ".join(f"{v} in {c}" for v, c in counts.most_common()) + f" of {count} cells"


def _notes_section(marked: list[dict], methods: list[str]) -> list[str]:
    lines = []
    for method in methods:
        notes = [r["method_notes"] for r in marked if r["method"] == method and r.get("method_notes")]
        keys = list(dict.fromkeys(k for n in notes for k in n))
        parts = [_note_sentence(k, values) for k in keys
                 if (values := [n[k] for n in notes if n.get(k) is not None])]
        if parts:
            lines.append(f"- {method}: " + "; ".join(parts))
    if not lines:
        return []
    return ["## Method notes", "", "What the methods report about their own runs (`method_notes` in cells.csv), "
            "over the finished cells that report each note.", "", *lines, ""]


def _failed_section(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    lines = [f"## Failed cells ({len(failed)})", "", "Re-running the grid retries them.", ""]
    for record in failed:
        error = (record.get("error") or "no error recorded").strip().splitlines()[0]
        lines.append(f"- `{record.get('cell')}`: {error}")
    return lines + [""]


def _every_setting_section(marked: list[dict], methods: list[str], metric: str, description: str, multi: bool,
                           intro: list[str]) -> list[str]:
    """Without selection: per setting and method, one row per hyperparameter setting (grid order), the original
    model first; mean ± std [95% CI] over seeds."""
    lines = [f"## No selection possible: every setting's {description} (`{metric}`, %)", "", *intro]
    values = defaultdict(lambda: defaultdict(list))  # (setting, method, hparams) -> rate -> values
    order = {}
    for position, record in enumerate(marked):
        key = (_setting(record), record["method"], hparams_key(record.get("hparams") or {}))
        index = record.get("setting_index")
        order[key] = min(order.get(key, (float("inf"), position)),
                         (index if index is not None else float("inf"), position))
        value = _finite(record["metrics"].get(metric))
        bucket = values[key][record["rate"]]
        if value is not None:
            bucket.append(value)
    for setting in sorted({key[0] for key in values}, key=_setting_order):
        rates = _rates(marked, setting)
        original = next((v for k, v in values.items() if k[0] == setting and k[1] == ORIGINAL), None)
        for method in methods:
            settings = sorted((k for k in values if k[0] == setting and k[1] == method and method != ORIGINAL),
                              key=lambda k: order[k])
            if not settings:
                continue
            table = ["| setting | " + " | ".join(f"{100 * r:g}%" for r in rates) + " |",
                     "|---|" + "---:|" * len(rates)]
            entries = [values[k].get(rate) for k in settings for rate in rates]
            entries += [original.get(0.0)] if original is not None else []
            seeds = _most(entries)
            if original is not None:
                table.append(f"| {ORIGINAL} | " + " | ".join([_mean_std(original.get(0.0), seeds)] * len(rates))
                             + " |")
            table += [f"| `{k[2]}` | " + " | ".join(_mean_std(values[k].get(rate), seeds) for rate in rates) + " |"
                      for k in settings]
            lines += [f"### {_setting_label(setting, multi)}: {method}", "", *table, "", seeds_note(entries), ""]
    return lines


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
    if _has_rate_cells(marked):  # forget-set cells would pool their sets under rate 1.0: left out here
        lines += _rate_sections(_rate_based(marked), methods, multi, max_val_drop, no_selection)
    lines += list(extra)  # e.g. REM's regularity x discovery map (report.rem_map)
    lines += _time_section(marked, methods, records if records is not None else [*marked, *failed])
    lines += _notes_section(marked, methods)
    lines += _failed_section(failed)
    if figures:
        lines += ["## Figures", "", *(f"- [{p.stem}]({p.as_posix()})" for p in figures), ""]
    return "\n".join(lines)


def _rate_sections(marked: list[dict], methods: list[str], multi: bool, max_val_drop: float,
                   no_selection: Exception | None) -> list[str]:
    """The tables by discovery rate (paper 1): both rules, the oracle and ToW; without validation data, every
    setting."""
    lines = []
    if no_selection is not None:
        reason = [_title(str(no_selection)), ""]
        lines += [f"**No hyperparameter selection was possible.** {reason[0]}", "",
                  "The tables below therefore show every hyperparameter setting (one row each, in grid order) instead "
                  "of a chosen one: mean ± sample standard deviation [95% confidence interval] over seeds (one seed: its "
                  "value; each table says how many seeds it holds); columns are "
                  "discovery rates |S_f| / |S_m|; the original model's value fills every column; n/a: the metric is "
                  "null in every seed. cells.csv leaves the selected, guarded and oracle flags empty, and no "
                  "figures are drawn (they show chosen settings).", ""]
        for i, (metric, _, _, description) in enumerate(EVERY_SETTING_VIEWS):  # the reason heads the first
            lines += _every_setting_section(marked, methods, metric, description, multi, [] if i else reason)
    else:
        lines += [
            "Each entry is the mean ± sample standard deviation [95% confidence interval of the mean, Student's t] "
            "over seeds (one seed: its value, no interval; each table says how many seeds it holds) of one "
            "hyperparameter setting per group (dataset, model, manipulation variant, size, seed, rate, method), "
            "chosen without test data by one of two rules:", "",
            "- **paper rule** (paper 1; the default, for reproduction): the best (deletion change on S_f + "
            "validation accuracy) / 2. It can pick a collapsed model: a model at chance flips all of S_f "
            "(deletion change 100).",
            f"- **guarded rule**: the best paper score among the settings whose validation accuracy is at most "
            f"{max_val_drop:g} points below the original model's (same dataset, model, manipulation variant, size "
            f"and seed). Where no setting is that close, it takes the setting with the highest validation accuracy; "
            f"where the original's validation accuracy is unknown, it chooses nothing (n/a). Both cases are counted "
            f"under its tables.", "",
            "Ties go to the higher validation accuracy, then to the setting that comes first in the method's grid. "
            "The oracle tables choose on test data: an upper bound, not a result. Columns are discovery rates "
            "|S_f| / |S_m|. The original model does not depend on the rate, so its value fills every column. n/a: "
            "the metric is undefined (null) in every seed, or no setting was chosen.", "",
        ]
        guard = _guard_lines(marked, methods, max_val_drop)
        first_guarded = True
        for metric, flag, _, description in VIEWS:
            if metric in TOW_BASELINES and not any(metric in r["metrics"] for r in marked):
                continue  # a grid without ToW (the default): no empty sections
            intro = guard if flag == "guarded" and first_guarded else []
            intro = _tow_intro(marked, metric) if metric in TOW_BASELINES else intro
            first_guarded = first_guarded and flag != "guarded"
            lines += _view_section(marked, methods, metric, flag, description, multi, max_val_drop, intro)
    return lines


# -- forget sets (RUM's study) ----------------------------------------------------------------------------------

LEVEL_ORDER = ("low", "medium", "high", "mixed")
RUM = "rum"


def _forget_set(record: dict) -> str:
    return record.get("forget_set") or ""


def _rate_based(marked: list[dict]) -> list[dict]:
    """The records of the rate tables: every record but those of forget-set cells (originals included)."""
    return [r for r in marked if not _forget_set(r)]


def _has_rate_cells(marked: list[dict]) -> bool:
    """Whether the rate tables have anything to show: any rate-based method cell, or no forget-set cell at all."""
    return (not any(_forget_set(r) for r in marked)
            or any(r["method"] != ORIGINAL and not _forget_set(r) for r in marked))


def rum_label(hparams: dict) -> str:
    """A row name for one RUM setting: ``rum none>cf>salun`` (full RUM, its steps low to high), ``rum^F cf``
    (one method for every subset), `` (shuffle)`` for the control, and the proxy or k where not the defaults."""
    try:
        hp = METHODS.get(RUM).resolve(hparams)
    except (KeyError, ValueError, TypeError):  # a stale record: its raw settings
        return f"{RUM} {hparams_key(hparams)}"
    name = f"{RUM}^F {hp['method']}" if hp["method"] else f"{RUM} " + ">".join(map(str, hp["steps"]))
    if hp["proxy"] != "confidence" or hp["proxy_params"]:
        name += f" [{hp['proxy']}{' ' + hparams_key(hp['proxy_params']) if hp['proxy_params'] else ''}]"
    if hp["subsets"] != 3:
        name += f" k={hp['subsets']}"
    return name + (" (shuffle)" if hp["order"] == "shuffle" else "")


def _study_rows(study: list[dict], methods: list[str]) -> tuple[dict[int, str], list[str]]:
    """Which records are table rows, under which name, in which order. Every RUM setting is a row of its own (RUM,
    RUM^F and the shuffle control are different algorithms, not hyperparameters to choose among); other methods
    give one row: the paper rule's pick (without selection, a method's only setting). Returns record id -> row
    name and the row names in order (``methods``' order, RUM settings in grid order)."""
    settings = defaultdict(set)
    for record in study:
        settings[record["method"]].add(hparams_key(record.get("hparams") or {}))
    labels = {}
    for key in settings[RUM]:
        labels[key] = rum_label(json.loads(key))
    clashes = Counter(labels.values())
    labels = {k: v if clashes[v] == 1 else f"{v} #{zlib.crc32(k.encode()):08x}" for k, v in labels.items()}
    names, order = {}, {}
    for record in study:
        method = record["method"]
        if method == ORIGINAL:
            continue
        if method == RUM:
            name = labels[hparams_key(record.get("hparams") or {})]
        elif record.get("selected") or (record.get("selected") is None and len(settings[method]) == 1):
            name = method
        else:
            continue
        names[id(record)] = name
        index = record.get("setting_index")
        rank = methods.index(method) if method in methods else len(methods)
        order.setdefault(name, (rank, index if index is not None else 0, name))
    return names, sorted(order, key=order.get)


def configured_forget_sets(results_dir: Path) -> list[str]:
    """The forget-set labels of the run's ``config.yaml``, in its order ([] without one, or when it is stale)."""
    from ..forget_sets import parse_forget_sets

    config = results_dir / "config.yaml"
    try:
        entries = read_yaml(config).get("forget_sets") if config.exists() else None
        return [spec.label for spec in parse_forget_sets(entries)] if entries else []
    except (ValueError, TypeError, AttributeError):
        return []


def _forget_set_order(study: list[dict], setting: Setting, configured: list[str]) -> list[str]:
    """The forget sets of ``setting`` in the config's order (others after them, A-Z)."""
    found = {_forget_set(r) for r in study if _setting(r) == setting and _forget_set(r)}
    rank = {label: i for i, label in enumerate(configured)}
    return sorted(found, key=lambda label: (rank.get(label, len(rank)), label))


def _reference_accuracy(record: dict, reference: str, key: str) -> float | None:
    block = (record.get("references") or {}).get(reference) or {}
    return _finite((block.get("accuracies") or {}).get(key))


def _study_metrics(study: list[dict]) -> list[tuple[str, str, object, list]]:
    """The tables of the study section, those the records can fill: ToW against each reference present, the
    accuracy on S_f with its given labels (A_f: 100 - deletion change), and the clean test accuracy. Each is
    (metric, heading, the value of a record, reference rows: [(row name, their value from a record)])."""
    tables = []
    for metric, reference in (("tow_retrain", "the retrained model (RUM's reference)"),
                              ("tow_clean", "the clean oracle")):
        if any(metric in r["metrics"] for r in study):
            baseline = TOW_BASELINES[metric]
            tables.append((metric, f"ToW against {reference} (`{metric}`, %)",
                           lambda r, m=metric: _finite(r["metrics"].get(m)),
                           [(ORIGINAL, lambda r, b=baseline: _finite(r["metrics"].get(b)))]))
    references = [(f"{name} (reference)", lambda r, n=name, k=key: _reference_accuracy(r, n, k))
                  for name in ("retrain", "clean") for key in ("forget_given",)
                  if any((r.get("references") or {}).get(name) for r in study)]
    tables.append(("forget_given", "accuracy on the forget set, its given labels (A_f = 100 - deletion change, %)",
                   lambda r: None if _finite(r["metrics"].get("deletion_change")) is None
                   else 100.0 - r["metrics"]["deletion_change"],
                   [(ORIGINAL, lambda r: _reference_accuracy(r, "original", "forget_given")), *references]))
    test_refs = [(f"{name} (reference)", lambda r, n=name: _reference_accuracy(r, n, "test"))
                 for name in ("retrain", "clean") if any((r.get("references") or {}).get(name) for r in study)]
    tables.append(("test_acc", "clean test accuracy (`test_acc`, %)", lambda r: _finite(r["metrics"].get("test_acc")),
                   [(ORIGINAL, lambda r: _reference_accuracy(r, "original", "test")), *test_refs]))
    return tables


def study_values(study: list[dict], methods: list[str], value, references: list) -> dict:
    """setting -> row name -> forget set -> values (one per seed): the rows of :func:`_study_rows`, then the
    reference rows (each read once per forget set and seed, from any record of it)."""
    names, _ = _study_rows(study, methods)
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    seen = set()
    for record in study:
        setting, label = _setting(record), _forget_set(record)
        if id(record) in names and (v := value(record)) is not None:
            values[setting][names[id(record)]][label].append(v)
        for name, read in references:
            key = (setting, label, record.get("seed"), name)
            if key not in seen and (v := read(record)) is not None:
                seen.add(key)
                values[setting][name][label].append(v)
    return values


def _describe_forget_sets(study: list[dict], setting: Setting, labels: list[str]) -> list[str]:
    """A table of the forget sets: rule, size, measured ES, a memorization proxy's range, distance to the
    centroid; means over seeds."""
    infos = defaultdict(dict)  # label -> seed -> forget_set_info
    for record in study:
        if _setting(record) == setting and record.get("forget_set_info"):
            infos[_forget_set(record)].setdefault(record.get("seed"), record["forget_set_info"])
    lines = ["| forget set | selected by | size | measured ES | proxy | proxy min | proxy mean | proxy max "
             "| distance to centroid (mean) |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for label in labels:
        seeds = list(infos.get(label, {}).values())
        if not seeds:
            lines.append(f"| {label} | n/a |  |  |  |  |  |  |  |")
            continue
        first = seeds[0]
        rule = first.get("kind", "?") + (f" ({first.get('by')})" if first.get("kind") == "memorization" else "")

        def mean(read) -> str:
            found = [v for info in seeds if (v := _finite(read(info))) is not None]
            return _mean_std(found) if found else "n/a"

        proxy = (first.get("proxy") or {}).get("name", "n/a")
        lines.append(f"| {label} | {rule} | {first.get('selected', first.get('size'))} | {mean(lambda i: i.get('es'))} "
                     f"| {proxy} | {mean(lambda i: (i.get('proxy') or {}).get('min'))} "
                     f"| {mean(lambda i: (i.get('proxy') or {}).get('mean'))} "
                     f"| {mean(lambda i: (i.get('proxy') or {}).get('max'))} "
                     f"| {mean(lambda i: (i.get('distance') or {}).get('mean'))} |")
    return lines


def study_sections(marked: list[dict], methods: list[str], multi: bool,
                   no_selection: Exception | None = None, configured: list[str] = ()) -> list[str]:
    """RUM's study (grid key ``forget_sets``): per setting, tables with one column per forget set (in the order of
    ``configured``, the config's labels); [] when no record has a forget set."""
    study = [r for r in marked if _forget_set(r) and r["method"] != ORIGINAL]
    if not study:
        return []
    tables = _study_metrics(study)
    _, rows = _study_rows(study, methods)
    intro = ("Forget sets chosen from the trained original (grid key `forget_sets`): by a memorization proxy "
             "(low / medium / high / mixed), by entanglement (low / high) or at random; see the forget-set table "
             "below for each set's measured ES and proxy range. Rows: every RUM setting (`rum a>b>c`: full RUM, "
             "one method per subset from low to high memorization, `none` = left as it is; `rum^F m`: method m on "
             "every subset; `(shuffle)`: the random-subset control); for the other methods, the setting the paper "
             "rule picks (best (deletion change + validation accuracy) / 2; the method's only setting when it has "
             "one). `original`: the original model, doing nothing. Entries: mean ± sample standard deviation [95% "
             "confidence interval] over seeds (one seed: its value; each table says how many seeds it holds).")
    if no_selection is not None:
        intro += f" No hyperparameter selection was possible ({no_selection}); methods with several settings are " \
                 f"left out."
    lines = ["## ToW by forget set", "", intro, ""]
    for metric, heading, value, references in tables:
        values = study_values(study, methods, value, references)
        lines += [f"### {_title(heading)}", ""]
        if metric in TOW_BASELINES:
            lines += _tow_intro(study, metric)[:1] + [""]
        for setting in sorted(values, key=_setting_order):
            labels = _forget_set_order(study, setting, list(configured))
            if multi or len(values) > 1:
                lines += [f"#### {_setting_label(setting, multi)}", ""]
            order = [ORIGINAL, *[n for n, _ in references if n != ORIGINAL], *rows]
            lines += ["| method | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            names = [n for n in dict.fromkeys(order) if n in values[setting]]
            entries = [values[setting][name].get(label, []) for name in names for label in labels]
            seeds = _most(entries)
            for name in names:
                lines.append(f"| {name} | " + " | ".join(_mean_std(values[setting][name].get(label, []), seeds)
                                                       for label in labels) + " |")
            lines += ["", seeds_note(entries), ""]
    if not any(metric in TOW_BASELINES for metric, *_ in tables):
        lines += ["No ToW: the grid ran without `tow` (set `tow: {references: [retrain]}`).", ""]
    lines += ["## Forget sets", "",
              "How each forget set was chosen and what it is: measured ES = the entanglement score of the set "
              "against a seeded subsample of the other training samples in the original's penultimate space "
              "(higher = more entangled); proxy = a memorization proxy's range over the set (higher = more "
              "memorized; for entanglement and random sets the confidence proxy); distance = to the centroid of "
              "all training embeddings. Means over seeds.", ""]
    for setting in sorted({_setting(r) for r in study}, key=_setting_order):
        if multi or len({_setting(r) for r in study}) > 1:
            lines += [f"### {_setting_label(setting, multi)}", ""]
        lines += [*_describe_forget_sets(study, setting, _forget_set_order(study, setting, list(configured))), ""]
    return lines


def write_level_figures(marked: list[dict], methods: list[str], fig_dir: Path) -> list[Path]:
    """ToW per memorization level: per setting, memorization proxy and size, one figure per ToW metric present;
    x = the levels present (low, medium, high, mixed), one line per row of the study tables (the original
    dashed), mean over seeds with the 95% CI band."""
    study = [r for r in marked if _forget_set(r) and r["method"] != ORIGINAL]
    levels = defaultdict(dict)  # (setting, by, size) -> level -> label
    for record in study:
        spec = record.get("forget_set_info") or {}
        if spec.get("kind") == "memorization" and spec.get("level") in LEVEL_ORDER:
            levels[(_setting(record), spec["by"], spec.get("size"))][spec["level"]] = _forget_set(record)
    if not levels:
        return []
    stems = _stems(sorted({key[0][:3] for key in levels}, key=lambda g: tuple(map(str, g))))
    paths = []
    for metric, heading, value, references in _study_metrics(study):
        if metric not in TOW_BASELINES:
            continue
        values = study_values(study, methods, value, references)
        _, rows = _study_rows(study, methods)
        for (setting, by, size), found in sorted(levels.items(), key=lambda item: str(item[0])):
            present = [level for level in LEVEL_ORDER if level in found]
            curves, plotted = {}, []
            for name in [ORIGINAL, *rows]:
                points = [(x, values[setting][name].get(found[level], [])) for x, level in enumerate(present)]
                points = [(x, v) for x, v in points if v]
                if points:
                    curves[name] = seed_curve(np.array([x for x, _ in points], dtype=float), [v for _, v in points])
                    plotted += [v for _, v in points]
            if not curves:
                continue
            dataset, model, variant, n = setting
            title = (f"{dataset} / {model}, {variant} (n = {n}): {heading}\nforget sets of {size} samples by "
                     f"{by} memorization level; {seeds_phrase(plotted)}")
            name = f"{stems[setting[:3]]}-n{n}-{metric.replace('_', '-')}-by-{by}-level-{size}.png"
            paths.append(plot_levels(curves, present, fig_dir / name, title, ylabel=f"{metric} (%)"))
    return paths


# -- figures -----------------------------------------------------------------------------------------------------

def _stems(groups: list[tuple]) -> dict[tuple, str]:
    """A file-name stem per (dataset, model, manipulation variant): the variant with every run of other characters
    than letters, digits, ``_.=`` turned into ``-`` (``poison {"target":3}`` -> ``poison-target-3``), prefixed
    by dataset and model when there are several; a checksum is appended where two variants would collide."""
    multi = len({g[:2] for g in groups}) > 1

    def slug(text) -> str:
        return re.sub(r"[^A-Za-z0-9_.=]+", "-", str(text)).strip("-") or "manipulation"

    stems = {g: "-".join(slug(part) for part in (g if multi else g[2:])) for g in groups}
    clashes = Counter(stems.values())
    return {g: stem if clashes[stem] == 1 else f"{stem}-{zlib.crc32(str(g[2]).encode()):08x}"
            for g, stem in stems.items()}


def write_figures(marked: list[dict], methods: list[str], fig_dir: Path,
                  max_val_drop: float = DEFAULT_MAX_VAL_DROP) -> list[Path]:
    """One figure per manipulation variant and view, one panel per manipulation size."""
    groups = sorted({_setting(r)[:3] for r in marked}, key=lambda g: tuple(map(str, g)))
    stems = _stems(groups)
    values = [seed_values(marked, flag, metric) for metric, flag, _, _ in VIEWS]
    paths = []
    for group in groups:
        dataset, model, variant = group
        for (metric, flag, suffix, description), by_setting in zip(VIEWS, values):
            if metric in TOW_BASELINES:
                continue  # summary tables only: its original line would vary with the rate
            panels = {setting[3]: _panel(by_setting[setting], methods) for setting in by_setting
                      if setting[:3] == group}
            panels = {n: curves for n, curves in panels.items() if curves}
            if panels:
                plotted = [v for setting in by_setting if setting[:3] == group
                           for by_rate in by_setting[setting].values() for v in by_rate.values()]
                heading = (f"{dataset} / {model}, {variant}\n{description}\n{_choice(flag, max_val_drop)}\n"
                           f"{seeds_phrase(plotted)}")
                paths.append(plot_metric(panels, fig_dir / f"{stems[group]}-{suffix}.png", heading))
    return paths


def _panel(by_method: dict, methods: list[str]) -> dict[str, Curve]:
    curves = {m: _curve(by_method[m]) for m in methods if m in by_method}
    return {m: c for m, c in curves.items() if c is not None}
