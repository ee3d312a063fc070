"""RUM, the Refined-Unlearning Meta-algorithm (SPEC 7; REFERENCE-NOTES 2.4 and 2.7): refine the deletion set S_f
into homogeneous subsets by a memorization proxy, then unlearn the subsets one after the other, from low to high
memorization, each with its own registered method, each step starting from the previous step's model.

Hyperparameters (``rum`` in a grid config or ``correct(..., method="rum")``):

- ``proxy`` / ``proxy_params``: the memorization proxy (``confidence``, ``heldout``, ``curvature``; see
  :mod:`corrective_unlearning.proxies`, higher = more memorized) and its parameters. The scores come from the
  task's ``memorization`` capability (the grid binds it; :func:`~corrective_unlearning.correct` does not,
  so there use ``order: shuffle``).
- ``subsets``: k, the number of subsets (default 3: low / medium / high).
- ``steps``: one registered method name per subset, low to high memorization, or ``none`` (leave the model as it
  is; the subset still counts as processed). Default ``[none, cf, salun]``: the RUM paper's best on CIFAR-10.
- ``method``: if set, every subset uses this one method and ``steps`` is not read: RUM^F (the paper's best on
  CIFAR-100 is ``neggrad+``).
- ``step_hparams``: one hyperparameter dict per subset (each checked by its method's own ``resolve``), or one dict
  for every step that runs a method (a ``none`` step takes none).
- ``order``: ``memorization`` (refine by the proxy) or ``shuffle`` (the paper's control: k random subsets of equal
  size, seeded by the task's seed, independent of the scores).

Refinement rule (:func:`refine`): S_f is sorted by score, ascending (ties by training index), and cut into k
contiguous bins of sizes differing by at most one; bin j holds the sorted positions
``[floor(j n / k + 1/2), floor((j + 1) n / k + 1/2))``. For k = 3 with n = 3q + r this gives sizes (q, q, q)
for r = 0, (q, q + 1, q) for r = 1 and (q + 1, q, q + 1) for r = 2: low = the lowest scores, high = the highest,
and medium = the middle block, a window centred on the median rank, i.e. the samples closest to the median *by
rank*. The three are disjoint and cover S_f. (RUM's ``main_forget.py`` takes the N samples closest to the median
*by score* from the whole training set; inside S_f such a window can overlap the lowest or highest third when the
scores are skewed, which the rank rule cannot.) ``shuffle`` cuts a seeded permutation of S_f the same way.

Step i runs its method on a task derived from this one: ``original`` = the current model (the previous step's
output; never modified), ``forget_idx`` = subset i, ``retain_idx`` = the training indices (S_f and the retain set)
minus subsets 0..i (RUM's ``D \\ (S_1 u ... u S_i)``: subsets not yet processed stay in the retain set) and a fresh
shared-work cache (another deletion set's work is not this one's). The proxy scores and the refinement go through
this task's ``shared`` cache, so a grid computes them once per deletion set.

The notes' ``steps`` hold, per step: the subset's label and size, the retain set's size, the method and its
resolved hyperparameters, the proxy's min / max / mean over the subset, the entanglement score (ES) between the
subset and the step's retain set in the step's starting model, the synchronised seconds of the method and of the
ES, and the method's own notes. The ES uses every sample of the subset and a seeded subsample of at most
``ES_RETAIN_SAMPLES`` (5000) retain samples.
"""
from __future__ import annotations

import dataclasses
import json

import torch
from torch import nn

from ..proxies import PROXIES
from ..proxies.entanglement import entanglement_score
from ..runtime import Stopwatch
from . import METHODS, ConfigError, Method, Param, summary_of
from .task import Task, Unlearned

NONE = "none"  # a step that leaves the model unchanged
ES_RETAIN_SAMPLES = 5000  # retain samples (at most) the per-step entanglement score is computed on
SHUFFLE_SEED = 101  # offset added to the task's seed for the shuffle control's permutation

PARAMS = {
    "proxy": "confidence",
    "proxy_params": Param(dict, {}),
    "subsets": Param(int, 3, low=1),
    "steps": Param(list[str], [NONE, "cf", "salun"]),
    "step_hparams": Param(list[dict] | dict, [{}, {}, {}]),
    "order": Param(str, "memorization", choices=("memorization", "shuffle")),
    "method": Param(str, None, nullable=True),
}
# The paper's comparison, kept short (a CPU recipe runs every point): full RUM (none -> CF -> SalUn, CIFAR-10's
# best) and RUM^F with NegGrad+ (CIFAR-100's best), each against its shuffle control.
GRID = {"method": [None, "neggrad+"], "order": ["memorization", "shuffle"]}


