"""The held-out retraining proxy (SPEC 7b; RUM's ``heldout_retrain.py``): fine-tune a copy of the original on
held-out data, then score every training example by the symmetric KL ``[KL(p||q) + KL(q||p)] / 2`` between the
two models' softmax outputs (probabilities clamped at 1e-10). Higher = more memorized: an example the original
memorized is one whose prediction moves when the model sees only other data.

Held-out data is the *validation split* with its clean labels (RUM fine-tunes on the test set, which this project
never reads). The fine-tuning follows RUM's settings scaled to the original's recipe: SGD with the recipe's base
learning rate (RUM: 0.1, its original lr), momentum and weight decay, a constant rate, the recipe's batch size
and augmentation, for ``epochs`` passes over the split (RUM: up to 30 with an early stop after 4 epochs without
improvement; there is no early stop here). Predictions are in eval mode, unshuffled and index-keyed, each
training sample with its trigger where it carries one.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..cache import originals_cache
from ..evaluation.predict import logits
from ..training import ImageBank, Recipe, train
from . import proxy
from .store import over_training_split

EPS = 1e-10  # RUM's probability clamp


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Per row, ``[KL(p||q) + KL(q||p)] / 2`` of the softmaxes of two ``[N, C]`` logit tensors (float32)."""
    p = p_logits.float().softmax(1).clamp_min(eps)
    q = q_logits.float().softmax(1).clamp_min(eps)
    log_ratio = p.log() - q.log()
    return 0.5 * ((p * log_ratio).sum(1) - (q * log_ratio).sum(1))


def model_divergence(first: nn.Module, second: nn.Module, bank: ImageBank, indices: torch.Tensor, runtime,
                     stamp: torch.Tensor | bool = False) -> torch.Tensor:
    """Symmetric KL between two models' predictions on ``bank[indices]``; row ``k`` for ``indices[k]``."""
    return symmetric_kl(logits(first, bank, indices, runtime, stamp), logits(second, bank, indices, runtime, stamp))


def finetune_on_validation(original: nn.Module, setting, runtime, recipe: Recipe, epochs: int = 10,
                           lr: float | None = None, seed: int = 0, augment: bool = True) -> nn.Module:
    """A copy of ``original`` fine-tuned on ``setting.val_idx`` with clean labels (the original is untouched).

    ``lr`` None = the recipe's base rate. Refuses a setting without a validation split."""
    val = setting.val_idx
    if len(val) == 0:
        raise ValueError("the held-out proxy fine-tunes on the validation split, and this setting has none "
                         "(val_size=0): set dataset.val_size > 0 (the test set is never used instead)")
    if epochs < 1:
        raise ValueError(f"heldout epochs must be >= 1, got {epochs}")
    batch = min(recipe.batch_size, len(val))
    finetune = recipe.replace(
        steps=epochs * max(1, len(val) // batch), batch_size=batch, lr=recipe.lr if lr is None else lr,
        schedule="constant", checkpoint="last", eval_every=0,
        crop_padding=recipe.crop_padding if augment else 0, flip=recipe.flip and augment)
    model = copy.deepcopy(original)
    m = setting.manipulated
    train(model, setting.train_bank, m.clean_labels, val, finetune, seed=seed, runtime=runtime,
          triggered=m.triggered, desc="held-out fine-tune")
    return model


def heldout_scores(original: nn.Module, setting, runtime, recipe: Recipe, epochs: int = 10,
                   lr: float | None = None, seed: int = 0, augment: bool = True) -> torch.Tensor:
    """Symmetric KL between ``original`` and its copy fine-tuned on the validation split, over the training split
    (NaN outside ``setting.train_idx``)."""
    tuned = finetune_on_validation(original, setting, runtime, recipe, epochs, lr, seed, augment)
    idx = setting.train_idx
    divergence = model_divergence(original, tuned, setting.train_bank, idx, runtime,
                                  stamp=setting.manipulated.triggered[idx])
    return over_training_split(divergence, idx, len(setting.manipulated.labels))


def original_recipe(info: dict) -> Recipe:
    """The recipe the original of ``info`` was trained with: from ``info``, else from its cache sidecar."""
    recipe = info.get("recipe")
    if recipe is None and info.get("cache_key"):
        recipe = ((originals_cache().sidecar(info["cache_key"]) or {}).get("spec") or {}).get("recipe")
    if recipe is None:
        raise ValueError("the held-out proxy needs the original's recipe: info carries none and its cache entry "
                         "cannot be read; call heldout_scores(..., recipe) directly")
    return recipe if isinstance(recipe, Recipe) else Recipe(**recipe)


@proxy("heldout", params={"epochs": 10, "lr": None, "seed": 0, "augment": True},
       summary="symmetric KL between the original and a copy fine-tuned on the validation split")
def _heldout(original: nn.Module, setting, runtime, info: dict, **params) -> torch.Tensor:
    return heldout_scores(original, setting, runtime, original_recipe(info), **params)
