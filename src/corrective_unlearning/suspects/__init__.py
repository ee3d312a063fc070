"""Finding the rest: rank the unflagged training samples by how much they resemble the flagged ones.

The owner found some manipulated samples (the flagged set S_f); the rest of S_m hides among the unflagged ones.
Every ranking here scores each unflagged sample (higher = more suspect) from one forward pass of the *original*
model over the training images (:class:`Features`: penultimate embedding, outputs, given labels):

- ``embedding`` (:mod:`.embedding`): cosine similarity to the nearest flagged samples in the penultimate
  embedding, among flagged samples that carry the same given label;
- ``gradient`` (:mod:`.gradient`): cosine agreement of the per-sample loss gradient of the last layer with the
  flagged set's mean gradient (closed form, no backward pass);
- ``label_issues`` (:mod:`.label_issues`): confident learning (cleanlab) on out-of-sample probabilities of a
  cross-validated logistic-regression probe on the embeddings; it does not look at the flagged set at all;
- ``spectral_flagged`` (:mod:`.spectral`): the standardised projection on the direction from a class's mean to its
  flagged samples' mean (the flag-aware variant of spectral signatures);
- the backdoor field's poison detectors, which do **not** use the flagged set (their self-check still compares the
  flagged rows' scores with the others'): ``spectral`` (spectral signatures, :mod:`.spectral`),
  ``activation_clustering`` (:mod:`.activation_clustering`), ``scan`` (:mod:`.scan`), ``strip`` (:mod:`.strip`:
  model forwards on blended images, through ``Features.blend``) and ``outlier`` (cleanlab's outlier score,
  :mod:`.outlier`);
- ``combined``: a weighted average of the rankings' percentile ranks (rank average), each weighted by how well it
  recognises the flagged samples themselves (its *self-check*, below); ``weights: equal`` gives the plain rank
  average. Its members by default are :data:`DEFAULT_COMBINED` (embedding, gradient, label_issues and
  spectral_flagged); ``params={"combined": {"rankings": [...]}}`` names others.

``k`` auto (:mod:`.auto`): how many suspects to add, estimated from the candidates' scores and the flagged
samples' leave-one-out scores (:meth:`Suspects.auto_k`); none when the self-check says the ranking cannot tell.

**Self-check.** Every ranking also scores each flagged sample as if it were unflagged (leave-one-out: against the
other flagged samples; the probe's probabilities are out-of-fold anyway). The self-check of a ranking is the AUC of
the flagged samples' scores against the unflagged samples' scores: 1.0 when the known bad samples all rank above
every unflagged one, 0.5 when the ranking cannot tell them apart. It uses nothing the owner does not have, and it
tells which ranking fits the manipulation at hand: poisons share a trigger (embedding and gradient see it; a probe on
the poisoned model's embedding is fooled by it), random labels share nothing but being wrong (label issues see
them). ``combined`` weighs each ranking by its self-check's odds beyond chance, ``(auc - 0.5) / (1 - auc)``
(:func:`self_check_weight`; equal weights when none is above chance): on Fashion-MNIST this keeps the ranking that
fits (embedding for poison, label issues for random labels) and mixes two that complement each other (interclass).

Entry points: :func:`suspects` (your model, training data and flagged indices, as
:func:`~corrective_unlearning.correct` takes them) and :func:`rank_suspects` (an image bank and a runtime, as the
grid holds them). Adding a ranking is one file here (imported at the bottom of this one) with a function
``(features, flagged_mask, *, seed, notes, **params) -> scores`` decorated with ``@ranking("name", params={...})``;
it must give every row a finite score, flagged rows their leave-one-out score, and may write hints into ``notes``.

The embedding is the input of the model's last ``nn.Linear`` (a forward hook: any classifier whose last linear
layer is its classifier head works, no embedding method needed), and the gradient ranking takes the model's
output as the logits of that layer.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..checks import Param, check_values, declare, defaults_of
from ..hidden_count import average_ranks, self_check
from ..inputs import flagged_indices, training_data
from ..registry import Registry
from ..runtime import Runtime, Stopwatch

COMBINED = "combined"
# the rankings ``combined`` mixes by default: the flag-aware ones and the label-issue probe. The detectors that ignore
# the flagged set are left out: on Fashion-MNIST adding them (combined_all) lowered recall on interclass and random
# labels, while spectral_flagged lifted blend, FTrojan and BPP (docs/detectors.md). Name others with
# params={"combined": {"rankings": [...]}}.
DEFAULT_COMBINED = ("embedding", "gradient", "label_issues", "spectral_flagged")


@dataclass(frozen=True)
class Features:
    """What every ranking reads: one row per scored sample (flagged and candidates alike)."""

    embeddings: torch.Tensor  # float32 [N, D]: the input of the last nn.Linear
    logits: torch.Tensor  # float32 [N, C]: the model's outputs
    labels: torch.Tensor  # int64 [N]: the given labels
    num_classes: int
    bias: bool = False  # the last linear layer has a bias (its gradient is part of the last layer's)
    # optional: blend(rows, partners, alpha) -> float class probabilities [len(rows), C] of the model on the convex
    # blends (1 - alpha) x_row + alpha x_partner (feature rows in): the model forwards the strip ranking needs;
    # features_of sets it, features made by hand have none
    blend: Callable | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(self.embeddings) != n or len(self.logits) != n:
            raise ValueError(f"features: {len(self.embeddings)} embeddings, {len(self.logits)} logits and {n} "
                             f"labels; expected one of each per sample")


@dataclass(frozen=True)
class Ranking:
    name: str
    score: Callable[..., torch.Tensor]  # (features, flagged_mask, *, seed, notes, **params) -> float scores [N]
    params: dict[str, Param]
    summary: str
    needs: tuple = ()  # optional packages it imports

    @property
    def defaults(self) -> dict:
        return defaults_of(self.params)

    def resolve(self, params: dict | None) -> dict:
        """Defaults overlaid with ``params``, each checked against its declaration (a ConfigError, a ValueError)."""
        return check_values(params, self.params, where=f"ranking {self.name}",
                            label=lambda key: f"ranking {self.name}: parameter {key!r}")


RANKINGS: Registry[Ranking] = Registry("ranking")


def ranking(name: str, params: dict | None = None, needs: tuple = ()):
    """Register ``fn(features, flagged_mask, *, seed, notes, **params) -> scores`` (float, one per row, higher =
    more suspect; flagged rows get their leave-one-out score) as ranking ``name``; ``params`` declares its
    parameters, each a Param or a bare default (:func:`~corrective_unlearning.checks.declare`)."""
    def decorator(fn):
        summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        declared = {key: declare(key, d) for key, d in (params or {}).items()}
        RANKINGS.register(name)(Ranking(name, fn, declared, summary, tuple(needs)))
        return fn

    return decorator


# combined's parameters (it is no registered ranking: it combines them).
COMBINED_PARAMS = {
    "rankings": Param(list[str], doc="the rankings to combine; default: DEFAULT_COMBINED"),
    "weights": Param(str, "self_check", choices=("self_check", "equal"), doc="self_check: by each one's AUC"),
}


def ranking_names() -> list[str]:
    """Every ranking :func:`suspects` accepts: the registered ones and ``combined``."""
    return [*RANKINGS.names(), COMBINED]


@dataclass(frozen=True)
class Suspects:
    """The top unflagged samples, most suspect first.

    ``indices``: int64 sample indices (never flagged ones); ``scores``: the chosen ranking's score of each (for
    ``combined``, a weighted percentile in [0, 1]); ``per_ranking``: every computed ranking's score of the same
    samples (row-aligned with ``indices``); ``self_check``: per ranking, the AUC of the flagged samples (scored
    leave-one-out) against the unflagged ones; ``weights``: the combination's weights (``combined`` only);
    ``candidates``: how many unflagged samples were ranked; ``notes``: what a ranking says about itself (e.g.
    ``label_issues_found``: how many candidates cleanlab's ``find_label_issues`` flags, a hint for K)."""

    indices: torch.Tensor
    scores: torch.Tensor
    ranking: str
    per_ranking: dict = field(default_factory=dict)
    self_check: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    candidates: int = 0
    notes: dict = field(default_factory=dict)
    seconds: float = 0.0
    # the flagged samples' scores under the same ranking (leave-one-out; for combined, their weighted percentile
    # among the candidates' scores), row-aligned with flagged_indices: what k "auto" reads (suspects.auto)
    flagged_scores: torch.Tensor | None = None
    flagged_indices: torch.Tensor | None = None

    def auto_k(self, **options) -> dict:
        """The number of suspects to add chosen from the scores alone (:func:`.auto.choose_k`: ``k``, the
        self-check, the estimated hidden count and the reason); needs every candidate ranked (``k=None``)."""
        if self.flagged_scores is None or len(self.indices) < self.candidates:
            raise ValueError("k auto needs every candidate ranked (k=None) and the flagged samples' scores")
        return choose_k(self.scores.numpy(), self.flagged_scores.numpy(), **options)

    def __len__(self) -> int:
        return len(self.indices)

    def top(self, k: int) -> "Suspects":
        """The first ``k`` suspects (a prefix: the ranking does not depend on k)."""
        return dataclasses.replace(self, indices=self.indices[:k], scores=self.scores[:k],
                                   per_ranking={name: s[:k] for name, s in self.per_ranking.items()})

    def precision_recall(self, manipulated: torch.Tensor, flagged: torch.Tensor | None = None) -> dict:
        """Precision (found / suspects) and recall (found / manipulated samples not flagged) of these suspects
        against the true manipulated set (known in experiments only)."""
        manipulated = torch.as_tensor(manipulated).cpu().long()
        if flagged is not None:
            manipulated = manipulated[~torch.isin(manipulated, torch.as_tensor(flagged).cpu().long())]
        found = int(torch.isin(self.indices, manipulated).sum())
        return {"k": len(self.indices), "found": found, "undiscovered": len(manipulated),
                "precision": found / len(self.indices) if len(self.indices) else float("nan"),
                "recall": found / len(manipulated) if len(manipulated) else float("nan")}


def self_check_weight(auc: float) -> float:
    """A ranking's weight in ``combined``: its self-check's odds of ordering a (flagged, unflagged) pair right
    beyond chance, ``(auc - 0.5) / (1 - auc)`` (0 at or below chance; 1 - auc floored at 1e-3). Near-perfect
    self-checks differ by little in AUC and by much in odds: 0.995 weighs 99, 0.98 weighs 24, 0.63 weighs 0.35."""
    if not np.isfinite(auc):
        return 0.0
    return max(auc - 0.5, 0.0) / max(1.0 - auc, 1e-3)


def _order(scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Positions sorted by score descending, ties by sample index ascending (deterministic)."""
    return np.lexsort((indices, -scores))


def rank_features(features: Features, rows: torch.Tensor, flagged_mask: torch.Tensor, *,
                  ranking: str = COMBINED, k: int | None = None, params: dict | None = None,
                  seed: int = 0) -> Suspects:
    """Rank the non-flagged rows of ``features``. ``rows``: the sample index of each feature row; ``flagged_mask``:
    bool per row. ``params``: ranking name -> its parameters (``combined`` takes ``rankings``, the list to combine,
    and ``weights``: ``self_check`` or ``equal``)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(ranking_names()))
    if unknown:
        raise ValueError(f"params: unknown ranking(s) {unknown}; expected some of {ranking_names()}")
    if ranking == COMBINED:
        options = check_values(params.get(COMBINED), COMBINED_PARAMS, where=f"ranking {COMBINED}",
                               label=lambda key: f"ranking {COMBINED}: parameter {key!r}")
        components = list(options.get("rankings", DEFAULT_COMBINED))
        if not components or len(set(components)) != len(components) or COMBINED in components:
            raise ValueError(f"combined: rankings must be distinct names among {RANKINGS.names()}, got {components}")
    elif ranking in RANKINGS:
        components = [ranking]
    else:
        raise ValueError(f"unknown ranking {ranking!r}; expected one of {ranking_names()}")
    for name in components:
        RANKINGS.get(name)  # a KeyError naming the known ones
    flagged_mask = torch.as_tensor(flagged_mask, dtype=torch.bool).cpu()
    rows = torch.as_tensor(rows).cpu().long()
    if len(rows) != len(features.labels) or len(flagged_mask) != len(rows):
        raise ValueError(f"{len(rows)} rows and {len(flagged_mask)} flags for {len(features.labels)} feature rows")
    if not bool(flagged_mask.any()):
        raise ValueError("no flagged sample: suspects are ranked by their resemblance to the flagged ones")
    if bool(flagged_mask.all()):
        raise ValueError("every sample is flagged: there is nothing left to rank")

    flagged_np = flagged_mask.numpy()
    scores, checks, notes = {}, {}, {}
    for name in components:
        spec = RANKINGS.get(name)
        row_scores = spec.score(features, flagged_mask, seed=seed, notes=notes, **spec.resolve(params.get(name)))
        row_scores = torch.as_tensor(row_scores, dtype=torch.float64).cpu().numpy()
        if row_scores.shape != (len(rows),) or not np.isfinite(row_scores).all():
            raise RuntimeError(f"ranking {name} returned {row_scores.shape} scores (non-finite ones included?) "
                               f"for {len(rows)} rows")
        scores[name] = row_scores
        checks[name] = self_check(row_scores, flagged_np)

    candidates = ~flagged_np
    cand_idx = rows.numpy()[candidates]
    weights = {}
    if ranking == COMBINED:
        if options["weights"] == "equal":
            weights = {name: 1.0 for name in components}
        else:
            weights = {name: self_check_weight(checks[name]) for name in components}
            if sum(weights.values()) <= 0:
                weights = {name: 1.0 for name in components}
        total = sum(weights.values())
        weights = {name: w / total for name, w in weights.items()}
        n_c = int(candidates.sum())
        final = sum(weights[name] * average_ranks(scores[name][candidates]) / n_c for name in components)
        flagged_final = sum(weights[name] * _ranks_among(scores[name][flagged_np], scores[name][candidates]) / n_c
                            for name in components)
    else:
        final = scores[ranking][candidates]
        flagged_final = scores[ranking][flagged_np]
    order = _order(final, cand_idx)
    if k is not None:
        order = order[:k]
    return Suspects(
        indices=torch.from_numpy(cand_idx[order].copy()), scores=torch.from_numpy(np.asarray(final)[order].copy()),
        ranking=ranking,
        per_ranking={name: torch.from_numpy(s[candidates][order].copy()) for name, s in scores.items()},
        self_check=checks, weights=weights, candidates=int(candidates.sum()), notes=notes,
        flagged_scores=torch.from_numpy(np.asarray(flagged_final, dtype=np.float64).copy()),
        flagged_indices=rows[flagged_mask].clone())


def _ranks_among(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The average rank each of ``values`` would take if inserted alone among ``reference`` (1-based, ties half):
    a flagged sample's rank on the candidates' scale."""
    ordered = np.sort(reference)
    below = np.searchsorted(ordered, values, side="left")
    upto = np.searchsorted(ordered, values, side="right")
    return below + (upto - below + 1) / 2.0


def features_of(model: nn.Module, bank, labels: torch.Tensor, indices: torch.Tensor, runtime: Runtime,
                stamp: torch.Tensor | bool = False, batch_size: int | None = None) -> Features:
    """:class:`Features` of ``bank[indices]`` from one eval-mode forward pass of ``model`` (unshuffled, no
    augmentation; ``stamp`` as in :func:`~corrective_unlearning.evaluation.predict.logits`)."""
    from ..proxies.entanglement import (  # lazy: keeps proxies (and its cache) out of `import corrective_unlearning`
        embeddings_and_logits,
        last_linear,
    )

    embeddings, outputs = embeddings_and_logits(model, bank, indices, runtime, stamp, batch_size)
    head = last_linear(model)
    return Features(embeddings, outputs, torch.as_tensor(labels).cpu().long()[torch.as_tensor(indices).cpu()],
                    num_classes=outputs.shape[1], bias=head.bias is not None,
                    blend=_blender(model, bank, torch.as_tensor(indices).cpu().long(), runtime, stamp, batch_size))


def _blender(model: nn.Module, bank, indices: torch.Tensor, runtime: Runtime, stamp, batch_size: int | None):
    """``blend(rows, partners, alpha)`` for :class:`Features`: the model's softmax on ``(1 - alpha) x_row + alpha
    x_partner`` (normalised images of ``bank[indices[...]]``, stamped as ``stamp`` says), float32 on the CPU."""
    size = batch_size or (2048 if runtime.cuda else 512)

    def stamps(rows):
        return stamp[rows] if isinstance(stamp, torch.Tensor) else stamp

    def blend(rows: torch.Tensor, partners: torch.Tensor, alpha: float) -> torch.Tensor:
        rows, partners = torch.as_tensor(rows).long(), torch.as_tensor(partners).long()
        was_training = model.training
        model.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(rows), size):
                a, b = rows[start : start + size], partners[start : start + size]
                x = (1 - alpha) * bank.batch(indices[a], stamps(a)) + alpha * bank.batch(indices[b], stamps(b))
                with runtime.autocast():
                    out.append(torch.softmax(model(x).float(), dim=1).cpu())
        model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, 0)

    return blend


def rank_suspects(model: nn.Module, bank, labels: torch.Tensor, flagged: torch.Tensor, candidates: torch.Tensor,
                  runtime: Runtime, *, ranking: str = COMBINED, k: int | None = None, params: dict | None = None,
                  stamp: torch.Tensor | None = None, batch_size: int | None = None, seed: int = 0) -> Suspects:
    """Rank ``candidates`` (sample indices into ``bank``) by their resemblance to ``flagged``, with ``model`` as
    it is (on ``runtime``'s device). ``labels``: given labels of every sample of ``bank``; ``stamp``: per-sample
    trigger flags of the whole bank (how the images were seen in training), or None. ``seconds`` in the result is
    the synchronised wall time of the whole ranking, forward pass included."""
    flagged = torch.as_tensor(flagged).cpu().long().unique()
    candidates = torch.as_tensor(candidates).cpu().long().unique()
    candidates = candidates[~torch.isin(candidates, flagged)]
    if len(candidates) == 0:
        raise ValueError("no unflagged candidate to rank: every candidate is flagged")
    with Stopwatch(runtime) as clock:
        rows = torch.cat([flagged, candidates])
        row_stamp = False if stamp is None else torch.as_tensor(stamp).cpu()[rows]
        features = features_of(model, bank, labels, rows, runtime, row_stamp, batch_size)
        mask = torch.zeros(len(rows), dtype=torch.bool)
        mask[: len(flagged)] = True
        result = rank_features(features, rows, mask, ranking=ranking, k=k, params=params, seed=seed)
    return dataclasses.replace(result, seconds=clock.seconds)


def suspects(
    model: nn.Module,
    train,
    flagged: Sequence[int] | torch.Tensor,
    *,
    ranking: str = COMBINED,
    k: int | None = None,
    candidates: Sequence[int] | torch.Tensor | None = None,
    params: dict | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    seed: int = 0,
) -> Suspects:
    """The ``k`` unflagged samples (all of them when ``k`` is None) that most resemble the ``flagged`` ones, most
    suspect first, as seen by ``model`` (untouched: a copy runs on ``device``).

    ``train`` in any form :func:`corrective_unlearning.correct` takes: a Dataset of (image, label) items, a pair
    (images, labels), a registered dataset name, an ``.npz`` file or a ``corrective train`` run folder; the images
    exactly as the model was trained on them, the labels the given ones. ``flagged``: integer indices or a boolean
    mask of length N. ``mean``/``std``: the normalisation of uint8 images (default: their channel statistics).
    ``candidates``: the samples to rank (indices or mask; default every unflagged training sample); flagged ones
    among them are dropped. ``ranking``: one of :func:`ranking_names` (``embedding``, ``gradient``,
    ``label_issues``, ``spectral_flagged``, the detectors ``spectral``, ``activation_clustering``, ``scan``,
    ``strip``, ``outlier``, and ``combined``); ``params``: ranking name -> parameters. With ``k=None``,
    :meth:`Suspects.auto_k` chooses how many to take from the scores. ``label_issues`` (and ``combined``,
    which includes it by default) needs the optional packages ``cleanlab`` and ``scikit-learn``
    (``pip install 'corrective-unlearning[suspects]'``).
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k: expected a positive integer (or None: rank every candidate), got {k!r}")
    if ranking not in ranking_names():
        raise ValueError(f"unknown ranking {ranking!r}; expected one of {ranking_names()}")
    runtime = dataclasses.replace(Runtime.create(device, compile=False, progress=False), channels_last=False)
    data = training_data(train, mean=mean, std=std, runtime=runtime)
    flagged = flagged_indices(flagged, len(data.labels))
    if candidates is None:
        candidates = data.train_idx
    else:
        try:
            candidates = flagged_indices(candidates, len(data.labels))
        except ValueError as error:
            raise ValueError(str(error).replace("flagged:", "candidates:")) from None
    copy_ = runtime.prepare(copy.deepcopy(model)).eval()
    return rank_suspects(copy_, data.bank(runtime), data.labels, flagged, candidates, runtime, ranking=ranking,
                         k=k, params=params, stamp=data.triggered, batch_size=batch_size, seed=seed)


# registration, one name per ranking file:
from . import activation_clustering, embedding, gradient, label_issues, outlier, scan, spectral, strip  # noqa

from .auto import choose_k  # noqa: E402,F401

__all__ = ["COMBINED", "DEFAULT_COMBINED", "Features", "RANKINGS", "Ranking", "Suspects", "average_ranks", "choose_k",
           "features_of", "rank_features", "rank_suspects", "ranking", "ranking_names", "self_check",
           "self_check_weight", "suspects"]
