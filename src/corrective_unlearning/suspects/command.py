"""``corrective suspects``: the ranking as its own command, with the data forms ``corrective fix`` takes.

Writes into ``--out``: ``suspects.csv`` (every unflagged candidate, most suspect first: rank, index, the chosen
ranking's score, every computed ranking's score, and whether it is among the top ``K``), ``report.md`` (the
self-checks, the weights, the ``K`` chosen and why) and ``figures/suspects-histogram.png`` (the score histograms of
the flagged samples, scored leave-one-out, and of the candidates, with the cut). A folder holding an earlier
``suspects`` output is replaced only with ``--force``; one holding anything else is never written into.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

OWN = ("suspects.csv", "report.md", "suspects.json", "figures/suspects-histogram.png",
       "files.csv")  # files.csv: an image folder's file list, the order of the indices


def check_out(out: str | Path, force: bool, inputs: dict | None = None) -> Path:
    """``out`` may be written: new, empty, or an earlier suspects output (then only with ``force``)."""
    if str(out).strip() == "":
        raise ValueError(f"--out: expected a folder, got {str(out)!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder (new, empty, or an earlier suspects output)")
    for option, path in (inputs or {}).items():
        if path is not None and Path(path).exists() and Path(path).resolve() == out.resolve():
            raise ValueError(f"--out {out} is the folder of {option}: choose another folder")
    if out.is_dir():
        present = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        foreign = [p for p in present if p not in OWN]
        if foreign:
            raise ValueError(f"--out {out} holds files suspects did not write ({', '.join(foreign[:5])}): they are "
                             f"never replaced, even with --force; choose a new or empty folder")
        if present and not force:
            raise ValueError(f"--out {out} holds an earlier suspects output; pass --force to replace it, or choose "
                             f"another folder")
    return out


def histogram(path: Path, candidate_scores: np.ndarray, flagged_scores: np.ndarray, cut: float | None,
              ranking: str, k: int) -> None:

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    both = np.concatenate([candidate_scores, flagged_scores])
    bins = np.linspace(float(both.min()), float(both.max()), 60) if both.max() > both.min() else 10
    ax.hist(candidate_scores, bins=bins, density=True, alpha=0.6, label=f"unflagged ({len(candidate_scores)})")
    ax.hist(flagged_scores, bins=bins, density=True, alpha=0.6, label=f"flagged, leave-one-out ({len(flagged_scores)})")
    if cut is not None:
        ax.axvline(cut, color="k", linestyle="--", label=f"cut: top {k}")
    ax.set_yscale("log")
    ax.set_xlabel(f"{ranking} score (higher = more suspect)")
    ax.set_ylabel("density (log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(found, out: Path, k, auto: dict | None, description: dict, manipulated=None) -> Path:
    """Write the CSV, the JSON summary, the report and the figure of ranked suspects ``found`` (every candidate)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OWN:
        if (out / name).exists():
            (out / name).unlink()
    chosen = auto["k"] if auto is not None else (len(found) if k is None else min(int(k), len(found)))
    names = list(found.per_ranking)
    with open(out / "suspects.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "index", f"score_{found.ranking}", *[f"score_{n}" for n in names if n != found.ranking],
                    "selected"])
        columns = [found.per_ranking[n].tolist() for n in names if n != found.ranking]
        for r, (i, s) in enumerate(zip(found.indices.tolist(), found.scores.tolist())):
            w.writerow([r + 1, i, f"{s:.6g}", *[f"{c[r]:.6g}" for c in columns], int(r < chosen)])
    cut = float(found.scores[chosen - 1]) if chosen else None
    histogram(out / "figures" / "suspects-histogram.png", found.scores.numpy(), found.flagged_scores.numpy(), cut,
              found.ranking, chosen)
    summary = {**description, "ranking": found.ranking, "candidates": found.candidates, "k": chosen,
               "k_requested": k if k is not None else "all", "auto": auto, "self_check": found.self_check,
               "weights": found.weights, "notes": found.notes, "seconds": found.seconds}
    if manipulated is not None:
        summary["against_truth"] = found.top(chosen).precision_recall(manipulated, found.flagged_indices)
    (out / "suspects.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = ["# Suspects", "", f"- model: {description.get('model')} ({description.get('arch')}); data: "
             f"{description.get('data')}", f"- flagged samples: {len(found.flagged_scores)}; unflagged candidates "
             f"ranked: {found.candidates}; ranking: `{found.ranking}` ({found.seconds:.1f} s)",
             f"- selected: the top **{chosen}**" + (f" (k auto: {auto['reason']})" if auto is not None else
                                                   f" (k {k if k is not None else 'all'})"), "",
             "## Self-checks", "",
             "AUC of the flagged samples' scores (each scored leave-one-out) against the unflagged ones: 1.0 when the "
             "known bad samples all rank above every unflagged one, 0.5 when the ranking cannot tell them apart.", "",
             "| ranking | self-check | weight in combined |", "|---|---:|---:|"]
    for n in names:
        w = found.weights.get(n)
        lines.append(f"| {n} | {found.self_check[n]:.3f} | {'' if w is None else f'{w:.3f}'} |")
    if "against_truth" in summary:
        t = summary["against_truth"]
        lines += ["", f"Against the true manipulated set (known here): {t['found']} of the {t['k']} selected are "
                      f"manipulated (precision {t['precision']:.3f}, recall {t['recall']:.3f} of {t['undiscovered']})."]
    lines += ["", "## Scores", "", "![score histograms](figures/suspects-histogram.png)", "",
              "Files: `suspects.csv` (every candidate, most suspect first; `selected` = 1 for the top K), "
              "`suspects.json` (this summary)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
