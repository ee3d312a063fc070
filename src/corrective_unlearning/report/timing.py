"""Table 3's analogue: what a method costs, one complete run (its own work plus the shared work it used, priced at
what the cell that computed it measured) and amortised over the grid's cells."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..runner.spec import ORIGINAL
from .views import finite


def shared_seconds(timings: dict) -> float | None:
    """Seconds of shared work the cell computed (included in its method_seconds); None: not known (a record from
    before shared work was measured; records.upgrade derives it where the record says what it paid)."""
    return finite(timings.get("shared_seconds"))


def shared_prices(records: list[dict]) -> dict[tuple, float]:
    """(deletion set, shared-work key) -> the seconds the cell that computed it measured (mean, should a resumed
    grid have computed it twice)."""
    prices = defaultdict(list)
    for record in records:
        for key, seconds in ((record.get("timings") or {}).get("shared_paid") or {}).items():
            if finite(seconds) is not None:
                prices[(deletion_set_key(record), key)].append(float(seconds))
    return {key: float(np.mean(seconds)) for key, seconds in prices.items()}


def deletion_set_key(record: dict) -> tuple:
    """The deletion set of an (upgraded) record: its setting, seed, rate, forget set and expansion."""
    return (record.get("dataset"), record.get("model"), record["manipulation_variant"], record["n"], record["seed"],
            record["rate"], record["forget_set"], record["expand"])


def complete_run(record: dict, prices: dict[tuple, float]) -> tuple[float, float] | None:
    """(seconds of one complete run of this cell's method and setting, the shared work in it): its own work
    (method_seconds - shared_seconds) plus, for every shared key it used (paid or reused), what the cell of the
    same deletion set that computed it measured. None when its time, or the price of a key it reused, is
    unknown."""
    timings = record.get("timings") or {}
    seconds = finite(timings.get("method_seconds"))
    if seconds is None:
        return None
    paid = timings.get("shared_paid") or {}
    shared = 0.0
    for key in dict.fromkeys([*paid, *(timings.get("shared_reused") or [])]):
        price = finite(paid.get(key))
        if price is None:
            price = prices.get((deletion_set_key(record), key))
        if price is None:
            return None
        shared += price
    return seconds - (shared_seconds(timings) or 0.0) + shared, shared


def time_section(marked: list[dict], methods: list[str], records: list[dict]) -> list[str]:
    prices = shared_prices(records)
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
                 if finite((r.get("timings") or {}).get("method_seconds")) is not None]
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
