"""What ``corrective fix`` writes: the corrected model (safetensors + JSON sidecar), ``record.json`` (the whole
report), ``report.md`` with PNG figures, and ``flipped.csv`` (every training sample whose prediction changed)."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..records import environment, model_weights, write_json_atomic, write_safetensors_atomic  # noqa: E402
from .core import Correction, CorrectionReport  # noqa: E402
from .output import WRITTEN_BY, check_fix_out, clear_fix, earlier_fix  # noqa: E402

DPI = 120


def write_report(result: Correction, out: str | Path, model_info: dict | None = None, *, force: bool = False,
                 inputs: dict | None = None) -> Path:
    """Write everything under ``out``; returns the path of ``report.md``. ``model_info`` (architecture, source
    file) goes into the model's sidecar so that it can be loaded back.

    ``out`` must be new, empty, or an earlier fix's folder; an earlier fix is replaced whole only when ``force``.
    A folder holding anything else, or an input's folder (``inputs``: name -> path), is refused
    (:func:`.output.check_fix_out`)."""
    out = check_fix_out(out, inputs, force)
    if out.is_dir() and earlier_fix(out) is not None:
        clear_fix(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    weights = save_model(result, out / "model.safetensors", model_info or {})
    report = result.report
    rows = report.flipped["rows"]
    _write_flips(rows, out / "flipped.csv")
    record = {"written_by": WRITTEN_BY, **report,
              "flipped": {k: v for k, v in report.flipped.items() if k != "rows"},
              "model": {**(model_info or {}), "weights": weights.name}, "environment": environment()}
    write_json_atomic(out / "record.json", record)
    figures = [_accuracy_figure(report, out / "figures" / "accuracy.png"),
               _per_class_figure(report, out / "figures" / "per-class.png")]
    if report.candidates:
        figures.append(_candidates_figure(report, out / "figures" / "candidates.png"))
    path = out / "report.md"
    path.write_text(render_markdown(report, [f.relative_to(out) for f in figures]))
    return path


def save_model(result: Correction, path: Path, model_info: dict) -> Path:
    """The corrected weights as safetensors (written then renamed) and a JSON sidecar beside them."""
    digest = write_safetensors_atomic(path, model_weights(result.model))
    r = result.report
    write_json_atomic(path.with_suffix(".json"), {
        **model_info, "written_by": WRITTEN_BY, "weights_sha256": digest, "num_classes": r.num_classes,
        "method": r.method, "hparams": r.hparams, "corrected_from": r.data, "flagged": r.flagged,
        "deletion_set": r.deletion_set})
    return path


def _write_flips(rows: list[dict], path: Path) -> None:
    columns = ["index", "given_label", "true_label", "before", "after", "in_deletion_set"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c for c in columns if not rows or c in rows[0]])
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _accuracy_rows(report: CorrectionReport) -> list[tuple[str, float | None, float | None]]:
    b, a = report.before, report.after
    rows = [("validation accuracy", b["val_acc"], a["val_acc"]),
            ("flagged samples: agreement with their given labels", b["flagged_acc_given"], a["flagged_acc_given"])]
    if "flagged_acc_true" in b:
        rows.append(("flagged samples: accuracy on their true labels", b["flagged_acc_true"], a["flagged_acc_true"]))
    if "added_acc_given" in b:
        rows.append(("added suspects: agreement with their given labels", b["added_acc_given"], a["added_acc_given"]))
    if "added_acc_true" in b:
        rows.append(("added suspects: accuracy on their true labels", b["added_acc_true"], a["added_acc_true"]))
    bench = report.benchmark
    if bench:
        names = {"test_acc": "C-Acc: test accuracy (clean images)", "utility_acc": "utility (test data outside D_m)",
                 "affected_acc": "affected test domain, clean labels (poison: triggered images)",
                 "affected_nontarget_acc": "RA: triggered test images outside the target class, clean labels",
                 "asr": "ASR: the same triggered images predicted as the attack's label",
                 "manipulated_acc": "all manipulated training samples, clean labels"}
        rows += [(label, bench["before"].get(key), bench["after"].get(key)) for key, label in names.items()
                 if key in bench["before"]]
    return rows


def before_after(report: CorrectionReport) -> str:
    """The before/after accuracies as a plain-text table (what ``corrective fix`` prints)."""
    rows = _accuracy_rows(report)
    width = max(len(r[0]) for r in rows)
    lines = [f"{report.method} {report.hparams} in {report.seconds:.1f} s", f"{'':{width}s}  before   after"]
    lines += [f"{label:{width}s}  {_pct(before)}  {_pct(after)}" for label, before, after in rows]
    lines += backdoor_notes(report)
    lines += [f"auto skipped {s['method']} (it cannot run on this model): {s['reason']}"
              for s in report.skipped_candidates or []]
    return "\n".join(lines)


def backdoor_notes(report: CorrectionReport) -> list[str]:
    """DER, and what the flagged samples' "given labels" are under a clean-label attack."""
    bench = report.benchmark or {}
    if "der" not in bench:
        return []
    lines = [f"DER (BackdoorBench's defence effectiveness rating, [max(0, ASR drop) - max(0, C-Acc drop) + 1] / 2; "
             f"0.5 = unchanged, 1 = attack removed at no accuracy cost): {bench['der']:.3f}"]
    if bench.get("clean_label"):
        lines.append("Clean-label attack: the flagged samples' given labels are their true labels, so agreement "
                     "with them falling means the model no longer ties these triggered images to their own class, "
                     "not that it learned a correct label.")
    return lines


