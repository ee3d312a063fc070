"""REM's evaluation space (REFERENCE-NOTES 3.5, SPEC 6): a map of regularity x discovery rate per method.

Rows are the manipulations in REM's order of statistical regularity, high to low: ``poison`` (a trigger),
``interclass`` (a label swap between two classes), ``random_labels`` (random wrong labels). Columns are the discovery
rate: 0% is the original (trained) model, doing nothing, then each rate of the grid. Class-dependent label noise
(``label_noise``) sits between the swap and random labels; each poison variant (an attack: blend, SIG, WaNet, ...)
is a row of its own, named by its trigger. A results directory qualifies when it holds rate-based cells of at least
two rows for the same dataset, model and size n; otherwise :func:`rem_map` adds nothing.

Each cell holds one of four quantities, mean over seeds of the chosen setting (paper rule, and the guarded rule);
the summary's tables add the standard deviation and 95% confidence interval and say how many seeds they hold:

- healed (train) = ``manipulated_acc``: clean-label accuracy on all of S_m (REM's "Healed (Train)", ``manip_acc``);
- healed (test) = ``affected_acc``: clean-label accuracy on the affected test domain (REM's "Healed (Test)");
- utility (test) = ``utility_acc``: accuracy on the unaffected test domain (REM's "Utility (Test)");
- healed x utility = ``manipulated_acc x utility_acc / 100``: REM's summary score ``train_fixed * test_nomanip /
  100`` (REFERENCE-NOTES 3.5) multiplies the *train* healed accuracy by the test utility, and so does this map.
  It is computed per record (one seed), then averaged over seeds.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..runner.spec import ORIGINAL
from ..selection import manipulation_variant
from .attacks import attack_label
from .figures import plot_heatmaps
from .seeds import format_entry, seeds_note

# REM's regularity axis, high -> low.
REGULARITY = ("poison", "interclass", "label_noise", "random_labels")
PRODUCT = "healed_train_x_utility"
# (metric, label, description, figure file suffix)
QUANTITIES = [
    ("manipulated_acc", "healed (train)", "clean-label accuracy on all of S_m (`manipulated_acc`)", "healed-train"),
    ("affected_acc", "healed (test)", "clean-label accuracy on the affected test domain (`affected_acc`)",
     "healed-test"),
    ("utility_acc", "utility (test)", "accuracy on the unaffected test domain (`utility_acc`)", "utility"),
    (PRODUCT, "healed (train) x utility / 100",
     "REM's summary score: `manipulated_acc` x `utility_acc` / 100 per seed, then the mean", "healed-x-utility"),
]
FLAGS = (("selected", "paper rule", ""), ("guarded", "guarded rule", "-guarded"))

MapKey = tuple  # (dataset, model, n)


def _value(record: dict, metric: str) -> float | None:
    metrics = record.get("metrics") or {}
    if metric == PRODUCT:
        healed, utility = _number(metrics.get("manipulated_acc")), _number(metrics.get("utility_acc"))
        return None if healed is None or utility is None else healed * utility / 100.0
    return _number(metrics.get(metric))


def _number(value) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def _row_order(variant_and_name: tuple) -> tuple:
    variant, name = variant_and_name
    return REGULARITY.index(name), str(variant)


def map_groups(rate_cells: list[dict]) -> dict[MapKey, list[tuple]]:
    """(dataset, model, n) -> its rows [(manipulation variant, manipulation name)] in REM's order, for the groups
    with method cells of at least two of :data:`REGULARITY`."""
    rows = defaultdict(set)
    for record in rate_cells:
        name = record.get("manipulation")
        if name in REGULARITY and record.get("method") != ORIGINAL:
            rows[(record.get("dataset"), record.get("model"), record.get("n"))].add((manipulation_variant(record),
                                                                                    name))
    return {key: sorted(found, key=_row_order) for key, found in sorted(rows.items(), key=lambda kv: str(kv[0]))
            if len(found) >= 2}


def row_name(variant: str, name: str) -> str:
    """A poison variant with a registered trigger or an option is named by its attack (``poison: blend``,
    ``poison: sig clean-label``); BadNets' legacy patch stays ``poison``; others are named by their variant."""
    if name != "poison" or not any(key in str(variant) for key in ('"trigger"', '"clean_label"', "all-to-all")):
        return str(variant)
    return f"poison: {attack_label({'manipulation_variant': variant})}"


def map_values(rate_cells: list[dict], key: MapKey, flag: str, metric: str) -> dict:
    """method -> manipulation variant -> rate -> values (one per seed) of the ``flag`` records; the original's
    values sit under rate 0.0."""
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in rate_cells:
        if (record.get("dataset"), record.get("model"), record.get("n")) != key or not record.get(flag):
            continue
        value = _value(record, metric)
        if value is not None:
            rate = 0.0 if record["method"] == ORIGINAL else record["rate"]
            values[record["method"]][manipulation_variant(record)][rate].append(value)
    return values


def _rates(rate_cells: list[dict], key: MapKey) -> list[float]:
    return sorted({r["rate"] for r in rate_cells if r.get("method") != ORIGINAL
                   and (r.get("dataset"), r.get("model"), r.get("n")) == key})


