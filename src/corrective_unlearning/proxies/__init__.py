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
decorated with ``@proxy("name", params={...})`` (each a default or a :class:`~corrective_unlearning.checks.Param`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..checks import Param, check_values, declare, defaults_of
from ..registry import Registry
from .store import MissingProxyError, entry_name, load_stored, remember, remembered, store


@dataclass(frozen=True)
class Proxy:
    name: str
    compute: Callable[..., torch.Tensor]  # (original, setting, runtime, info, **params) -> scores
    params: dict[str, Param] = field(default_factory=dict)
    recorded: bool = False  # recorded during training: read, never computed afterwards
    summary: str = ""

    @property
    def defaults(self) -> dict:
        return defaults_of(self.params)

    def resolve(self, params: dict | None) -> dict:
        """Defaults overlaid with ``params``, each checked against its declaration (a ConfigError, a ValueError)."""
        return check_values(params, self.params, where=f"proxy {self.name}",
                            label=lambda key: f"proxy {self.name}: parameter {key!r}")


PROXIES: Registry[Proxy] = Registry("proxy")


def proxy(name: str, params: dict | None = None, recorded: bool = False, summary: str = ""):
    """Register ``fn(original, setting, runtime, info, **params) -> scores`` as proxy ``name``; ``params``
    declares its parameters, each a Param or a bare default (:func:`~corrective_unlearning.checks.declare`)."""
    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        declared = {key: declare(key, d) for key, d in (params or {}).items()}
        PROXIES.register(name)(Proxy(name, fn, declared, recorded, summary or (fn.__doc__ or "")))
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