def synthesis_lines(method: str, notes: dict) -> list[str]:
    """What trigger synthesis found and did, from its notes (nothing for another method)."""
    if method != "trigger_synthesis":
        return []
    rounds = notes["rounds"]
    lines = ["", "## The reconstructed trigger", ""]
    for number, run in enumerate(rounds, 1):
        prefix = f"Round {number}: " if len(rounds) > 1 else ""
        chosen = run["chosen"]
        sizes = "; ".join(", ".join(f"{k} {v}" for k, v in run["forms"][f].items()
                                    if k in ("mask_pixels", "mask_fraction", "mean_abs_change", "warp_pixels"))
                          for f in chosen)
        lines.append(f"- {prefix}target {run['target']} (flagged samples' {run['source_classes']} as the source); "
                     f"form {' + '.join(chosen)} ({sizes}), chosen by attack success x similarity of the embedding "
                     f"shift to the flagged samples': " + ", ".join(
                         f"{f} {v['attack_success']:.3f} x {v['similarity']:.3f}" for f, v in run["forms"].items()))
        lines.append("- attack success of the reconstruction on clean validation images: "
                     + ", ".join(f"{f} {run['forms'][f]['attack_success']:.3f} before, {after:.3f} after"
                                 for f, after in run["attack_success_after"].items()))
        if "suspects" in run:
            lines.append(f"- left out of the fine-tuning as carrying the trigger: {run['suspects']['k']} training "
                         f"samples ({run['suspects']['reason']})")
        lines.append(f"- fine-tuning: {run['steps']} steps on {run['retain']} samples, validation accuracy at each "
                     f"check {run['val_acc']}" + ("; stopped by the validation guard" if run["guard_stopped"]
                                                  else ""))
    if "then" in notes:
        lines.append(f"- then {notes['then']['method']} {_short(notes['then']['hparams'])}")
    return lines


def _pct(value) -> str:
    return "   n/a" if value is None else f"{value:6.1f}"


def render_markdown(report: CorrectionReport, figures: list) -> str:
    lines = [f"# Correction report: {report.method}", ""]
    requested = report.requested_method
    lines.append(f"- method: **{report.method}** {report.hparams}"
                 + (" (chosen by `auto`, see below)" if requested == "auto" else ""))
    lines.append(f"- data: {report.data}; {report.num_classes} classes")
    lines.append(f"- flagged samples: {report.flagged}; deletion set unlearned: {report.deletion_set}")
    if report.suspects:
        s = report.suspects
        known = (f", of which {s['manipulated_among_added']} really were manipulated"
                 if "manipulated_among_added" in s else "")
        lines.append(f"- expansion: {s['added']} suspects added by the `{s['ranking']}` ranking{known} (ranked in "
                     f"{s['seconds']:.1f} s, not counted in the time below)")
        if s.get("auto"):
            lines.append(f"- expansion size chosen by `auto`: {s['auto']['reason']}")
    lines.append(f"- validation: {report.validation['size']} samples, {report.validation['source']}")
    lines.append(f"- time: {report.seconds:.1f} s" + (" (every candidate of auto)" if requested == "auto" else ""))
    lines += ["", "## Before and after", "", "| | before | after | change |", "|---|---|---|---|"]
    for label, before, after in _accuracy_rows(report):
        change = None if before is None or after is None else after - before
        lines.append(f"| {label} | {_fmt(before)} | {_fmt(after)} | {'' if change is None else f'{change:+.1f}'} |")
    notes = backdoor_notes(report)
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    lines += synthesis_lines(report.method, report.method_notes)
    flips = report.flipped
    lines += ["", f"Predictions changed on {flips['training_samples']} training samples: {flips['in_deletion_set']} in "
              f"the deletion set, {flips['outside']} outside it (every one in `flipped.csv`).", ""]
    lines += ["## Per-class validation accuracy", "", "| class | before | after | change |", "|---|---|---|---|"]
    for c, (before, after) in enumerate(zip(report.before["per_class_val_acc"],
                                            report.after["per_class_val_acc"])):
        change = "" if before is None or after is None else f"{after - before:+.1f}"
        lines.append(f"| {c} | {_fmt(before)} | {_fmt(after)} | {change} |")
    if report.candidates:
        lines += ["", "## How auto chose", "",
                  f"Every candidate was scored by the paper's rule, the mean of the deletion change on the deletion "
                  f"set and the validation accuracy, among the candidates whose validation accuracy is at most "
                  f"{report.max_val_drop:g} points below the original's "
                  f"({report.original_scores['val_acc']:.1f}); no test data is read.", "",
                  "| method | hyperparameters | validation acc | deletion change | score | within the drop | seconds |"
                  " chosen | a candidate because it wins on |", "|---|---|---|---|---|---|---|---|---|"]
        for row in report.candidates:
            if row["status"] != "ok":
                lines.append(f"| {row['method']} | {row['hparams']} | failed: {row['error'][:80]} | | | | | | |")
                continue
            m = row["metrics"]
            lines.append(f"| {row['method']} | {_short(row['hparams'])} | {_fmt(m['val_acc'])} | "
                         f"{_fmt(m['deletion_change'])} | {_fmt(row['score'])} | "
                         f"{'yes' if row['guard'] == 'within' and _within(report, m) else 'no'} | "
                         f"{_seconds(row)} | {'**yes**' if row['chosen'] else ''} | {row.get('why', '')} |")
        lines += ["", why_chosen(report)]
        if report.skipped_candidates:
            lines.append("")
        for skipped in report.skipped_candidates or []:
            lines.append(f"- Skipped: **{skipped['method']}** ({skipped['settings']} setting(s)), it cannot run on "
                         f"this model: {skipped['reason']}")
    lines += ["", "## Figures", ""] + [f"![{f.stem}]({f.as_posix()})" for f in figures]
    return "\n".join(lines) + "\n"