def _mean(values: list[float] | None) -> float:
    return float(np.mean(values)) if values else float("nan")


def map_matrix(values: dict, method: str, rows: list[tuple], rates: list[float]) -> np.ndarray:
    """rows x (0% + rates): the original's mean in the first column, the method's means after it (NaN: none)."""
    original, own = values.get(ORIGINAL, {}), values.get(method, {})
    return np.array([[_mean(original.get(variant, {}).get(0.0))] + [_mean(own.get(variant, {}).get(rate))
                                                                     for rate in rates]
                     for variant, _ in rows], dtype=float)


def map_entries(values: dict, method: str, rows: list[tuple], rates: list[float]) -> list[list[list[float]]]:
    """rows x (0% + rates) of per-seed values, laid out like :func:`map_matrix` ([]: none)."""
    original, own = values.get(ORIGINAL, {}), values.get(method, {})
    return [[list(original.get(variant, {}).get(0.0) or [])] + [list(own.get(variant, {}).get(rate) or [])
                                                                for rate in rates]
            for variant, _ in rows]


def _columns(rates: list[float]) -> list[str]:
    return ["0%"] + [f"{100 * r:g}%" for r in rates]


def _stem(key: MapKey, multi: bool) -> str:
    dataset, model, n = key
    return "rem-map" + (f"-{dataset}-{model}" if multi else "") + f"-n{n}"


def rem_map(rate_cells: list[dict], methods: list[str], fig_dir: Path, max_val_drop: float,
            no_selection: Exception | None = None) -> tuple[list[str], list[Path]]:
    """The summary section "Regularity x discovery map" and its heatmaps, or ([], []) when the results do not
    qualify (fewer than two of poison / interclass / random_labels at one dataset, model and n) or no
    hyperparameters could be selected."""
    groups = map_groups(rate_cells)
    if not groups or no_selection is not None:
        return [], []
    multi = len({key[:2] for key in groups}) > 1
    lines = ["## Regularity x discovery map (REM's evaluation space)", "",
             "REM's grid (REFERENCE-NOTES 3.5): rows = regularity of the manipulation, high to low (poison, "
             "interclass, random_labels); columns = discovery rate |S_f| / |S_m|, where 0% is the original "
             "(trained) model. Each entry is the mean ± sample standard deviation [95% confidence interval] over seeds "
             "(one seed: its value; each table says how many seeds it holds) of the chosen setting (paper rule; then "
             "the guarded "
             f"rule, validation accuracy at most {max_val_drop:g} points below the original's); n/a: no value. "
             "Quantities: healed (train) = `manipulated_acc`, healed (test) = `affected_acc`, utility (test) = "
             "`utility_acc`, and REM's summary score healed x utility / 100, which, as in REM's plotting code, "
             "multiplies the *train* healed accuracy (`manipulated_acc`) by the test utility (`utility_acc`), per "
             "seed, then averages.", ""]
    figures = []
    for key, rows in groups.items():
        dataset, model, n = key
        rates = _rates(rate_cells, key)
        columns = _columns(rates)
        present = {r["method"] for r in rate_cells if r.get("method") != ORIGINAL
                   and (r.get("dataset"), r.get("model"), r.get("n")) == key}
        order = [m for m in methods if m in present] + sorted(present - set(methods))
        for flag, rule, suffix in FLAGS:
            values = {metric: map_values(rate_cells, key, flag, metric) for metric, *_ in QUANTITIES}
            lines += [f"### {dataset} / {model}, n = {n}: {rule}", ""]
            for method in order:
                lines += [f"#### {method} ({rule})", ""]
                for metric, label, _, _ in QUANTITIES:
                    entries = map_entries(values[metric], method, rows, rates)
                    flat = [v for row in entries for v in row]
                    seeds = max((len(v) for v in flat), default=0)
                    lines += [f"{label[0].upper()}{label[1:]}:", "",
                              "| manipulation | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
                    lines += [f"| {row_name(variant, name)} | " + " | ".join(format_entry(v, seeds) for v in row)
                              + " |" for (variant, name), row in zip(rows, entries)]
                    lines += ["", seeds_note(flat), ""]
            for metric, label, description, file_suffix in QUANTITIES:
                panels = {method: map_matrix(values[metric], method, rows, rates) for method in order}
                held = sorted({len(v) for m in order for row in map_entries(values[metric], m, rows, rates)
                               for v in row if v})
                seeds = "-".join(str(k) for k in dict.fromkeys(held[:1] + held[-1:])) or "0"
                title = (f"{dataset} / {model}, n = {n}: {label}, {rule}\n{description.replace('`', '')}\n"
                         f"rows: regularity high -> low; columns: discovery rate (0% = the original); mean over "
                         f"{seeds} seed(s) (95% CIs in summary.md)")
                path = fig_dir / f"{_stem(key, multi)}-{file_suffix}{suffix}.png"
                figures.append(plot_heatmaps(panels, [row_name(*row) for row in rows], columns, path, title))
    return lines, figures
