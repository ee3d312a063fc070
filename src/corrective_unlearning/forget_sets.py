"""Forget sets chosen from the trained original model (RUM's study, SPEC 7; REFERENCE-NOTES 2.4), not from S_m.

A grid config's ``forget_sets`` (a list; when present it replaces ``rates``) names each set by how it is chosen:

    forget_sets:
      - {by: confidence, level: high, size: 600}     # a memorization proxy: confidence | heldout | curvature
      - {by: confidence, level: mixed, size: 600}    #   level: low | medium | high | mixed
      - {by: entanglement, level: low, size: 600}    # level: low | high
      - {by: random, size: 600}                      # a seeded uniform choice (no level)

Every set is drawn from the training split S_tr (never the validation split), sorted by index. The rules, all
with ties broken by the lower training index:

- **memorization** (``by`` a proxy of :mod:`corrective_unlearning.proxies`, higher score = more memorized; samples
  whose score is undefined, NaN, are not candidates): ``low`` = the N lowest scores, ``high`` = the N highest,
  ``medium`` = the N closest to the median score of all candidates (RUM's rule for proxies), ``mixed`` = RUM's
  ``mix`` set: N/3 each of high, low and medium (sizes from :func:`~corrective_unlearning.methods.rum.bin_bounds`,
  e.g. 333 / 334 / 333 for N = 1000), chosen in that order, each from the candidates the previous ones left, so
  the three parts are disjoint even on tiny data.
- **entanglement**: the original's penultimate embeddings of every training sample; the distance of each to the
  centroid (mean) of all of them. ``high`` = the N closest to the centroid, ``low`` = the N farthest. By SPEC 7's
  ES (spread within the two sets over the separation of their means), a set near the overall centroid has a mean
  near the retain set's, i.e. a small separation and a high ES; a set far out is separated and gets a low ES.
  RUM's code splits the same ranking into 15 groups and takes groups 3/12/14 with labels by distance
  (REFERENCE-NOTES 2.4); here the ends of the ranking are taken and labelled by entanglement, and the label is
  checked by a number: :func:`describe_forget_set` records the measured ES of the set against the rest.
- **random**: ``np.random.default_rng([seed, 31])`` choosing N of the training split without replacement.

:func:`describe_forget_set` records, per set, the measured ES (:func:`~corrective_unlearning.proxies.entanglement.
entanglement_score` of the set against a seeded subsample of at most 5000 of the other training samples, in the
original's penultimate space) and the range of a memorization proxy over the set (the selecting proxy; for
entanglement and random sets the confidence proxy when the original has it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .checks import ConfigError, describe_value
from .methods.rum import bin_bounds
from .proxies import PROXIES, memorization_scores
from .proxies.entanglement import entanglement_score, penultimate_embeddings
from .runtime import Stopwatch

MEMORIZATION_LEVELS = ("low", "medium", "high", "mixed")
ENTANGLEMENT_LEVELS = ("low", "high")
ENTANGLEMENT, RANDOM = "entanglement", "random"
ES_RETAIN_SAMPLES = 5000  # retain samples (at most) the measured ES of a forget set is computed on
DESCRIBE_PROXY = "confidence"  # the proxy whose range describes entanglement and random sets
RANDOM_STREAM, ES_STREAM = 31, 37  # second entries of the seeds of the random choice and the ES subsample


@dataclass(frozen=True)
class ForgetSetSpec:
    """One entry of ``forget_sets``: ``by`` (a proxy name, ``entanglement`` or ``random``), ``level`` and
    ``size`` (N)."""

    by: str
    level: str | None = None
    size: int = 0

    @property
    def kind(self) -> str:
        """``memorization``, ``entanglement`` or ``random``."""
        return self.by if self.by in (ENTANGLEMENT, RANDOM) else "memorization"

    @property
    def label(self) -> str:
        """E.g. ``confidence-high-600``, ``entanglement-low-600``, ``random-600``: part of the cell ids."""
        return f"{self.by}-{self.level}-{self.size}" if self.level else f"{self.by}-{self.size}"

    def describe(self) -> dict:
        return {"by": self.by, "level": self.level, "size": self.size, "kind": self.kind}


def parse_forget_sets(entries, where: str = "forget_sets") -> list[ForgetSetSpec]:
    """Validate a config's ``forget_sets`` list; raises :class:`~corrective_unlearning.config.ConfigError` naming
    the entry. Labels must be distinct (each set is one group of cells)."""

    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: expected a non-empty list of {{by, level, size}} entries, got "
                          f"{describe_value(entries)}")
    specs = []
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: expected a mapping {{by, level, size}}, got {describe_value(entry)}")
        unknown = sorted(set(entry) - {"by", "level", "size"})
        if unknown:
            raise ConfigError(f"{here}: unknown key(s) {unknown}; expected by, level, size")
        by, level, size = entry.get("by"), entry.get("level"), entry.get("size")
        kinds = [*PROXIES.names(), ENTANGLEMENT, RANDOM]
        if by not in kinds:
            raise ConfigError(f"{here}.by: expected one of {kinds} (a memorization proxy, entanglement or random), "
                              f"got {by!r}")
        levels = (() if by == RANDOM else ENTANGLEMENT_LEVELS if by == ENTANGLEMENT else MEMORIZATION_LEVELS)
        if by == RANDOM and level is not None:
            raise ConfigError(f"{here}.level: a random forget set has no level, got {level!r}")
        if by != RANDOM and level not in levels:
            raise ConfigError(f"{here}.level: for by={by} expected one of {list(levels)}, got {level!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"{here}.size: expected an integer >= 1 (the number of samples), got {size!r}")
        specs.append(ForgetSetSpec(by, level, size))
    labels = [s.label for s in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"{where}: {repeated} listed more than once")
    return specs


def _as_spec(spec) -> ForgetSetSpec:
    if isinstance(spec, ForgetSetSpec):
        return spec
    return parse_forget_sets([spec], "forget set")[0]


# -- the selection rules (pure: scores in, indices out) ----------------------------------------------------------

def _ranked(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` sorted by ``keys`` ascending, ties by index."""
    return idx[np.lexsort((idx, keys))]


