"""The two references of ToW (RUM, SPEC section 7), each trained once and cached like the original models.

- **retrained** (``retrain``, RUM's reference): M_o's architecture re-initialised and trained with recipe A on the
  retain set S_tr \\ S_f: exactly the ``eu`` method with ``last_k: all`` (run through ``METHODS["eu"]`` on the
  grid's own :class:`~corrective_unlearning.methods.Task`), so an ``eu`` cell of the same recipe and seed is the
  reference itself. One per deletion set. In the corrective setting it still holds the undiscovered manipulated
  samples with their corrupted labels and triggers.
- **clean oracle** (``clean``): recipe A, exactly as the original model is trained (same initialisation, seed,
  split and checkpoint rule), on the whole training split S_tr with its *clean* labels and no trigger: every
  manipulation undone, what a corrective user actually wants. Undoing the manipulation leaves the same training
  set whatever the manipulation was, so one clean oracle serves every manipulation variant and size of a seed
  (its cache key holds what it depends on: data checksum, split, clean labels, model, recipe, seed).

Both live in ``$CORRECTIVE_CACHE_DIR/references`` (the same content-hash :class:`~corrective_unlearning.cache.
ModelCache` as the originals, keyed by :func:`~corrective_unlearning.cache.cache_key` of their specs; a spec
names its kind under ``reference``, so no reference ever shares a key with an original model).
"""
from __future__ import annotations

import gc
import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from .cache import ModelCache, cache_key
from .data.locate import cache_dir
from .evaluation.tow import FORGET_CLEAN, FORGET_GIVEN, retain_sample, tow_accuracies, tug_of_war
from .experiment import Setting, checkpoint_score, new_model, original_spec
from .manipulations import index_hash
from .methods import METHODS, Task
from .runtime import Runtime, Stopwatch
from .training import Recipe, train

REFERENCES = ("retrain", "clean")
REFERENCE_FORMAT = 1  # bump when what a reference is changes: old entries are then never read
RETRAIN_METHOD, RETRAIN_HPARAMS = "eu", {"last_k": "all"}


def references_cache() -> ModelCache:
    """The cache of reference models (``$CORRECTIVE_CACHE_DIR/references``)."""
    return ModelCache(cache_dir() / "references")


def label_hash(labels: torch.Tensor) -> str:
    """A short fingerprint of a label vector (order matters: label i belongs to sample i)."""
    return hashlib.sha256(np.asarray(labels.cpu(), dtype=np.int64).tobytes()).hexdigest()[:16]


# -- the clean oracle --------------------------------------------------------------------------------------------

def clean_oracle_spec(setting: Setting, model_name: str, recipe: Recipe) -> dict:
    """Everything the clean oracle depends on: the original's spec without the manipulation (which is undone),
    with the clean labels' fingerprint and the marker ``reference: clean_oracle``."""
    spec = original_spec(setting, model_name, recipe)
    for key in ("manipulation", "n", "manipulation_params"):
        spec.pop(key, None)
    return {**spec, "reference": "clean_oracle", "reference_format": REFERENCE_FORMAT,
            "clean_labels": label_hash(setting.manipulated.clean_labels),
            "train_split": index_hash(setting.train_idx)}


def train_clean_oracle(setting: Setting, model_name: str, recipe: Recipe, runtime: Runtime, use_cache: bool = True,
                       memo: dict | None = None) -> tuple[nn.Module, dict]:
    """The clean oracle of ``setting`` (see the module docstring), from ``memo`` (models already obtained in this
    process, by cache key), the disk cache, or trained now. ``info["cache"]`` says which: "reused", "hit",
    "miss"; ``info["train_seconds"]`` is the synchronised training time measured when it was trained."""
    spec = clean_oracle_spec(setting, model_name, recipe)
    key = cache_key(spec)
    if memo is not None and key in memo:
        model, info = memo[key]
        return model, {**info, "cache": "reused", "seconds_this_run": 0.0}
    cache = references_cache()
    with Stopwatch(runtime) as clock:
        model = new_model(setting, model_name, setting.seed, runtime)
        meta = cache.load(key, model) if use_cache else None
        if meta is not None:
            model = runtime.prepare(model)
            info = {"cache": "hit", "train_seconds": meta["train_seconds"]}
        else:
            m = setting.manipulated
            log = train(model, setting.train_bank, m.clean_labels, setting.train_idx, recipe, seed=setting.seed,
                        runtime=runtime, triggered=None, select=checkpoint_score(setting, recipe, runtime),
                        desc=f"clean oracle {model_name}")
            info = {"cache": "miss", "train_seconds": log.seconds, "selected_step": log.selected_step}
            if use_cache:
                cache.save(key, model, {"spec": spec, "train_seconds": log.seconds})
    info.update(cache_key=key, stored=use_cache, seconds_this_run=clock.seconds)
    if memo is not None:
        memo[key] = (model, info)
    return model, info


# -- the retrained reference -------------------------------------------------------------------------------------

