"""Plain-text and Markdown tables."""
from __future__ import annotations

import math

LABELS = {
    "test_acc": "clean test accuracy (C-Acc)",
    "utility_acc": "utility: test accuracy outside D_m",
    "affected_acc": "affected test domain D_m (clean labels)",
    "affected_nontarget_acc": "  same, target class excluded (RA)",
    "asr": "attack success (ASR): triggered, non-target -> attack's label",
    "manipulated_acc": "manipulated training samples S_m (clean labels)",
    "forget_acc": "deletion set S_f (clean labels)",
    "undiscovered_acc": "undiscovered S_m \\ S_f (clean labels)",
    "deletion_change": "deletion change on S_f",
    "val_acc": "validation accuracy",
}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:6.2f}"


def format_metrics(metrics: dict, setting=None, title: str = "") -> str:
    """The headline metrics, then per-class accuracy (so an interclass confusion is visible)."""
    rows = [(LABELS[k], metrics[k]) for k in LABELS if k in metrics]
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * max(len(title), width + 10)] if title else []
    lines += [f"{label:<{width}}  {_fmt(value)} %" for label, value in rows]
    per_class = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("class_acc/")}
    if per_class:
        lines.append("per-class clean test accuracy: " + ", ".join(f"{c} {v:.1f}" for c, v in per_class.items()))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table with right-aligned, padded columns; floats with three decimals."""
    cells = [header] + [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])