def _check_size(size: int, available: int, what: str) -> None:
    if not 1 <= size <= available:
        raise ValueError(f"forget set {what}: size {size} must be in [1, {available}] (the candidates available)")


def by_memorization(scores: torch.Tensor, candidates: torch.Tensor, level: str, size: int) -> torch.Tensor:
    """The ``level`` set of ``size`` candidates by ``scores`` (over the whole training split, higher = more
    memorized; NaN = not a candidate), sorted; see the module docstring for the rules."""
    if level not in MEMORIZATION_LEVELS:
        raise ValueError(f"memorization level must be one of {MEMORIZATION_LEVELS}, got {level!r}")
    idx = np.sort(np.asarray(candidates.cpu(), dtype=np.int64))
    values = np.asarray(scores.cpu().double())[idx]
    finite = np.isfinite(values)
    idx, values = idx[finite], values[finite]
    _check_size(size, len(idx), f"{level} memorization")
    median = float(np.median(values))

    def pick(part: str, count: int, pool: np.ndarray) -> np.ndarray:
        v = np.asarray(scores.cpu().double())[pool]
        keys = {"low": v, "high": -v, "medium": np.abs(v - median)}[part]
        return _ranked(keys, pool)[:count]

    if level != "mixed":
        chosen = pick(level, size, idx)
    else:

        edges = bin_bounds(size, 3)
        counts = dict(zip(("low", "medium", "high"), np.diff(edges)))
        chosen, pool = [], idx
        for part in ("high", "low", "medium"):
            part_idx = pick(part, int(counts[part]), pool)
            chosen.append(part_idx)
            pool = pool[~np.isin(pool, part_idx)]
        chosen = np.concatenate(chosen)
    return torch.from_numpy(np.sort(chosen)).long()


def by_distance_to_centroid(embeddings: torch.Tensor, candidates: torch.Tensor, level: str,
                            size: int) -> torch.Tensor:
    """``high`` entanglement = the ``size`` candidates closest to the centroid of all candidates' embeddings,
    ``low`` = the farthest; ``embeddings[k]`` belongs to ``candidates[k]``. Sorted indices."""
    if level not in ENTANGLEMENT_LEVELS:
        raise ValueError(f"entanglement level must be one of {ENTANGLEMENT_LEVELS}, got {level!r}")
    idx = np.asarray(candidates.cpu(), dtype=np.int64)
    _check_size(size, len(idx), f"{level} entanglement")
    distance = centroid_distances(embeddings)
    keys = distance if level == "high" else -distance
    return torch.from_numpy(np.sort(_ranked(keys, idx)[:size])).long()


def centroid_distances(embeddings: torch.Tensor) -> np.ndarray:
    """Euclidean distance of every row to the mean row (float64)."""
    e = embeddings.double().flatten(1)
    return np.asarray((e - e.mean(0)).norm(dim=1))