def retrain_spec(original_key: str, forget: torch.Tensor, recipe: Recipe, seed: int) -> dict:
    """The retrained reference's cache spec: the original's cache key (data, split, manipulation, model, recipe,
    seed), the deletion set's index hash, the recipe and the EU settings it is trained with."""
    return {"reference": "retrain", "reference_format": REFERENCE_FORMAT, "original": original_key,
            "forget": index_hash(forget), "forget_size": len(forget), "method": RETRAIN_METHOD,
            "hparams": METHODS.get(RETRAIN_METHOD).resolve(RETRAIN_HPARAMS), "recipe": recipe.to_dict(),
            "seed": seed}


def train_retrained(task: Task, original_key: str, use_cache: bool = True) -> tuple[nn.Module, dict]:
    """The model retrained without ``task.forget_idx``: ``METHODS["eu"](task, {"last_k": "all"})``, or the same
    model from the cache. ``info`` as for :func:`train_clean_oracle`."""
    spec = retrain_spec(original_key, task.forget_idx, task.recipe, task.seed)
    key = cache_key(spec)
    cache = references_cache()
    runtime = task.runtime
    with Stopwatch(runtime) as clock:
        meta = None
        if use_cache:
            model = task.fresh_model()
            meta = cache.load(key, model)
        if meta is not None:
            model = runtime.prepare(model)
            info = {"cache": "hit", "train_seconds": meta["train_seconds"]}
        else:
            with Stopwatch(runtime) as training:
                model = METHODS.get(RETRAIN_METHOD)(task, RETRAIN_HPARAMS).model
            info = {"cache": "miss", "train_seconds": training.seconds}
            if use_cache:
                cache.save(key, model, {"spec": spec, "train_seconds": training.seconds})
    info.update(cache_key=key, stored=use_cache, seconds_this_run=clock.seconds)
    return model, info


# -- one deletion set's references -------------------------------------------------------------------------------

def tow_metrics(u: dict, references: dict[str, dict], prefix: str = "") -> dict[str, float]:
    """ToW (percent) of accuracies ``u`` against each reference's: ``tow_<reference>`` with A_f on S_f's given
    labels (RUM's definition) and ``tow_<reference>_sfclean`` with A_f on S_f's clean labels."""
    metrics = {}
    for name, r in references.items():
        metrics[f"{prefix}tow_{name}"] = tug_of_war(u, r, FORGET_GIVEN)
        metrics[f"{prefix}tow_{name}_sfclean"] = tug_of_war(u, r, FORGET_CLEAN)
    return metrics


@dataclass
class DeletionSetReferences:
    """What the ToW of one deletion set needs, computed once and shared by its cells: the scored retain
    subsample, each reference's accuracies and how it was obtained, and the original model's accuracies and ToW
    (doing nothing, at this deletion set)."""

    forget: torch.Tensor
    retain: torch.Tensor  # the retain indices scored for A_r (a seeded subsample)
    retain_size: int  # |S_tr \ S_f|
    accuracies: dict[str, dict]  # reference name -> accuracies (tow_accuracies)
    info: dict[str, dict]  # reference name -> cache, cache_key, train_seconds, seconds_this_run, eval_seconds
    original: dict = field(default_factory=dict)  # the original model's accuracies

    def metrics(self, u: dict) -> dict[str, float]:
        """A cell's ToW metrics, and the original model's at this deletion set (``original_tow_*``)."""
        return {**tow_metrics(u, self.accuracies), **tow_metrics(self.original, self.accuracies, "original_")}

    def block(self) -> dict:
        """The ``references`` block of the records of this deletion set (identical in each of them)."""
        return {"retain_scored": len(self.retain), "retain_size": self.retain_size,
                "retain_scored_hash": index_hash(self.retain), "forget_hash": index_hash(self.forget),
                **{name: {"accuracies": self.accuracies[name], **self.info[name]} for name in self.accuracies},
                "original": {"accuracies": self.original, **tow_metrics(self.original, self.accuracies)}}


def deletion_set_references(
    setting: Setting,
    original: nn.Module,
    forget: torch.Tensor,
    task: Callable[[], Task],
    references: list[str],
    retain_samples: int | None,
    original_key: str,
    clean_oracle: Callable[[], tuple[nn.Module, dict]],
    runtime: Runtime,
    use_cache: bool = True,
) -> DeletionSetReferences:
    """Obtain the ``references`` of deletion set ``forget`` (``task()``: the grid's task of this deletion set;
    ``clean_oracle()``: the setting's clean oracle) and score them, and the original model, once."""
    unknown = sorted(set(references) - set(REFERENCES))
    if unknown:
        raise ValueError(f"unknown ToW reference(s) {unknown}; expected some of {list(REFERENCES)}")
    retain_all = setting.train_idx[~torch.isin(setting.train_idx, forget)]
    retain = retain_sample(retain_all, retain_samples, setting.seed)
    accuracies, info = {}, {}
    for name in references:
        model, info[name] = train_retrained(task(), original_key, use_cache) if name == "retrain" else clean_oracle()
        with Stopwatch(runtime) as clock:
            accuracies[name] = tow_accuracies(model, setting, forget, retain, runtime)
        info[name]["eval_seconds"] = clock.seconds
        del model
    gc.collect()
    return DeletionSetReferences(forget=forget, retain=retain, retain_size=len(retain_all), accuracies=accuracies,
                                 info=info, original=tow_accuracies(original, setting, forget, retain, runtime))
