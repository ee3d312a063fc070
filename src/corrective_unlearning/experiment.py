"""The corrective setting end to end: data -> split -> manipulation -> original model (cached) -> deletion set and
its :class:`~corrective_unlearning.methods.Task` -> metrics."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Literal, TypedDict

import numpy as np
import torch
from torch import nn

from .cache import cache_key, originals_cache
from .capacity import WideModel, deployable, restricted_model
from .config import default_val_size
from .data import ImageDataset, stratified_split
from .evaluation import accuracy, evaluate, predict
from .manipulations import Manipulated, index_hash, manipulate
from .methods import Task
from .models import create_model
from .proxies import memorization_scores
from .proxies.confidence import RECORDED as RECORDED_CONFIDENCE
from .proxies.confidence import ConfidenceRecorder, remember_confidence
from .reserve import split_validation
from .runtime import Runtime
from .training import ImageBank, Recipe, train
from .training.recipe import DEFAULT_MODELS, default_recipe


@dataclass
class Setting:
    """A manipulated training set with its held-out validation split and device-resident image banks.

    ``train_idx`` is S_tr (the validation split is excluded from it and never manipulated).
    """

    dataset: ImageDataset
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    manipulated: Manipulated
    seed: int
    train_bank: ImageBank
    test_bank: ImageBank
    # clean reserve (corrective_unlearning.reserve): carved out of the validation split by with_reserve; val_idx
    # is then the selection split only. None = no reserve.
    clean_idx: torch.Tensor | None = None

    def index_hashes(self) -> dict[str, str]:
        hashes = {"train": index_hash(self.train_idx), "val": index_hash(self.val_idx),
                  "manipulated": index_hash(self.manipulated.manipulated)}
        if self.clean_idx is not None:  # clean reserve
            hashes["clean_reserve"] = index_hash(self.clean_idx)
        return hashes

    def describe(self) -> dict:
        m = self.manipulated
        described = {"dataset": self.dataset.name, "dataset_checksum": self.dataset.checksum,
                     "dataset_origin": self.dataset.origin, "val_size": len(self.val_idx),
                     "manipulation": m.name, "n": m.size, "manipulation_params": m.params, "seed": self.seed}
        if self.clean_idx is not None:  # clean reserve: val_size is then the selection split's size
            described["clean_reserve"] = len(self.clean_idx)
        return described

    def with_reserve(self, fraction: float) -> "Setting":
        """This setting with ``fraction`` of its validation split carved off as the clean reserve (stratified,
        seeded by the setting's seed; :func:`corrective_unlearning.reserve.split_validation`); the rest stays
        ``val_idx``, the selection split. ``fraction`` 0: this setting unchanged."""
        if not fraction:
            return self
        reserve, selection = split_validation(self.val_idx, self.manipulated.clean_labels[self.val_idx], fraction,
                                              self.seed)
        return dataclasses.replace(self, val_idx=selection, clean_idx=reserve)


def build_setting(
    dataset: ImageDataset,
    manipulation: str,
    n: int,
    seed: int,
    runtime: Runtime,
    val_size: int | None = None,
    recipe: Recipe | None = None,
    **params,
) -> Setting:
    """``val_size``: the validation split held out of the training set; None = the default, 5%
    (:func:`config.default_val_size`); 0 = none, the reference's exact setting. ``recipe``: what a trigger's
    clean surrogate model (label-consistent) trains with, as the original does; None = the dataset's recipe A."""
    if val_size is None:
        val_size = default_val_size(len(dataset.train_labels))
    train_idx, val_idx = stratified_split(dataset.train_labels, val_size, seed)
    surrogate = functools.partial(clean_surrogate, dataset, seed, runtime, val_size, recipe)
    manipulated = manipulate(manipulation, dataset, train_idx, n, seed, surrogate=surrogate, **params)
    trigger = manipulated.trigger

    def bank(images: torch.Tensor, trigger) -> ImageBank:
        return ImageBank(images, dataset.mean, dataset.std, runtime.device, trigger, runtime.channels_last)

    return Setting(dataset=dataset, train_idx=train_idx, val_idx=val_idx, manipulated=manipulated, seed=seed,
                   train_bank=bank(dataset.train_images, trigger),
                   test_bank=bank(dataset.test_images, trigger and trigger.for_test()))


def clean_surrogate(dataset: ImageDataset, seed: int, runtime: Runtime, val_size: int,
                    recipe: Recipe | None = None) -> nn.Module:
    """A model trained by ``recipe`` (default: the dataset's recipe A) on the clean training split (the dataset's
    default model), cached like an original: what a clean-label attacker trains to craft its perturbations
    against."""
    setting = build_setting(dataset, "none", 0, seed, runtime, val_size)
    model, _ = train_original(setting, DEFAULT_MODELS.get(dataset.name, "resnet9"),
                              recipe or default_recipe(dataset.name), runtime)
    return model


def new_model(setting: Setting, model_name: str, seed: int, runtime: Runtime) -> nn.Module:
    """A freshly initialised model; the initialisation is seeded."""
    torch.manual_seed(seed)
    model = create_model(model_name, setting.dataset.num_classes, setting.dataset.in_channels,
                         image_size=setting.dataset.image_size)
    return runtime.prepare(model)


def original_spec(setting: Setting, model_name: str, recipe: Recipe) -> dict:
    """Everything the original model depends on. The data enter by checksum, not by where they were read from."""
    spec = {**setting.describe(), "model": model_name, "recipe": recipe.to_dict()}
    del spec["dataset_origin"]
    return spec


def checkpoint_score(setting: Setting, recipe: Recipe, runtime: Runtime):
    """Checkpoint score for recipe.checkpoint: validation accuracy, or the reference's leaky test accuracy."""
    if recipe.checkpoint == "val":
        if len(setting.val_idx) == 0:
            raise ValueError("recipe.checkpoint='val' needs a validation split: set dataset.val_size > 0")
        labels = setting.manipulated.clean_labels[setting.val_idx]
        return lambda model: accuracy(predict(model, setting.train_bank, setting.val_idx, runtime), labels)
    if recipe.checkpoint == "test":
        every = torch.arange(len(setting.dataset.test_labels))
        return lambda model: accuracy(predict(model, setting.test_bank, every, runtime), setting.dataset.test_labels)
    return None


class _OriginalInfoBase(TypedDict):
    cache: Literal["hit", "miss"]
    cache_key: str
    in_cache: bool  # whether the cache was used at all (grid option cache)
    recipe: dict
    train_seconds: float  # measured when the model was trained (a cache hit reads it back)
    confidence: Literal["recorded", "stored", "absent"]


class OriginalInfo(_OriginalInfoBase, total=False):
    """What :func:`train_original` says about the model it returns; a plain dict at run time. The training log's
    fields exist only when the model was trained now (``cache: miss``)."""

    losses: list
    selected_step: int | None
    checkpoint: str


def train_original(
    setting: Setting, model_name: str, recipe: Recipe, runtime: Runtime, use_cache: bool = True
) -> tuple[nn.Module, OriginalInfo]:
    """Train recipe A on the manipulated training set, or load the identical model from the cache.

    Training also records the confidence proxy (per training index, the mean softmax probability of the given
    label over all steps; :mod:`.proxies.confidence`), kept with the returned model and stored beside the cached
    one. ``info["confidence"]`` says where it is: "recorded" (trained now), "stored" (read back on a cache hit) or
    "absent" (an entry cached before recording existed). Read it with :func:`.proxies.memorization_scores`."""
    spec = original_spec(setting, model_name, recipe)
    key = cache_key(spec)
    cache = originals_cache()
    model = new_model(setting, model_name, setting.seed, runtime)
    if recipe.spare_capacity:  # trained wide with the spare channels held at zero; deployed narrowed
        model = runtime.prepare(restricted_model(model, recipe.spare_capacity, setting.seed))
    common = {"cache_key": key, "in_cache": use_cache, "recipe": recipe.to_dict()}
    if use_cache:
        meta = cache.load(key, model)
        if meta is not None:
            model = _deployed(model, runtime)
            confidence = cache.load_scores(key, RECORDED_CONFIDENCE)
            if confidence is not None:
                remember_confidence(model, confidence)
            return model, OriginalInfo(cache="hit", **common, train_seconds=meta["train_seconds"],
                                       confidence="absent" if confidence is None else "stored")
    recorder = ConfidenceRecorder(len(setting.manipulated.labels), setting.train_bank.device)
    log = train(
        model, setting.train_bank, setting.manipulated.labels, setting.train_idx, recipe,
        seed=setting.seed, runtime=runtime, triggered=setting.manipulated.triggered,
        select=checkpoint_score(setting, recipe, runtime), observe=recorder, desc=f"original {model_name}",
    )
    info = OriginalInfo(cache="miss", **common, train_seconds=log.seconds, losses=log.losses,
                        selected_step=log.selected_step, checkpoint=recipe.checkpoint, confidence="recorded")
    if use_cache:  # a restricted model is cached wide: REM needs its spare channels
        cache.save(key, model, {"spec": spec, "train_seconds": log.seconds})
    model = _deployed(model, runtime)
    confidence = recorder.mean()
    remember_confidence(model, confidence)
    if use_cache:
        cache.save_scores(key, {RECORDED_CONFIDENCE: confidence}, fresh=True)  # a new model: old scores go
    return model, info


def _deployed(model: nn.Module, runtime: Runtime) -> nn.Module:
    """The model other code sees: a capacity-restricted network narrowed to the original architecture."""
    return runtime.prepare(deployable(model)) if isinstance(model, WideModel) else model


# -- a deletion set and its task -------------------------------------------------------------------------------------

def deletion_set(setting: Setting, rate: float) -> torch.Tensor:
    """A seeded uniform subset of S_m of size round(rate * n). Nested across rates for one seed (the first
    k of one permutation), so curves over the discovery rate compare like with like."""
    manipulated = setting.manipulated.manipulated
    order = np.random.default_rng([setting.seed, 7]).permutation(len(manipulated))
    return torch.sort(manipulated[order[: round(rate * len(manipulated))]]).values


@dataclass(frozen=True)
class TaskData:
    """What a :class:`Task` is built from besides the models: a benchmark :class:`Setting`
    (:meth:`from_setting`) or a user's data (``fix.correct``). Tensors may live anywhere; :func:`make_task` puts
    the labels and trigger flags on the runtime's device."""

    bank: ImageBank
    labels: torch.Tensor  # given labels of every image of the bank (validation images: their own labels)
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    seed: int
    triggered: torch.Tensor  # which images the bank stamps with the trigger
    # the clean reserve (corrective_unlearning.reserve): bank indices a method may train on, disjoint from val_idx
    # (then the selection split only) and from training; None = no reserve
    clean_idx: torch.Tensor | None = None

    @classmethod
    def from_setting(cls, setting: Setting) -> TaskData:
        m = setting.manipulated
        return cls(bank=setting.train_bank, labels=m.labels, train_idx=setting.train_idx, val_idx=setting.val_idx,
                   val_labels=m.clean_labels[setting.val_idx], num_classes=setting.dataset.num_classes,
                   seed=setting.seed, triggered=m.triggered, clean_idx=setting.clean_idx)


def make_task(data: Setting | TaskData, original: nn.Module, forget: torch.Tensor | None, recipe: Recipe,
              runtime: Runtime, info: OriginalInfo | None = None) -> Task:
    """The task of one deletion set ``forget``: retain = the training indices outside it (``forget`` None: the 0%
    discovery column, an empty S_f that only methods needing no flagged sample accept; an empty tensor is refused
    as before). The data's clean reserve, if any, goes with the task. For a :class:`Setting`,
    the task's ``memorization`` capability reads the original's proxy scores through
    :func:`~corrective_unlearning.proxies.memorization_scores` with ``info`` from :func:`train_original`
    (without ``info``, only scores kept with the model object in memory and proxies that need no record of the
    original can be read); a user's :class:`TaskData` has no proxy record to read, so no capability."""
    memorization = _memorization(data, original, info, runtime) if isinstance(data, Setting) else None
    source = TaskData.from_setting(data) if isinstance(data, Setting) else data
    device = runtime.device
    empty = forget is None  # the 0% discovery column
    if empty:
        forget = torch.empty(0, dtype=torch.long)
    return Task(
        original=original,
        bank=source.bank,
        labels=source.labels.to(device),
        forget_idx=forget,
        retain_idx=source.train_idx[~torch.isin(source.train_idx, forget)],
        val_idx=source.val_idx,
        val_labels=source.val_labels,
        num_classes=source.num_classes,
        recipe=recipe,
        runtime=runtime,
        seed=source.seed,
        _triggered=source.triggered.to(device),
        memorization=memorization,
        clean_idx=source.clean_idx,  # clean reserve (None without one)
        allow_empty_forget=empty,  # the 0% discovery column
    )


def _memorization(setting: Setting, original: nn.Module, info: OriginalInfo | None,
                  runtime: Runtime) -> Callable[[str, dict], torch.Tensor]:
    def memorization(name: str, params: dict) -> torch.Tensor:
        return memorization_scores(name, setting, original, info or {}, runtime, **params)

    return memorization


# ``evaluate`` (imported above) is :func:`corrective_unlearning.evaluation.evaluate`, the one evaluation path; it is
# importable from here, where the setting it evaluates is built.
__all__ = ["OriginalInfo", "Setting", "TaskData", "build_setting", "checkpoint_score", "clean_surrogate",
           "deletion_set", "evaluate", "make_task", "new_model", "original_spec", "train_original"]
