"""The summary's method notes (what the methods report about their own runs) and failed cells."""
from __future__ import annotations

import json
from collections import Counter


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


def notes_section(marked: list[dict], methods: list[str]) -> list[str]:
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


def failed_section(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    lines = [f"## Failed cells ({len(failed)})", "", "Re-running the grid retries them.", ""]
    for record in failed:
        error = (record.get("error") or "no error recorded").strip().splitlines()[0]
        lines.append(f"- `{record.get('cell')}`: {error}")
    return lines + [""]
