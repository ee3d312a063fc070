"""The backdoor field's view of a grid: every poison variant (an attack) x method, at each discovery rate.

For each attack (a poison variant: its trigger, clean-label and all-to-all options) and each method, under the
paper rule and the guarded rule: C-Acc (clean test accuracy), ASR (triggered non-target test images predicted as
the attack's label), RA (the same images on their true labels) and DER, BackdoorBench's defence effectiveness
rating, [max(0, ASR_o - ASR) - max(0, C-Acc_o - C-Acc) + 1] / 2 against the original model of the same seed
(``evaluation.defense_effectiveness``), each a mean over seeds. The figure (one panel per rate) colours RA and
writes the change of C-Acc under it. Adds nothing unless the grid holds at least one poison variant with a method cell.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..evaluation import defense_effectiveness
from ..runner.spec import ORIGINAL
from ..selection import manipulation_variant
from .figures import plot_heatmaps

FLAGS = (("selected", "paper rule", ""), ("guarded", "guarded rule", "-guarded"))
METRICS = ("c_acc", "asr", "ra")


def attack_label(record: dict) -> str:
    """A short row name: the trigger (``patch`` for the legacy keys) with its options, e.g. ``sig clean-label``."""
    variant = manipulation_variant(record) or ""
    params = json.loads(variant.split(" ", 1)[1]) if " " in variant else {}
    trigger = params.get("trigger") or {"name": "patch", **{k: params[k] for k in ("pattern",) if k in params}}
    label = trigger["name"] + (f" ({trigger['pattern']})" if isinstance(trigger.get("pattern"), str)
                               and trigger["name"] == "patch" else "")
    if params.get("target") == "all-to-all":
        label += " all-to-all"
    if params.get("clean_label"):
        label += " clean-label"
    return label


def _backdoor(record: dict) -> bool:
    return record.get("manipulation") == "poison" and "asr" in (record.get("metrics") or {})


def attack_values(records: list[dict], flag: str) -> dict:
    """(attack label, n) -> method -> rate -> metric -> values (one per seed), DER included; the original's
    values sit under rate 0.0 for every method."""
    originals = {(manipulation_variant(r), r["n"], r["seed"]): r["metrics"] for r in records
                 if r.get("method") == ORIGINAL and _backdoor(r)}
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for record in records:
        if not _backdoor(record) or record.get("method") == ORIGINAL or not record.get(flag):
            continue
        metrics, row = record["metrics"], (attack_label(record), record["n"])
        cell = values[row][record["method"]][record["rate"]]
        for name in METRICS:
            cell[name].append(metrics[name])
        before = originals.get((manipulation_variant(record), record["n"], record["seed"]))
        if before is not None:
            cell["der"].append(defense_effectiveness(before, metrics))
            cell["c_acc_change"].append(metrics["c_acc"] - before["c_acc"])
    for (variant, n, _), metrics in originals.items():
        row = (attack_label({"manipulation_variant": variant}), n)
        if row in values:
            for name in METRICS:
                values[row][ORIGINAL][0.0][name].append(metrics[name])
    return values


def _mean(values) -> float:
    return float(np.mean(values)) if values else float("nan")


def _entry(cell: dict) -> str:
    if not cell:
        return "n/a"
    text = " / ".join(f"{_mean(cell[m]):.1f}" for m in METRICS)
    return text + (f" / {_mean(cell['der']):.2f}" if cell.get("der") else "")


def attack_sections(records: list[dict], methods: list[str], fig_dir: Path) -> tuple[list[str], list[Path]]:
    """Markdown tables (one per rule and rate: attacks x methods, ``C-Acc / ASR / RA / DER``) and the figures."""
    if not any(_backdoor(r) and r.get("method") != ORIGINAL for r in records):
        return [], []
    rates = sorted({r["rate"] for r in records if _backdoor(r) and r.get("method") != ORIGINAL})
    present = {r["method"] for r in records if _backdoor(r) and r.get("method") != ORIGINAL}
    order = [m for m in methods if m in present] + sorted(present - set(methods))
    lines = ["## Attacks x methods (the backdoor field's metrics)", "",
             "Each entry is `C-Acc / ASR / RA / DER`, the mean over seeds of the chosen setting: C-Acc = clean test "
             "accuracy; ASR = triggered test images outside the target class predicted as the attack's label (the "
             "target; y + 1 mod C for all-to-all); RA = the same images on their true labels; DER = [max(0, ASR "
             "drop) - max(0, C-Acc drop) + 1] / 2 against the original of the same seed (1: attack removed at no "
             "cost, 0.5: nothing changed). The `original` column is the trained model before any method. For a "
             "clean-label attack (SIG, label-consistent) S_m's given labels are correct, so the paper rule's "
             "deletion change (disagreement with the given labels on S_f) rewards forgetting correctly labelled "
             "triggered images; the guarded rule's validation bound keeps the choice from trading clean accuracy "
             "for it.", ""]
    figures = []
    for flag, rule, suffix in FLAGS:
        values = attack_values(records, flag)
        if not values:
            continue
        rows = sorted(values)
        multi_n = len({n for _, n in rows}) > 1
        names = [f"{label} (n={n})" if multi_n else label for label, n in rows]
        columns = [ORIGINAL] + order
        panels, notes = {}, {}
        for rate in rates:
            lines += [f"### Discovery rate {100 * rate:g}%: {rule}", "",
                      "| attack | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            for row, name in zip(rows, names):
                cells = [values[row][ORIGINAL].get(0.0, {})] + [values[row][m].get(rate, {}) for m in order]
                lines.append(f"| {name} | " + " | ".join(_entry(c) for c in cells) + " |")
            lines.append("")
            panel = f"{100 * rate:g}% discovered"
            panels[panel] = np.array([[_mean(values[row][m].get(0.0 if m == ORIGINAL else rate, {}).get("ra"))
                                       for m in columns] for row in rows])
            notes[panel] = [[_annotation(values[row][m].get(0.0 if m == ORIGINAL else rate, {})) for m in columns]
                            for row in rows]
        path = fig_dir / f"attacks-ra{suffix}.png"
        title = (f"RA (triggered non-target test images, true labels) per attack and method, {rule}; "
                 f"under it the change of C-Acc against the original, in points")
        figures.append(plot_heatmaps(panels, names, columns, path, title, annotations=notes,
                                     xlabel="method"))
    return lines, figures


def _annotation(cell: dict) -> str:
    if not cell or not cell.get("ra"):
        return "n/a"
    change = cell.get("c_acc_change")
    return f"{_mean(cell['ra']):.0f}" + (f"\n{_mean(change):+.1f}" if change else "")