def uniform(candidates: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    idx = np.sort(np.asarray(candidates.cpu(), dtype=np.int64))
    _check_size(size, len(idx), "random")
    chosen = np.random.default_rng([seed, RANDOM_STREAM]).choice(idx, size=size, replace=False)
    return torch.from_numpy(np.sort(chosen)).long()


# -- against a trained original ----------------------------------------------------------------------------------

class ForgetSetSelector:
    """Selects and describes the forget sets of one original model, computing the penultimate embeddings of the
    training split at most once (they serve every entanglement set and every measured ES).

    ``full_embeddings``: embed the whole training split for :meth:`describe` too (the grid sets it when it has an
    entanglement set, which needs them anyway), so every set's distance to the centroid is recorded; without it a
    description embeds only the set and its ES sample, and records no distance (``None``) unless the whole split
    was already embedded."""

    def __init__(self, setting, original: nn.Module, info: dict, runtime, full_embeddings: bool = True) -> None:
        self.setting, self.original, self.info, self.runtime = setting, original, info or {}, runtime
        self.full_embeddings = full_embeddings
        self._embeddings: torch.Tensor | None = None

    @property
    def candidates(self) -> torch.Tensor:
        """The training split S_tr (the validation split excluded), sorted."""
        return torch.sort(self.setting.train_idx.cpu()).values

    def scores(self, proxy: str) -> torch.Tensor:

        return memorization_scores(proxy, self.setting, self.original, self.info, self.runtime)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Penultimate embeddings of training indices ``idx`` (row k for idx[k]), as trained (trigger included)."""

        return penultimate_embeddings(self.original, self.setting.train_bank, idx, self.runtime,
                                      stamp=self.setting.manipulated.triggered[idx])

    def embeddings(self) -> torch.Tensor:
        """Penultimate embeddings of :attr:`candidates` (row k for candidates[k]), computed once."""
        if self._embeddings is None:
            self._embeddings = self.embed(self.candidates)
        return self._embeddings

    def select(self, spec, seed: int) -> torch.Tensor:
        spec = _as_spec(spec)
        if spec.kind == RANDOM:
            return uniform(self.candidates, spec.size, seed)
        if spec.kind == ENTANGLEMENT:
            return by_distance_to_centroid(self.embeddings(), self.candidates, spec.level, spec.size)
        return by_memorization(self.scores(spec.by), self.candidates, spec.level, spec.size)

    def describe(self, spec, forget: torch.Tensor, seed: int,
                 retain_samples: int | None = ES_RETAIN_SAMPLES) -> dict:
        """The forget set's label and rule, its measured ES against a seeded subsample of the rest of the training
        split, its distance to the centroid of the training split's embeddings (see ``full_embeddings``) and a
        memorization proxy's range over it (an ``error`` where the proxy cannot be read)."""

        spec = _as_spec(spec)
        idx = self.candidates
        forget = torch.sort(forget.cpu()).values
        rest = idx[~torch.isin(idx, forget)]
        if retain_samples is not None and len(rest) > retain_samples:
            chosen = np.random.default_rng([seed, ES_STREAM]).choice(len(rest), size=retain_samples, replace=False)
            rest = rest[torch.from_numpy(np.sort(chosen))]
        distance = None
        if self.full_embeddings or self._embeddings is not None:
            embeddings = self.embeddings()
            position = torch.searchsorted(idx, forget)
            es = entanglement_score(embeddings[torch.searchsorted(idx, rest)], embeddings[position])
            values = centroid_distances(embeddings)[position.numpy()]
            distance = {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
        else:
            es = entanglement_score(self.embed(rest), self.embed(forget))
        proxy = spec.by if spec.kind == "memorization" else DESCRIBE_PROXY
        try:
            values = self.scores(proxy)[forget]
            values = values[torch.isfinite(values)]
            proxy_range = {"name": proxy, "min": float(values.min()), "max": float(values.max()),
                           "mean": float(values.mean())} if len(values) else None
        except (LookupError, ValueError) as error:  # e.g. an original cached before confidence was recorded
            proxy_range = {"name": proxy, "error": f"{type(error).__name__}: {error}"}
        return {"label": spec.label, **spec.describe(), "selected": len(forget), "es": es,
                "es_retain_samples": len(rest), "distance": distance, "proxy": proxy_range}


def select_forget_set(setting, original: nn.Module, info: dict, runtime, spec, seed: int) -> torch.Tensor:
    """The forget set ``spec`` (a :class:`ForgetSetSpec` or a ``{by, level, size}`` dict) of ``original``, trained
    by :func:`~corrective_unlearning.experiment.train_original` on ``setting`` (``info``: what it returned):
    sorted indices into the training split, never the validation split. See the module docstring."""
    return ForgetSetSelector(setting, original, info, runtime).select(spec, seed)


def describe_forget_set(setting, original: nn.Module, info: dict, runtime, spec, forget: torch.Tensor,
                        seed: int) -> dict:
    """What :meth:`ForgetSetSelector.describe` records for one forget set."""
    return ForgetSetSelector(setting, original, info, runtime).describe(spec, forget, seed)


def timed_selection(selector: ForgetSetSelector, spec: ForgetSetSpec, seed: int) -> tuple[torch.Tensor, dict]:
    """Select and describe, with the synchronised seconds each took (never in a method's time)."""

    with Stopwatch(selector.runtime) as selecting:
        forget = selector.select(spec, seed)
    with Stopwatch(selector.runtime) as describing:
        description = selector.describe(spec, forget, seed)
    return forget, {**description, "select_seconds": selecting.seconds, "describe_seconds": describing.seconds}


__all__ = ["ENTANGLEMENT_LEVELS", "ForgetSetSelector", "ForgetSetSpec", "MEMORIZATION_LEVELS",
           "by_distance_to_centroid", "by_memorization", "describe_forget_set", "parse_forget_sets",
           "select_forget_set", "uniform"]
