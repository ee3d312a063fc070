"""The tables by discovery rate (paper 1): both selection rules, the oracle and ToW; without validation data, every
hyperparameter setting."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..methods import hparams_key
from ..runner.spec import ORIGINAL
from ..selection import FALLBACK, NO_REFERENCE, group_key
from .seeds import seeds_note
from .views import (EVERY_SETTING_VIEWS, TOW_BASELINES, VIEWS, SeedValues, finite, mean_std, most_seeds, rates_of,
                    rule_name, seed_values, setting_label, setting_of, setting_order, title)


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
    seeds = most_seeds([v for _, entries in rows for v in entries])
    lines += [f"| {method} | " + " | ".join(mean_std(v, seeds) for v in entries) + " |" for method, entries in rows]
    return lines + ["", seeds_note([v for _, entries in rows for v in entries])]


def _view_section(marked: list[dict], methods: list[str], metric: str, flag: str, description: str,
                  multi: bool, max_val_drop: float, intro: list[str] = ()) -> list[str]:
    values = seed_values(marked, flag, metric)
    if metric in TOW_BASELINES:
        _original_per_rate(values, marked, TOW_BASELINES[metric])
    lines = [f"## {title(rule_name(flag, max_val_drop))}: {description} (`{metric}`, %)", "", *intro]
    for setting in sorted(values, key=setting_order):
        lines += [f"### {setting_label(setting, multi)}", "",
                  *_table(values[setting], methods, rates_of(marked, setting)), ""]
    return lines if values else lines + ["_no finished cells_", ""]


def _original_per_rate(values: SeedValues, marked: list[dict], baseline: str) -> None:
    """Fill the original row of a ToW table with the original model's ToW at each deletion set (``baseline``, the
    same in every record of a deletion set: one value per seed)."""
    found = {}
    for record in marked:
        value = finite((record.get("metrics") or {}).get(baseline))
        if record["method"] != ORIGINAL and value is not None:
            found.setdefault((setting_of(record), record["rate"], record.get("seed")), value)
    for (setting, rate, _), value in found.items():
        values[setting][ORIGINAL][rate].append(value)


def tow_intro(marked: list[dict], metric: str) -> list[str]:
    """What a ToW table shows, and what its references cost (recorded once per model, charged to no method)."""
    reference = {"tow_retrain": "retrain", "tow_clean": "clean"}[metric]
    models = {}
    for record in marked:
        block = (record.get("references") or {}).get(reference) or {}
        if block.get("cache_key") is not None and finite(block.get("train_seconds")) is not None:
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


def _every_setting_section(marked: list[dict], methods: list[str], metric: str, description: str, multi: bool,
                           intro: list[str]) -> list[str]:
    """Without selection: per setting and method, one row per hyperparameter setting (grid order), the original
    model first; mean ± std [95% CI] over seeds."""
    lines = [f"## No selection possible: every setting's {description} (`{metric}`, %)", "", *intro]
    values = defaultdict(lambda: defaultdict(list))  # (setting, method, hparams) -> rate -> values
    order = {}
    for position, record in enumerate(marked):
        key = (setting_of(record), record["method"], hparams_key(record.get("hparams") or {}))
        index = record.get("setting_index")
        order[key] = min(order.get(key, (float("inf"), position)),
                         (index if index is not None else float("inf"), position))
        value = finite(record["metrics"].get(metric))
        bucket = values[key][record["rate"]]
        if value is not None:
            bucket.append(value)
    for setting in sorted({key[0] for key in values}, key=setting_order):
        rates = rates_of(marked, setting)
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
            seeds = most_seeds(entries)
            if original is not None:
                table.append(f"| {ORIGINAL} | " + " | ".join([mean_std(original.get(0.0), seeds)] * len(rates))
                             + " |")
            table += [f"| `{k[2]}` | " + " | ".join(mean_std(values[k].get(rate), seeds) for rate in rates) + " |"
                      for k in settings]
            lines += [f"### {setting_label(setting, multi)}: {method}", "", *table, "", seeds_note(entries), ""]
    return lines


def rate_sections(marked: list[dict], methods: list[str], multi: bool, max_val_drop: float,
                   no_selection: Exception | None) -> list[str]:
    """The tables by discovery rate (paper 1): both rules, the oracle and ToW; without validation data, every
    setting."""
    lines = []
    if no_selection is not None:
        reason = [title(str(no_selection)), ""]
        lines += [f"**No hyperparameter selection was possible.** {reason[0]}", "",
                  "The tables below therefore show every hyperparameter setting (one row each, in grid order) instead "
                  "of a chosen one: mean ± sample standard deviation [95% confidence interval] over seeds (one seed: "
                  "its value; each table says how many seeds it holds); columns are "
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
            intro = tow_intro(marked, metric) if metric in TOW_BASELINES else intro
            first_guarded = first_guarded and flag != "guarded"
            lines += _view_section(marked, methods, metric, flag, description, multi, max_val_drop, intro)
    return lines
