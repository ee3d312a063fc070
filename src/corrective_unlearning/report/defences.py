"""Defences beside corrective unlearning: for each attack (a poison variant), the clean-data defences (methods that
train on the clean reserve and read no flagged sample; their 0% discovery cells), the combined variants (reserve
and flagged samples), and the best corrective method at each discovery rate, all under the guarded rule, with the
clean samples and seconds each used. Adds nothing unless the grid holds a defence's cell on a poison variant."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..evaluation import defense_effectiveness
from ..methods import needs_flagged, reads_reserve
from ..runner.spec import ORIGINAL
from ..selection import manipulation_variant
from .attacks import attack_label
from .timing import complete_run, shared_prices

FLAG = "guarded"


def _backdoor(record: dict) -> bool:
    return record.get("manipulation") == "poison" and "asr" in (record.get("metrics") or {})


def _base(method: str) -> str:
    return method.split(" +")[0]  # "eu +300 suspects" (an expanded deletion set shown as a method) -> "eu"


def kind(method: str) -> str:
    """``defence`` (reserve, no flagged sample), ``combined`` (reserve and flagged samples) or ``corrective``."""
    base = _base(method)
    if reads_reserve(base):
        return "combined" if needs_flagged(base) else "defence"
    return "corrective"


def defence_values(records: list[dict]) -> dict:
    """(attack label, n) -> (method, rate) -> {c_acc, asr, ra, der, clean_samples, seconds: [per seed]} of the
    guarded picks; the original under (original, 0.0)."""
    originals = {(manipulation_variant(r), r["n"], r["seed"]): r["metrics"] for r in records
                 if r.get("method") == ORIGINAL and _backdoor(r)}
    prices = shared_prices(records)  # the shared work of each deletion set, at what its payer measured
    values = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in records:
        if not _backdoor(record) or not record.get(FLAG):
            continue
        row = (attack_label(record), record["n"])
        metrics = record["metrics"]
        cell = values[row][(record["method"], float(record.get("rate") or 0.0))]
        for name in ("c_acc", "asr", "ra"):
            cell[name].append(metrics[name])
        if record.get("method") != ORIGINAL:
            before = originals.get((manipulation_variant(record), record["n"], record["seed"]))
            if before is not None:
                cell["der"].append(defense_effectiveness(before, metrics))
            # what one complete run costs (report.timing): its own work plus the shared work it used, paid or
            # reused from an earlier cell of its deletion set
            run = complete_run(record, prices)
            cell["seconds"].append(run[0] if run is not None else float("nan"))
            cell["clean_samples"].append(record.get("clean_samples") or 0)
            cell["fallback"].append(record.get("guard") == "fallback")  # no setting within the guard's drop
    return values


def _mean(values) -> float:
    return float(np.mean(values)) if values else float("nan")


def _entry(cell: dict | None) -> str:
    if not cell:
        return "n/a"
    text = " / ".join(f"{_mean(cell[m]):.1f}" for m in ("c_acc", "asr", "ra"))
    text += f" / {_mean(cell['der']):.2f}" if cell.get("der") else ""
    return text + (" (outside the guard)" if any(cell.get("fallback") or []) else "")


def defence_sections(records: list[dict]) -> list[str]:
    """Markdown: one table per discovery rate (attacks x [original, each defence, each combined variant, the best
    corrective method]); then each method's clean samples and seconds, and where a defence beats every corrective
    method (a higher DER than each corrective method's guarded pick at that rate)."""
    values = defence_values(records)
    present = {key for row in values.values() for key in row}
    defences = sorted({m for m, r in present if m != ORIGINAL and kind(m) == "defence"})
    if not defences:
        return []
    combined = sorted({m for m, r in present if m != ORIGINAL and kind(m) == "combined"})
    rates = sorted({r for m, r in present if m != ORIGINAL and kind(m) != "defence"})
    rows = sorted(values)
    multi_n = len({n for _, n in rows}) > 1
    names = {row: f"{row[0]} (n={row[1]})" if multi_n else row[0] for row in rows}
    lines = ["## Defences beside corrective unlearning", "",
             "Each entry is `C-Acc / ASR / RA / DER` of the guarded rule's pick (mean over seeds). Defences train on "
             "the clean reserve (part of the validation split; selection used only the rest) and read no flagged "
             "sample: they run once, at 0% discovery. `best corrective` is, per attack, the corrective method with "
             "the highest DER at that discovery rate (its name in brackets); combined variants run a corrective "
             "method, then fine-tune on the reserve. The best corrective method is chosen among picks within the "
             "guard (validation accuracy at most the guard's drop below the original's); `(outside the guard)` marks "
             "a pick that is not (a method with one setting, or none within): its C-Acc loss is the price.", ""]
    wins = []
    for rate in rates or [None]:
        title = f"### Discovery rate {100 * rate:g}% (defences: 0%)" if rate is not None else "### Defences (0%)"
        columns = ["original"] + defences + combined + (["best corrective"] if rate is not None else [])
        lines += [title, "", "| attack | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for row in rows:
            cells = [values[row].get((ORIGINAL, 0.0))] + [values[row].get((m, 0.0)) for m in defences]
            cells += [values[row].get((m, rate)) for m in combined]
            entries = [_entry(c) for c in cells]
            if rate is not None:
                corrective = {m: c for (m, r), c in values[row].items() if r == rate and m != ORIGINAL
                              and kind(m) == "corrective" and c.get("der")}
                within = {m: c for m, c in corrective.items() if not any(c["fallback"])}
                corrective = within or corrective  # a pick outside the guard's drop only where none is within
                if corrective:
                    best = max(corrective, key=lambda m: _mean(corrective[m]["der"]))
                    entries.append(f"{_entry(corrective[best])} [{best}]")
                    top = _mean(corrective[best]["der"])
                    beating = [m for m in defences if values[row].get((m, 0.0), {}).get("der")
                               and round(_mean(values[row][(m, 0.0)]["der"]), 2) > round(top, 2)]  # as shown
                    if beating:
                        wins.append(f"- {names[row]}, {100 * rate:g}% discovery: " + ", ".join(
                            f"{m} (DER {_mean(values[row][(m, 0.0)]['der']):.2f})" for m in beating)
                            + f" > every corrective method (best: {best}, DER {top:.2f})")
                else:
                    entries.append("n/a")
            lines.append(f"| {names[row]} | " + " | ".join(entries) + " |")
        lines.append("")
    lines += ["### Clean samples and seconds (mean over attacks and seeds of the guarded picks)", "",
              "| method | discovery | clean samples | seconds |", "|---|---:|---:|---:|"]
    per_method = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for (m, r), cell in values[row].items():
            if m != ORIGINAL:
                per_method[(m, r)]["clean_samples"] += cell["clean_samples"]
                per_method[(m, r)]["seconds"] += cell["seconds"]
    order = sorted(per_method, key=lambda k: ({"defence": 0, "combined": 1, "corrective": 2}[kind(k[0])], k[1], k[0]))
    for m, r in order:
        cell = per_method[(m, r)]
        lines.append(f"| {m} | {100 * r:g}% | {_mean(cell['clean_samples']):.0f} | {_mean(cell['seconds']):.1f} |")
    lines += _combined_lines(records, values, rows, names, combined, rates)
    lines += ["", "Where a defence beats every corrective method (higher DER):", ""]
    lines += wins or ["- nowhere: at every attack and rate some corrective method's DER is at least each defence's"]
    return lines + [""]


def _combined_lines(records, values, rows, names, combined, rates) -> list[str]:
    """Each combined variant against its two parts: the corrective method it starts with (same rate) and FT on the
    reserve alone (0%), by DER; the combination beats both where its DER is higher than each (as shown)."""
    firsts = {}
    for record in records:
        if record.get("method") in combined and record.get(FLAG):
            firsts[record["method"]] = (record.get("hparams") or {}).get("first", "rem")
    if not firsts:
        return []
    lines = ["", "### Combined variants against their parts (DER)", "",
             "| attack | discovery | combined | its corrective method | ft_clean alone | beats both |",
             "|---|---:|---|---|---|---|"]
    for row in rows:
        for method, first in sorted(firsts.items()):
            for rate in rates:
                both = (values[row].get((method, rate)), values[row].get((first, rate)),
                        values[row].get(("ft_clean", 0.0)))
                if not both[0] or not both[0].get("der"):
                    continue
                ders = [round(_mean(c["der"]), 2) if c and c.get("der") else None for c in both]
                wins = all(d is not None and ders[0] > d for d in ders[1:])
                shown = [f"{d:.2f}" if d is not None else "n/a" for d in ders]
                lines.append(f"| {names[row]} | {100 * rate:g}% | {method} ({first}): {shown[0]} | {first}: "
                             f"{shown[1]} | {shown[2]} | {'yes' if wins else 'no'} |")
    return lines
