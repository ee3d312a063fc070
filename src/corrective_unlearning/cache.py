"""Original-model cache: weights as safetensors plus a JSON sidecar, keyed by a hash of everything the model
depends on (data and its checksum, manipulation and its parameters, seed, model, recipe).

A corrupt or mismatched entry is detected (sidecar key, weights checksum, strict state-dict load) and reported;
the caller retrains and overwrites it, never using it silently.

Per-example scores of a cached model (memorization proxies) live beside it in ``proxies/<key>.safetensors``: named
float32 tensors, with the checksum of the weights they were computed on in the file's metadata, so that scores of a
model that has since been retrained are never read.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .checks import ConfigError
from .data.locate import cache_dir
from .records import (
    file_sha256,
    model_weights,
    write_json_atomic,
    write_safetensors_atomic,
)

CACHE_FORMAT = 1


def cache_key(spec: dict) -> str:
    """sha256 of the canonical JSON of ``spec`` (which must include the seed)."""
    if "seed" not in spec:
        raise ValueError("a cache key must include the seed")
    canonical = json.dumps({"format": CACHE_FORMAT, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class ModelCache:
    """Models under ``root`` as ``<key>.safetensors`` + ``<key>.json``; their per-example scores under
    ``root/proxies/<key>.safetensors``."""

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
            if meta.get("weights_sha256") != file_sha256(weights):
                raise ValueError("weights checksum does not match the sidecar")
            model.load_state_dict(load_file(weights, device="cpu"), strict=True)
        except Exception as error:  # any damage means: retrain, and say so
            warnings.warn(f"cache entry {key} is corrupt or mismatched ({error}); retraining", stacklevel=2)
            return None
        return meta

    def save(self, key: str, model: nn.Module, meta: dict) -> None:
        weights, sidecar = self.paths(key)
        digest = write_safetensors_atomic(weights, model_weights(model))
        write_json_atomic(sidecar, {**meta, "key": key, "weights_sha256": digest})

    # ------------------------------------------------------------------------------- per-example scores
    def scores_path(self, key: str) -> Path:
        """Where the per-example scores of entry ``key`` are stored (a subfolder, so that a listing of the
        models, ``*.safetensors`` in ``root``, stays a listing of models)."""
        return self.root / "proxies" / f"{key}.safetensors"

    def sidecar(self, key: str) -> dict | None:
        """Entry ``key``'s sidecar as written (unchecked); None when there is no readable one."""
        try:
            meta = json.loads(self.paths(key)[1].read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def weights_sha256(self, key: str) -> str | None:
        """The weights checksum recorded in entry ``key``'s sidecar; None when there is no readable sidecar."""
        return (self.sidecar(key) or {}).get("weights_sha256")

    def load_scores(self, key: str, name: str) -> torch.Tensor | None:
        """Scores ``name`` of entry ``key``, or None when absent. Scores computed on other weights than the
        entry's (the model was retrained since) or an unreadable file are reported and ignored."""
        path = self.scores_path(key)
        if not path.exists():
            return None
        try:
            with safe_open(path, framework="pt") as f:
                if (f.metadata() or {}).get("weights_sha256") != self.weights_sha256(key):
                    raise ValueError("they were computed on other weights than the cached model's")
                return f.get_tensor(name) if name in f.keys() else None
        except Exception as error:  # never use damaged or stale scores
            warnings.warn(f"stored scores of cache entry {key} are ignored ({error})", stacklevel=2)
            return None

    def save_scores(self, key: str, scores: dict[str, torch.Tensor], params: dict[str, dict] | None = None,
                    fresh: bool = False) -> Path:
        """Store ``scores`` (name -> 1-d tensor) beside entry ``key``, which must exist; the scores already there
        are kept unless ``fresh`` (a retrained model starts a fresh file). ``params[name]`` is recorded with each.
        Written atomically; two processes adding different scores at once may drop one (it is recomputed)."""
        sha = self.weights_sha256(key)
        if sha is None:
            raise FileNotFoundError(f"no cached model {key} in {self.root} to store scores beside")
        path = self.scores_path(key)
        tensors, metadata = {}, {"weights_sha256": sha}
        if not fresh and path.exists():
            tensors, metadata = self._readable_scores(path, sha)
        tensors.update({name: t.detach().float().contiguous().cpu() for name, t in scores.items()})
        metadata.update({f"params/{name}": json.dumps(p, sort_keys=True, default=str)
                         for name, p in (params or {}).items()})
        write_safetensors_atomic(path, tensors, metadata)
        return path

    @staticmethod
    def _readable_scores(path: Path, sha: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The scores in ``path`` that belong to weights ``sha`` (nothing when they do not or it is damaged)."""
        try:
            with safe_open(path, framework="pt") as f:
                metadata = dict(f.metadata() or {})
                if metadata.get("weights_sha256") != sha:
                    return {}, {"weights_sha256": sha}
                return {name: f.get_tensor(name) for name in f.keys()}, metadata
        except Exception:
            return {}, {"weights_sha256": sha}


def check_cache_writable() -> Path:
    """The cache folder (``$CORRECTIVE_CACHE_DIR``, default ``~/.cache/corrective-unlearning``), made if missing;
    a one-line ConfigError when it cannot be made or written (checked by writing and removing a file in it)."""


    root = cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=root, prefix=".write-check.", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"the cache folder {root} ($CORRECTIVE_CACHE_DIR) is not writable ({reason}); set "
                          f"CORRECTIVE_CACHE_DIR to a folder you can write to") from None
    return root


def originals_cache() -> ModelCache:
    """The cache of original models (``$CORRECTIVE_CACHE_DIR/originals``)."""
    return ModelCache(cache_dir() / "originals")
