"""Memorization proxies (SPEC 7; RUM) and the entanglement score: functions of (original model, data) -> scores.

Every proxy returns a float32 CPU tensor over the whole training split (row ``i`` = training image ``i``, like
``manipulated.labels``), NaN where it is undefined (the validation split), oriented so that HIGHER = MORE
MEMORIZED:

- ``confidence``: ``1 - mean softmax probability of the given label`` over training (RUM's C-proxy inverted),
  recorded by the training loop of :func:`~corrective_unlearning.experiment.train_original`;
- ``heldout``: symmetric KL between the original and a copy fine-tuned on the validation split;
- ``curvature``: CURE-style loss curvature around the input, on the original.

:func:`memorization_scores` is the one way in: it reads the recorded confidence, and computes the others once per
original model and parameters, storing them beside the cached model (``originals/proxies/<key>.safetensors``).

Adding a proxy is one file here with a function ``(original, setting, runtime, info, **params) -> scores``
decorated with ``@proxy("name", defaults={...})``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..registry import Registry
from .store import MissingProxyError, entry_name, load_stored, remember, remembered, store


@dataclass(frozen=True)
class Proxy:
    name: str
    compute: Callable[..., torch.Tensor]  # (original, setting, runtime, info, **params) -> scores
    defaults: dict = field(default_factory=dict)
    recorded: bool = False  # recorded during training: read, never computed afterwards
    summary: str = ""

    def resolve(self, params: dict) -> dict:
        """Defaults overlaid with ``params``; an unknown name is an error."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"proxy {self.name} has no parameter(s) {unknown}; "
                             f"it takes {sorted(self.defaults) or 'none'}")
        return {**self.defaults, **params}


PROXIES: Registry[Proxy] = Registry("proxy")


def proxy(name: str, defaults: dict | None = None, recorded: bool = False, summary: str = ""):
    """Register ``fn(original, setting, runtime, info, **params) -> scores`` as proxy ``name``."""
    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        PROXIES.register(name)(Proxy(name, fn, dict(defaults or {}), recorded, summary or (fn.__doc__ or "")))
        return fn

    return decorator


def memorization_scores(name: str, setting, original: nn.Module, info: dict, runtime, **params) -> torch.Tensor:
    """Proxy ``name``'s scores (higher = more memorized) for ``original`` as returned with ``info`` by
    :func:`~corrective_unlearning.experiment.train_original` on ``setting``.

    A recorded proxy is read (:class:`MissingProxyError` when the original has none); the others are computed
    once per original and parameters, kept with the model object and, when the original is in the cache,
    stored beside it (keyed by its cache key, the proxy and its parameters)."""
    spec = PROXIES.get(name)
    params = spec.resolve(params)
    if spec.recorded:
        return spec.compute(original, setting, runtime, info, **params).clone()
    entry = entry_name(name, params)
    scores = remembered(original, entry)
    if scores is None:
        scores = load_stored(info, entry)
    if scores is None:
        scores = spec.compute(original, setting, runtime, info, **params)
        store(info, entry, scores, params)
    remember(original, entry, scores)
    return scores.clone()


from . import confidence, curvature, heldout  # noqa: E402,F401  (registration)
from .confidence import ConfidenceRecorder, recorded_confidence, remember_confidence  # noqa: E402
from .curvature import curvature_scores, input_curvature  # noqa: E402
from .entanglement import embeddings_and_logits, entanglement, entanglement_score, penultimate_embeddings  # noqa: E402
from .heldout import finetune_on_validation, heldout_scores, symmetric_kl  # noqa: E402

__all__ = ["PROXIES", "ConfidenceRecorder", "MissingProxyError", "Proxy", "curvature_scores", "embeddings_and_logits",
           "entanglement", "entanglement_score", "finetune_on_validation", "heldout_scores", "input_curvature",
           "memorization_scores", "penultimate_embeddings", "proxy", "recorded_confidence", "remember_confidence",
           "symmetric_kl"]
