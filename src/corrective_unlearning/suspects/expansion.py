"""Grid option ``expand``: grow a cell's deletion set by the original model's top-K suspects.

The grid calls :class:`Expansions` in three places: :meth:`Expansions.grow` when it builds an expanded deletion
set, :meth:`Expansions.charge` on each expanded cell's timings, and the ``suspects`` block that ``grow`` returns
goes into the records. Suspects are computed once per (original model, discovery rate, ranking) over the
candidates S_tr \\ S_f (the validation split is never a candidate) with ``k`` = every candidate, so every K of
that rate takes a prefix of one ranking. Their cost is shared work in the sense of
:meth:`~corrective_unlearning.methods.Task.shared`: the first method cell of each expanded deletion set includes
the ranking's seconds in ``method_seconds`` and names it in ``shared_paid`` (key ``suspects/<ranking>``); later
cells of that deletion set name it in ``shared_reused``, so one complete run's cost stays known. (With several K
per rate, each K's deletion set books the seconds of the one ranking they share: the grid's amortised total then
counts it once per K.)
"""
from __future__ import annotations

import json

import torch

from ..manipulations import index_hash
from . import COMBINED, Suspects, rank_suspects

# Rankings computed in this process: (original's cache key, deletion set hash, ranking, params, seed) -> Suspects,
# so a benchmark that ranks before it runs the grid does not pay twice (the seconds stay those measured).
_COMPUTED: dict[tuple, Suspects] = {}


class Expansions:
    """The suspects of one original model (one setting), per (rate, ranking). ``key``: the original's cache key
    (``train_original``'s ``info["cache_key"]``): with it, a ranking computed earlier in this process for the same
    original and deletion set is reused."""

    def __init__(self, setting, original, runtime, params: dict | None = None, seed: int | None = None,
                 key: str | None = None):
        self.setting, self.original, self.runtime = setting, original, runtime
        self.params = params
        self.seed = setting.seed if seed is None else seed
        self.key = key
        self._ranked: dict[tuple, Suspects] = {}
        self._charged: set[tuple] = set()

    def ranked(self, forget: torch.Tensor, rate: float, ranking: str = COMBINED) -> Suspects:
        """Every candidate of deletion set ``forget`` (rate ``rate``), ranked once."""
        key = (float(rate), ranking)
        if key not in self._ranked:

            memo = None if self.key is None else (self.key, index_hash(forget.cpu()), ranking,
                                                  json.dumps(self.params, sort_keys=True), self.seed)
            if memo is None or memo not in _COMPUTED:
                s, m = self.setting, self.setting.manipulated
                candidates = s.train_idx[~torch.isin(s.train_idx, forget.cpu())]
                ranked = rank_suspects(self.original, s.train_bank, m.labels, forget, candidates, self.runtime,
                                       ranking=ranking, params=self.params, stamp=m.triggered, seed=self.seed)
                if memo is None:
                    self._ranked[key] = ranked
                    return ranked
                _COMPUTED[memo] = ranked
            self._ranked[key] = _COMPUTED[memo]
        return self._ranked[key]

    def grow(self, forget: torch.Tensor, rate: float, k: int | str, ranking: str = COMBINED
             ) -> tuple[torch.Tensor, dict]:
        """(S_f plus its top-``k`` suspects, sorted; the records' ``suspects`` block: k, ranking, precision and
        recall against the undiscovered part of the true S_m, the discovery rate after expansion, the
        ranking's self-checks and weights, and its seconds). ``k`` "auto": K chosen from the scores
        (:func:`.auto.choose_k`); the block then also carries ``k_chosen``, ``f1`` and ``auto`` (the choice's
        self-check, estimate and reason)."""
        ranked = self.ranked(forget, rate, ranking)
        auto = ranked.auto_k() if k == "auto" else None
        top = ranked.top(auto["k"] if auto is not None else k)
        manipulated = self.setting.manipulated.manipulated.cpu()
        expanded = torch.sort(torch.cat([forget.cpu(), top.indices])).values
        scored = top.precision_recall(manipulated, forget)
        if auto is not None:
            scored = {**scored, "k_chosen": auto["k"], "f1": 2 * scored["found"] / (auto["k"] + scored["undiscovered"])
                      if auto["k"] + scored["undiscovered"] else float("nan"), "auto": auto}
        block = {"ranking": ranking, **scored,
                 "expanded_discovery": float(torch.isin(manipulated, expanded).double().mean()) if len(manipulated)
                 else float("nan"),
                 "self_check": ranked.self_check, "weights": ranked.weights, "notes": ranked.notes,
                 "candidates": ranked.candidates, "seconds": ranked.seconds}
        return expanded, block

    def charge(self, rate: float, k: int, ranking: str, timings: dict) -> None:
        """Book the ranking's seconds on ``timings`` (a cell's ``method_seconds``/``shared_*`` fields): paid by
        the first cell of the deletion set (rate, k), reused by the others."""
        key, name = (float(rate), k if k == "auto" else int(k), ranking), f"suspects/{ranking}"
        timings.setdefault("shared_paid", {})
        timings.setdefault("shared_reused", [])
        if key in self._charged:
            timings["shared_reused"].append(name)
            return
        seconds = self._ranked[(float(rate), ranking)].seconds
        self._charged.add(key)
        timings["method_seconds"] = timings.get("method_seconds", 0.0) + seconds
        timings["shared_seconds"] = timings.get("shared_seconds", 0.0) + seconds
        timings["shared_paid"][name] = seconds
