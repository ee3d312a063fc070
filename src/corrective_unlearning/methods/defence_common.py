"""Pieces the clean-data defences share (ft_clean, nad, anp, i-bau, ft_after): the reserve's training budget in
BackdoorBench's terms (epochs over the clean data), fine-tuning on the reserve, and the feature layers a defence
reads. The reserve itself (which samples, how many, the refusal without one) is :mod:`..reserve`."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models import layer_units
from .task import Task


def clean_steps(clean_count: int, batch_size: int, epochs: float, steps: int | None = None) -> int:
    """Optimiser steps of ``epochs`` passes over ``clean_count`` samples at ``batch_size`` (the batch is capped at
    the reserve's size, as the trainer caps it), or ``steps`` where given."""
    if steps is not None:
        return max(1, int(steps))
    batch = max(1, min(batch_size, clean_count))
    return max(1, math.ceil(epochs * clean_count / batch))


def finetune_on_reserve(task: Task, model: nn.Module, clean: torch.Tensor, hp: dict, desc: str,
                        epochs_key: str = "epochs", lr_key: str = "lr", loss_fn=None) -> int:
    """Fine-tune ``model`` in place on the reserve indices ``clean`` with the task's recipe shape (SGD with the
    recipe's momentum and warm-up/linear decay; augmentation as in training) at the defence's batch size, lr and
    weight decay for ``hp[epochs_key]`` epochs (or ``hp["steps"]``). Returns the steps taken."""
    steps = clean_steps(len(clean), hp["batch_size"], hp[epochs_key], hp.get("steps"))
    recipe = task.recipe.replace(steps=steps, batch_size=hp["batch_size"], lr=hp[lr_key],
                                 weight_decay=hp["weight_decay"])
    kwargs = {} if loss_fn is None else {"loss_fn": loss_fn}
    task.fit(model, clean, recipe, desc=desc, **kwargs)
    return steps


@torch.no_grad()
def feature_units(model: nn.Module, example: torch.Tensor, count: int) -> list[nn.Module]:
    """The last ``count`` of ``model``'s layer units (``models.layer_units``: its top-level blocks, or a model's
    own ``layer_units``) whose output is a feature map ``[B, C, H, W]``: BackdoorBench's NAD reads the outputs of
    PreAct-ResNet18's last three stages (layer2-4); a model without named stages gets its last three convolutional
    blocks (small_cnn: block 2 with its pooling, conv 3, conv 4; ResNet-9: conv 3 with its pooling, res 2,
    conv 4)."""
    shapes: dict[int, int] = {}
    units = layer_units(model)
    hooks = [unit.register_forward_hook(lambda m, i, o, k=k: shapes.__setitem__(k, o.dim()))
             for k, unit in enumerate(units)]
    was_training = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    maps = [units[k] for k in sorted(shapes) if shapes[k] == 4]
    if len(maps) < count:
        raise ValueError(f"the model has {len(maps)} layer unit(s) with a feature-map output; {count} are needed")
    return maps[-count:]
