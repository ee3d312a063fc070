"""``method="auto"``: run the candidates the benchmark found strongest, each over its search space, and pick one by
the guarded non-peeking rule on the user's validation data (:mod:`..selection`).

Why these candidates (each registration's ``AutoCandidate.why``, from the maps: docs/heal-fashion-mnist.md,
docs/attacks-fashion-mnist.md and the paper-1 tables): trigger synthesis heals the backdoors of the attack map at
10% discovery, where REM heals poison with a patch, BPP or the label-consistent trigger; NPO is the cheap removal
REM builds on; CF (fine-tuning on the retain set) edged ahead on interclass and random labels. SSD (three alphas)
and REM's other two learning rates left the list: in the attack map's guarded tables SSD never beats the best of
these, and together they cost about as much as the rest, which kept ``auto`` over 2 minutes on the Fashion-MNIST
CPU recipe. Every candidate is scored by the paper's rule (mean of deletion change on S_f and
validation accuracy) among those whose validation accuracy is within ``max_val_drop`` points of the original's,
so a collapsed model that flips every flagged sample is never chosen.
"""
from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from ..capacity import UnsupportedModelError
from ..methods import METHODS, Task, expand_settings
from ..progress import progress_bar
from ..runtime import Stopwatch
from ..selection import DEFAULT_MAX_VAL_DROP, mark_selection
from ..training import DivergenceError

# name -> search space ({grid, params}), in the order the candidates run: what each method declares with
# ``auto=AutoCandidate(rank, space)`` on its registration.
CANDIDATES: dict[str, dict] = {
    name: spec.auto.space
    for name, spec in sorted(((n, s) for n, s in METHODS.items() if s.auto), key=lambda item: item[1].auto.rank)
}


def candidate_settings(overrides: dict | None = None) -> list[tuple[str, dict]]:
    """(method, hparams) for every point of every candidate's search space; ``overrides`` maps a method to fixed
    hparams (e.g. ``{"rem": {"steps": 300}}``) applied to all its points."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(CANDIDATES))
    if unknown:
        raise ValueError(f"hparams for method auto: expected a mapping from candidate method ({', '.join(CANDIDATES)})"
                         f" to its fixed hyperparameters, got key(s) {unknown}")
    settings = []
    for name, space in CANDIDATES.items():
        for setting in expand_settings(space.get("grid", {}), space.get("params")):
            hparams = {**setting, **overrides.get(name, {})}
            METHODS.get(name).resolve(hparams)  # unknown hyperparameters fail before anything runs
            settings.append((name, hparams))
    return settings


# What a candidate raises when it cannot run on the model at all (not a failure of one setting): REM on an
# architecture it cannot give spare capacity. The candidate is skipped, with the reason, and the others run.
UNSUPPORTED: tuple[type[Exception], ...] = (UnsupportedModelError,)


def run_auto(task: Task, scores: Callable[[nn.Module], dict], original_scores: dict, overrides: dict | None = None,
             max_val_drop: float = DEFAULT_MAX_VAL_DROP, progress: bool = False
             ) -> tuple[nn.Module, dict, list[dict], list[dict]]:
    """Run every candidate setting on ``task``; return (the chosen model, its row, every row, the skipped
    candidates). ``scores(model)`` gives ``val_acc`` and ``deletion_change`` (percent); ``original_scores`` the same
    for M_o. A candidate that cannot run on the model (:data:`UNSUPPORTED`) is skipped with all its settings and
    listed as ``{"method", "settings", "reason"}``; when every candidate is skipped, a ValueError says why."""
    rows, models, skipped = [], [], {}
    settings = candidate_settings(overrides)
    for index, (name, hparams) in enumerate(progress_bar(None, "auto: candidates", progress, iterable=settings)):
        if name in skipped:
            skipped[name]["settings"] += 1
            continue
        try:
            with Stopwatch(task.runtime) as clock:
                result = METHODS.get(name)(task, hparams)
        except UNSUPPORTED as error:
            skipped[name] = {"method": name, "settings": 1, "reason": str(error).splitlines()[0]}
            continue
        except DivergenceError as error:
            rows.append({"method": name, "hparams": hparams, "status": "failed", "error": str(error)})
            models.append(None)
            continue
        rows.append({"method": name, "hparams": METHODS.get(name).resolve(hparams), "status": "ok",
                     "why": METHODS.get(name).auto.why if METHODS.get(name).auto else "",
                     "seconds": clock.seconds, "shared_seconds": sum(result.shared.paid.values()),
                     "shared_reused": [str(key) for key in result.shared.reused],
                     "metrics": scores(result.model), "setting_index": index,
                     "method_notes": copy.deepcopy(dict(result.notes))})
        models.append(result.model.cpu())
    if not rows:
        raise ValueError("method auto: no candidate can run on this model ("
                         + "; ".join(f"{s['method']}: {s['reason']}" for s in skipped.values())
                         + "); choose a method that can (corrective methods lists them)")
    if not any(row["status"] == "ok" for row in rows):
        raise RuntimeError("method auto: every candidate failed: " + "; ".join(r["error"] for r in rows))
    chosen = _choose(rows, original_scores, max_val_drop)
    return models[chosen].to(task.device), rows[chosen], rows, list(skipped.values())


def _choose(rows: list[dict], original_scores: dict, max_val_drop: float) -> int:
    """Index of the guarded rule's pick; every row gets its ``score``, ``guard`` and ``chosen`` flag."""
    same = {"dataset": "user", "model": "user", "manipulation": "unknown", "n": None, "rate": None, "seed": 0}
    records = [{**same, "method": "original", "status": "ok", "metrics": original_scores}]
    records += [{**same, **row, "method": "auto", "candidate": row["method"]} for row in rows]
    marked = mark_selection(records, max_val_drop)[1:]
    ok = [i for i, row in enumerate(rows) if row["status"] == "ok"]
    chosen = None
    for i, record in zip(ok, marked):
        rows[i].update(score=record["selection_score"], guard=record["guard"], chosen=record["guarded"])
        if record["guarded"]:
            chosen = i
    return chosen
