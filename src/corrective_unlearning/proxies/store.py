"""Where proxy scores are kept: beside the cached original model on disk, and in memory with the model object
itself (for an original trained with ``cache=false``, which leaves nothing on disk).

Scores are float32 tensors over the whole training split of the dataset (``len(manipulated.labels)``), row ``i``
for training image ``i``; NaN where a proxy is undefined (the validation split, samples never trained on).
"""
from __future__ import annotations

import hashlib
import json
import weakref

import torch
from torch import nn

from ..cache import originals_cache

_IN_MEMORY: "weakref.WeakKeyDictionary[nn.Module, dict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()


class MissingProxyError(LookupError):
    """Scores that can only be recorded during training were asked for, and there are none for this model."""


def entry_name(proxy: str, params: dict) -> str:
    """The name scores are stored under: the proxy's name, plus a hash of its parameters when it has any."""
    if not params:
        return proxy
    canonical = json.dumps(params, sort_keys=True, default=str)
    return f"{proxy}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def remember(model: nn.Module, name: str, scores: torch.Tensor) -> None:
    """Keep ``scores`` with ``model`` for as long as the model object lives."""
    _IN_MEMORY.setdefault(model, {})[name] = scores


def remembered(model: nn.Module, name: str) -> torch.Tensor | None:
    return _IN_MEMORY.get(model, {}).get(name)


def load_stored(info: dict, name: str) -> torch.Tensor | None:
    """Scores ``name`` stored beside the cached original of ``info`` (train_original's), or None."""
    key = info.get("cache_key")
    return None if key is None or not info.get("in_cache", True) else originals_cache().load_scores(key, name)


def store(info: dict, name: str, scores: torch.Tensor, params: dict | None = None) -> bool:
    """Store scores beside the cached original of ``info`` when it is in the cache; False when it is not
    (trained with ``cache=false``: nothing is written then)."""
    key = info.get("cache_key")
    cache = originals_cache()
    if key is None or not info.get("in_cache", True) or cache.weights_sha256(key) is None:
        return False
    cache.save_scores(key, {name: scores}, {name: params or {}})
    return True


def over_training_split(values: torch.Tensor, indices: torch.Tensor, size: int) -> torch.Tensor:
    """A float32 CPU tensor of length ``size``: ``values[k]`` at ``indices[k]``, NaN elsewhere."""
    scores = torch.full((size,), float("nan"), dtype=torch.float32)
    scores[indices.cpu()] = values.detach().float().cpu()
    return scores