def bin_bounds(n: int, k: int) -> list[int]:
    """Bin edges over ``n`` sorted positions for ``k`` bins: ``floor(j n / k + 1/2)`` for j = 0..k."""
    return [(2 * j * n + k) // (2 * k) for j in range(k + 1)]


def _cut(ranked: torch.Tensor, k: int) -> list[torch.Tensor]:
    edges = bin_bounds(len(ranked), k)
    return [torch.sort(ranked[edges[j]:edges[j + 1]]).values for j in range(k)]


def refine(forget_idx: torch.Tensor, scores: torch.Tensor, k: int) -> list[torch.Tensor]:
    """S_f cut into ``k`` subsets by ``scores`` (aligned with ``forget_idx``), lowest scores first; each subset
    sorted by index (see the module docstring for the exact rule)."""
    if len(scores) != len(forget_idx):
        raise ValueError(f"refine: {len(scores)} scores for {len(forget_idx)} indices")
    by_index = torch.argsort(forget_idx.cpu(), stable=True)
    idx, values = forget_idx.cpu()[by_index], scores.cpu()[by_index]
    return _cut(idx[torch.argsort(values, stable=True)], k)


def shuffle_subsets(forget_idx: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """``k`` random subsets of S_f of equal size (up to one), from a permutation seeded by ``seed``."""
    idx = torch.sort(forget_idx.cpu()).values
    generator = torch.Generator().manual_seed(seed)
    return _cut(idx[torch.randperm(len(idx), generator=generator)], k)


def subset_labels(order: str, k: int) -> list[str]:
    if order == "shuffle":
        return [f"random {j + 1}/{k}" for j in range(k)]
    return ["low", "medium", "high"] if k == 3 else [f"quantile {j + 1}/{k}" for j in range(k)]


def plan(hp: dict) -> list[tuple[str, dict]]:
    """(method name, resolved hyperparameters) per subset, low to high; ``("none", {})`` for a step that does
    nothing. Raises a ConfigError naming the step for a wrong length, name or hyperparameter, or a wrong proxy."""
    k = hp["subsets"]
    try:
        PROXIES.get(hp["proxy"]).resolve(hp["proxy_params"])
    except KeyError as error:
        raise ConfigError(f"method rum: proxy: {error.args[0]}") from None
    except ValueError as error:
        raise ConfigError(f"method rum: proxy_params: {error}") from None
    names = [hp["method"]] * k if hp["method"] is not None else list(hp["steps"])
    if len(names) != k:
        raise ConfigError(f"method rum: steps has {len(names)} entries {names} but subsets is {k}: give one method "
                          f"(or 'none') per subset, low to high memorization, or set 'method' to use one for all")
    shared = isinstance(hp["step_hparams"], dict)
    per_step = [hp["step_hparams"]] * k if shared else list(hp["step_hparams"])
    if len(per_step) != k:
        raise ConfigError(f"method rum: step_hparams has {len(per_step)} entries but subsets is {k}: give one dict "
                          f"per subset, or one dict for every step")
    steps = []
    for i, (name, params) in enumerate(zip(names, per_step)):
        where = f"method rum: steps[{i}] ({name})"
        if name == NONE:
            if params and not shared:
                raise ConfigError(f"{where} leaves the model unchanged and takes no hyperparameters, got {params}")
            steps.append((NONE, {}))
            continue
        try:
            spec = METHODS.get(name)
        except KeyError as error:
            raise ConfigError(f"method rum: steps[{i}]: {error.args[0]} (or '{NONE}' to leave the model as it is)") \
                from None
        try:
            steps.append((name, spec.resolve(params)))
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    return steps


class MetaMethod(Method):
    """A :class:`Method` whose ``resolve`` also checks the methods it will call, so that a grid config naming a
    wrong step fails when it is loaded, not in its cells."""

    def resolve(self, hparams: dict | None) -> dict:
        hp = super().resolve(hparams)
        plan(hp)
        return hp


def forget_scores(scores: torch.Tensor, forget_idx: torch.Tensor, proxy: str) -> torch.Tensor:
    """The proxy's scores of S_f, refusing any that are undefined."""
    idx = forget_idx.cpu()
    if len(idx) and int(idx.max()) >= len(scores):
        raise ValueError(f"memorization proxy {proxy!r} returned {len(scores)} scores, but S_f holds training index "
                         f"{int(idx.max())}: scores must cover the whole training split")
    values = scores.cpu().float()[idx]
    undefined = torch.isnan(values)
    if undefined.any():
        raise ValueError(f"memorization proxy {proxy!r} is undefined (NaN) for {int(undefined.sum())} of the "
                         f"{len(idx)} samples of S_f (e.g. training index {int(idx[undefined][0])}); the confidence "
                         f"proxy is NaN for samples the original never trained on (a recipe shorter than one "
                         f"epoch): use another proxy or order=shuffle")
    return values


def proxy_range(scores: torch.Tensor | None, subset: torch.Tensor) -> dict | None:
    if scores is None or len(subset) == 0:
        return None
    values = scores.cpu().float()[subset.cpu()]
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}


def step_entanglement(task: Task, model: nn.Module, subset: torch.Tensor, retain: torch.Tensor) -> tuple[float, int]:
    """ES between ``subset`` and ``retain`` in ``model``'s penultimate space, on all of ``subset`` and a seeded
    subsample of at most ``ES_RETAIN_SAMPLES`` of ``retain``; returns (ES, retain samples used)."""
    sample = retain.cpu()
    if len(sample) > ES_RETAIN_SAMPLES:
        generator = torch.Generator().manual_seed(task.seed)
        sample = torch.sort(sample[torch.randperm(len(sample), generator=generator)[:ES_RETAIN_SAMPLES]]).values
    return entanglement_score(task.embeddings(model, sample), task.embeddings(model, subset)), len(sample)


def rum(task: Task, hp: dict) -> Unlearned:
    """RUM: refine S_f into k subsets by a memorization proxy, then unlearn them in sequence from low to high
    memorization, one method per subset, each step from the previous step's model (default: confidence proxy,
    3 subsets, none -> CF -> SalUn); ``method`` = RUM^F, ``order: shuffle`` = random equal subsets."""
    steps = plan(hp)
    k, order, proxy = hp["subsets"], hp["order"], hp["proxy"]
    params = dict(hp["proxy_params"])
    params_key = json.dumps(params, sort_keys=True, separators=(",", ":"))

    def read_scores() -> torch.Tensor:
        return task.shared(("rum-proxy", proxy, params_key), lambda: task.memorization_scores(proxy, params))

    notes: dict = {"order": order, "proxy": proxy, "proxy_params": params}
    scores = None
    if order == "memorization":
        scores = read_scores()
        subsets = task.shared(("rum-refine", proxy, params_key, k),
                              lambda: refine(task.forget_idx, forget_scores(scores, task.forget_idx, proxy), k))
    else:
        subsets = task.shared(("rum-shuffle", k, task.seed),
                              lambda: shuffle_subsets(task.forget_idx, k, task.seed + SHUFFLE_SEED))
        if task.memorization is not None:  # the scores only describe the random subsets here
            try:
                scores = read_scores()
            except (LookupError, ValueError) as error:
                notes["proxy_error"] = f"{type(error).__name__}: {error}"
    notes.update(subset_sizes=[len(s) for s in subsets],
                 es_note=f"ES between each subset and its step's retain set, in the step's starting model, on every "
                         f"sample of the subset and a seeded subsample of at most {ES_RETAIN_SAMPLES} retain samples")

    train_idx = task.train_idx.cpu()
    device = task.forget_idx.device
    current, processed, records = task.original, [], []
    for i, ((name, step_hp), subset, label) in enumerate(zip(steps, subsets, subset_labels(order, k))):
        processed.append(subset)
        retain = train_idx[~torch.isin(train_idx, torch.cat(processed))]
        record = {"step": i, "subset": label, "method": name, "hparams": step_hp, "size": len(subset),
                  "retain_size": len(retain), "proxy": proxy_range(scores, subset)}
        if len(subset) == 0:  # fewer samples in S_f than subsets
            records.append({**record, "skipped": "empty subset", "es": None, "seconds": 0.0, "notes": {}})
            continue
        with Stopwatch(task.runtime) as clock:
            record["es"], record["es_retain_samples"] = step_entanglement(task, current, subset, retain)
        record["es_seconds"] = clock.seconds
        if name == NONE:
            record.update(seconds=0.0, notes={})
        else:
            step_task = dataclasses.replace(task, original=current, forget_idx=subset.to(device),
                                            retain_idx=retain.to(device), cache={})
            with Stopwatch(task.runtime) as clock:
                step = METHODS.get(name)(step_task, step_hp)
            current = step.model
            record.update(seconds=clock.seconds, notes=dict(step.notes))
            if step.shared.paid:
                record["shared_paid"] = dict(step.shared.paid)
        records.append(record)
    notes["steps"] = records
    return Unlearned(task.copy_original() if current is task.original else current, notes)


METHODS.register("rum")(MetaMethod("rum", rum, PARAMS, dict(GRID), summary_of(rum), style=("maroon", "8")))