def why_chosen(report: CorrectionReport) -> str:
    """One sentence: the pick, its score, its lead over the runner-up within the drop, and who fell outside."""
    ok = [r for r in report.candidates if r["status"] == "ok"]
    chosen = next(r for r in ok if r.get("chosen"))
    within = [r for r in ok if r["guard"] == "within" and _within(report, r["metrics"])]
    outside = sorted({r["method"] for r in ok if r not in within})
    if chosen not in within:
        return (f"No candidate kept validation accuracy within {report.max_val_drop:g} points, so auto took "
                f"{chosen['method']}, the one that kept the most ({_fmt(chosen['metrics']['val_acc'])}).")
    others = sorted((r for r in within if r is not chosen), key=lambda r: -r["score"])
    text = f"Chosen: {chosen['method']} {_short(chosen['hparams'])}, score {_fmt(chosen['score'])}"
    if others:
        text += (f", {chosen['score'] - others[0]['score']:.1f} points ahead of {others[0]['method']} "
                 f"({_fmt(others[0]['score'])})")
    text += " among the candidates within the drop"
    if outside:
        text += f"; outside it (lost more validation accuracy): {', '.join(outside)}"
    return text + "."


def _seconds(row: dict) -> str:
    """A candidate's time; work shared within a method (SSD's importances) is paid by the first setting."""
    text = f"{row['seconds']:.1f}"
    if row.get("shared_seconds"):
        text += f" (incl. {row['shared_seconds']:.1f} shared)"
    elif row.get("shared_reused"):
        text += " (reuses shared work)"
    return text


def _within(report: CorrectionReport, metrics: dict) -> bool:
    return metrics["val_acc"] >= report.original_scores["val_acc"] - report.max_val_drop - 1e-9


def _short(hparams: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in hparams.items() if v is not None)


def _accuracy_figure(report: CorrectionReport, path: Path) -> Path:
    rows = [r for r in _accuracy_rows(report) if r[1] is not None and r[2] is not None]
    fig, ax = plt.subplots(figsize=(9.5, 0.55 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r[1] for r in rows], height=0.4, label="before", color="tab:gray")
    ax.barh(y + 0.2, [r[2] for r in rows], height=0.4, label="after", color="tab:blue")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(f"before and after {report.method}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _per_class_figure(report: CorrectionReport, path: Path) -> Path:
    before = [np.nan if v is None else v for v in report.before["per_class_val_acc"]]
    after = [np.nan if v is None else v for v in report.after["per_class_val_acc"]]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(before) + 1.5), 3))
    x = np.arange(len(before))
    ax.bar(x - 0.2, before, width=0.4, label="before", color="tab:gray")
    ax.bar(x + 0.2, after, width=0.4, label="after", color="tab:blue")
    ax.set_xticks(x, [str(c) for c in x], fontsize=8 if len(x) <= 20 else 5)
    ax.set_xlabel("class")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("per-class validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _candidates_figure(report: CorrectionReport, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ok = [r for r in report.candidates if r["status"] == "ok"]
    for name in dict.fromkeys(r["method"] for r in ok):
        rows = [r for r in ok if r["method"] == name]
        ax.scatter([r["metrics"]["deletion_change"] for r in rows], [r["metrics"]["val_acc"] for r in rows],
                   label=name, s=30)
    chosen = next(r for r in ok if r["chosen"])
    ax.scatter([chosen["metrics"]["deletion_change"]], [chosen["metrics"]["val_acc"]], s=160, facecolors="none",
               edgecolors="black", label="chosen")
    original = report.original_scores
    ax.scatter([original["deletion_change"]], [original["val_acc"]], marker="x", color="black", label="original")
    ax.axhline(original["val_acc"] - report.max_val_drop, color="black", linestyle=":", linewidth=1,
               label=f"{report.max_val_drop:g} points below the original")
    ax.set_xlabel("deletion change on the deletion set (%)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("auto: every candidate (no test data)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
