"""Healing what nothing healed: every attack x discovery rate x method variant, and whether the goal is met.

Reads one or more grid run folders (``corrective run configs/heal/fashion-mnist.yaml --out results/heal``) and
prints, per discovery rate, the attack x variant table of ``C-Acc / ASR / RA / DER`` (each the mean over the
runs' seeds). A *variant* is a method with
one setting of the options that change what it does (trigger synthesis alone or followed by REM, each with or
without expansion); a variant with several settings (a learning-rate grid) is reduced to the guarded rule's pick
on validation data. Two reference columns follow:

- ``best existing``: the corrective method of the run other than trigger synthesis with the highest DER. Chosen by
  DER, a test metric: a comparison of methods, never a selection a user could make.
- ``ours (guarded)``: the guarded rule's pick among every trigger-synthesis variant, on validation data only:
  what a user running the benchmark's settings would get.

Then the goal at one rate (default 10%) per attack, for ``ours (guarded)``: ASR at most 2%, RA at least 95% of the
original's clean accuracy, clean accuracy lost at most 1 point; where missed, by how much. The clean model's RA
(its accuracy on the same triggered images, ``benchmarks/attack_originals.py``) bounds what any method can reach:
a trigger that erases the image leaves nothing to classify.

    python benchmarks/heal.py results/heal [results/heal-10] [--rate 0.1] [--doc docs/heal-fashion-mnist.md]

``--doc`` writes the tables between the markers ``<!-- heal:tables -->`` and ``<!-- /heal:tables -->`` (``--marker
heal:seed1``: between ``<!-- heal:seed1 -->`` and ``<!-- /heal:seed1 -->``).
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from corrective_unlearning.evaluation import defense_effectiveness
from corrective_unlearning.report.attacks import attack_label
from corrective_unlearning.report.loading import load_run
from corrective_unlearning.report.tables import markdown_table
from corrective_unlearning.selection import manipulation_variant, mark_selection

OURS = "trigger_synthesis"
ORIGINAL = "original"
GOAL = {"asr": 2.0, "ra_share": 0.95, "c_acc_loss": 1.0}


def variant(record: dict) -> str:
    """``trigger_synthesis then rem +auto suspects``: the method, its follow-up, its expansion."""
    method = record.get("base_method") or record["method"]
    then = (record.get("hparams") or {}).get("then") if method == OURS else None
    expand = record.get("expand") or 0
    return method + (f" then {then}" if then else "") + (f" +{expand} suspects" if expand else "")


def picks(records: list[dict], label) -> dict:
    """(attack, n, rate, seed) -> label -> the guarded rule's pick among the records ``label`` maps to the same
    name (records it maps to None are left out); the original under (attack, n, 0.0, seed)."""
    relabelled = []
    for record in records:
        name = ORIGINAL if record["method"] == ORIGINAL else label(record)
        if name is not None:
            relabelled.append({**record, "method": name, "expand": 0})
    chosen = defaultdict(dict)
    for record in mark_selection(relabelled):
        if record.get("guarded") and "asr" in record["metrics"]:
            key = (attack_label(record), record["n"], record["rate"], record["seed"])
            chosen[key][record["method"]] = record
    return chosen


def cell(record: dict, original: dict) -> dict:
    m = record["metrics"]
    return {"c_acc": m["c_acc"], "asr": m["asr"], "ra": m["ra"],
            "der": defense_effectiveness(original["metrics"], m)}


def mean(values: list[dict]) -> dict:
    """The mean over seeds of each metric of ``values`` (one dict per seed)."""
    return {key: sum(v[key] for v in values) / len(values) for key in values[0]}


def entry(values: dict | None, der: bool = True) -> str:
    if values is None:
        return "n/a"
    text = f"{values['c_acc']:.1f} / {values['asr']:.1f} / {values['ra']:.1f}"
    return text + (f" / {values['der']:.2f}" if der else "")


def tables(records: list[dict], rates: list[float]) -> tuple[list[str], dict]:
    """The markdown tables per rate and the cells: (attack, n, rate) -> column -> the mean over seeds (rate 0.0:
    the originals under ``original``)."""
    originals = {(attack_label(r), r["n"], r["seed"]): r for r in records if r["method"] == ORIGINAL}
    by_variant = picks(records, variant)
    ours = picks(records, lambda r: "ours" if (r.get("base_method") or r["method"]) == OURS else None)
    variants = sorted({v for row in by_variant.values() for v in row if v != ORIGINAL},
                      key=lambda v: (not v.startswith(OURS), v))
    seeds: dict = defaultdict(lambda: defaultdict(list))  # (attack, n, rate) -> column -> one dict per seed
    for (attack, n, seed), original in originals.items():
        seeds[(attack, n, 0.0)][ORIGINAL].append({k: original["metrics"][k] for k in ("c_acc", "asr", "ra")})
    for (attack, n, rate, seed), row in by_variant.items():
        original = originals.get((attack, n, seed))
        if original is None or rate == 0.0:
            continue
        for name, record in row.items():
            seeds[(attack, n, rate)][name].append(cell(record, original))
        if "ours" in ours.get((attack, n, rate, seed), {}):
            seeds[(attack, n, rate)]["ours (guarded)"].append(cell(ours[(attack, n, rate, seed)]["ours"], original))
    cells = {key: {name: mean(values) for name, values in columns.items()} for key, columns in seeds.items()}
    for key, row in cells.items():
        existing = [(v, c) for v, c in row.items() if not v.startswith(OURS) and v not in ("ours (guarded)", ORIGINAL)]
        if existing and key[2] != 0.0:
            name, best = max(existing, key=lambda item: item[1]["der"])
            row["best existing"] = {**best, "name": name}
    lines = []
    attacks = sorted({(a, n) for a, n, _ in cells})
    for rate in rates:
        header = ["attack", "original", *variants, "best existing", "ours (guarded)"]
        rows = []
        for attack, n in attacks:
            row = cells.get((attack, n, rate))
            if not row:
                continue
            best = row.get("best existing")
            rows.append([f"{attack} (n={n})", entry(cells.get((attack, n, 0.0), {}).get(ORIGINAL), der=False),
                         *[entry(row.get(v)) for v in variants],
                         entry(best) + (f" [{best['name']}]" if best else ""), entry(row.get("ours (guarded)"))])
        if rows:
            lines += [f"### Discovery rate {rate:.0%}", "", markdown_table(header, rows), ""]
    return lines, cells


def goal_lines(cells: dict, rate: float) -> list[str]:
    """Per attack, whether ``ours (guarded)`` (mean over seeds) meets the goal at ``rate`` against the originals'
    mean C-Acc, and by how much it misses."""
    rows = []
    for (attack, n, at), row in sorted(cells.items()):
        ours = row.get("ours (guarded)")
        original = cells.get((attack, n, 0.0), {}).get(ORIGINAL)
        if at != rate or ours is None or original is None:
            continue
        c_acc = original["c_acc"]
        misses = []
        if ours["asr"] > GOAL["asr"]:
            misses.append(f"ASR {ours['asr'] - GOAL['asr']:.1f} points above 2%")
        if ours["ra"] < GOAL["ra_share"] * c_acc:
            misses.append(f"RA {GOAL['ra_share'] * c_acc - ours['ra']:.1f} points below 95% of C-Acc "
                          f"({GOAL['ra_share'] * c_acc:.1f})")
        if c_acc - ours["c_acc"] > GOAL["c_acc_loss"]:
            misses.append(f"C-Acc lost {c_acc - ours['c_acc']:.1f} points")
        rows.append([f"{attack} (n={n})", f"{c_acc:.1f}", entry(ours), "**yes**" if not misses else "no",
                     "; ".join(misses)])
    if not rows:
        return []
    met = sum(row[3] == "**yes**" for row in rows)
    return [f"### The goal at {rate:.0%} discovery: {met} of {len(rows)} attacks", "",
            "ASR <= 2%, RA >= 95% of the original's C-Acc, C-Acc lost <= 1 point; `ours (guarded)`, picked on "
            "validation data only.", "",
            markdown_table(["attack", "original C-Acc", "ours (C-Acc / ASR / RA / DER)", "goal met", "missed by"],
                           rows), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="grid run folders (corrective run --out ...)")
    parser.add_argument("--rate", type=float, default=0.1, help="the discovery rate the goal is judged at")
    parser.add_argument("--doc", default="", help="a markdown file whose markers receive the tables")
    parser.add_argument("--marker", default="heal:tables", help="the markers' name in --doc")
    args = parser.parse_args()
    records = [dict(r) for run in args.runs for r in load_run(Path(run))]
    seen, unique = set(), []
    for record in records:  # an original appears in every run folder of the same setting
        key = (manipulation_variant(record), record["n"], record["rate"], record["seed"], record["method"],
               str(record.get("hparams")), str(record.get("expand")))
        if key not in seen:
            seen.add(key)
            unique.append(record)
    rates = sorted({r["rate"] for r in unique if r["method"] != ORIGINAL})
    lines, cells = tables(unique, rates)
    text = "\n".join(lines + goal_lines(cells, args.rate))
    print(text)
    if args.doc:
        path = Path(args.doc)
        doc = path.read_text()
        opening, closing = f"<!-- {args.marker} -->", f"<!-- /{args.marker} -->"
        start, end = doc.index(opening) + len(opening), doc.index(closing)
        path.write_text(doc[:start] + "\n\n" + text + "\n" + doc[end:])


if __name__ == "__main__":
    main()
