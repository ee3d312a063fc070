"""Original-model cache: weights as safetensors plus a JSON sidecar, keyed by a hash of everything the model
depends on (data and its checksum, manipulation and its parameters, seed, model, recipe).

A corrupt or mismatched entry is detected (sidecar key, weights checksum, strict state-dict load) and reported;
the caller retrains and overwrites it, never using it silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from .records import write_json_atomic

CACHE_FORMAT = 1


def cache_key(spec: dict) -> str:
    """sha256 of the canonical JSON of ``spec`` (which must include the seed)."""
    if "seed" not in spec:
        raise ValueError("a cache key must include the seed")
    canonical = json.dumps({"format": CACHE_FORMAT, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ModelCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def load(self, key: str, model: nn.Module) -> dict | None:
        """Fill ``model`` from the entry and return its sidecar, or None when absent or invalid."""
        weights, sidecar = self.paths(key)
        if not weights.exists() and not sidecar.exists():
            return None
        try:
            meta = json.loads(sidecar.read_text())
            if meta.get("key") != key:
                raise ValueError(f"sidecar key {meta.get('key')!r} does not match {key!r}")
            if meta.get("weights_sha256") != _file_sha256(weights):
                raise ValueError("weights checksum does not match the sidecar")
            model.load_state_dict(load_file(weights, device="cpu"), strict=True)
        except Exception as error:  # any damage means: retrain, and say so
            warnings.warn(f"cache entry {key} is corrupt or mismatched ({error}); retraining", stacklevel=2)
            return None
        return meta

    def save(self, key: str, model: nn.Module, meta: dict) -> None:
        weights, sidecar = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        partial = weights.with_name(weights.name + ".part")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, partial)
        os.replace(partial, weights)
        write_json_atomic(sidecar, {**meta, "key": key, "weights_sha256": _file_sha256(weights)})
