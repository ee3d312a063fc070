"""Model registry: ``create_model(name, num_classes, in_channels)``.

Adding a model is one file here with a factory decorated by ``@MODELS.register("name")``. A model is any
``nn.Module`` classifier; those built as an ``nn.Sequential`` of blocks support the last-k-blocks method variants
(see :func:`blocks`).
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int | None = None,
                 **kwargs) -> nn.Module:
    """The registered model ``name``. ``image_size`` (the data's side in pixels) reaches only factories that take
    an ``image_size`` parameter (``vit_small``: its position embedding); the others ignore it."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    factory = MODELS.get(name)
    if image_size is not None and "image_size" in inspect.signature(factory).parameters:
        kwargs.setdefault("image_size", image_size)
    return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's top-level blocks that hold parameters, input to output."""
    return [child for child in model.children() if any(True for _ in child.parameters())]


def layer_units(model: nn.Module) -> list[nn.Module]:
    """The units a last-k variant may split between, input to output: the model's own ``layer_units()`` when it
    defines one (WRN-28x10 splits inside its stages), else its top-level blocks."""
    units = getattr(model, "layer_units", None)
    return list(units()) if callable(units) else blocks(model)


def weight_layers(module: nn.Module) -> int:
    """How many layers ``module`` counts for in the reference's last-k numbering: its convolutions with a
    kernel larger than 1x1 (shortcut projections do not count) and its linear layers."""
    return sum(1 for m in module.modules()
               if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)))


def split_last_k(model: nn.Module, k: int | str) -> tuple[list[nn.Module], list[nn.Module]]:
    """(frozen, trainable) units when only the last ``k`` weight layers train, numbered as in the reference:
    ResNet-9 is [conv1, conv2, res1 (2 layers), conv3, res2 (2), conv4, fc], so k = 2 trains conv4 + fc and
    k = 4 trains res2 + conv4 + fc; WRN-28x10 counts two layers per wide block, so k = 5 trains the last two
    blocks of the last stage, the final batch norm and fc. ``k = "all"`` trains everything."""
    units = layer_units(model)
    if k == "all":
        return [], units
    total, valid = 0, []
    for i in range(len(units) - 1, -1, -1):
        total += weight_layers(units[i])
        if total == k and isinstance(k, int) and not isinstance(k, bool):
            return units[:i], units[i:]
        valid.append(total)
    raise ValueError(f"last_k must be 'all' or a number of layers that ends on a block boundary of this model, "
                     f"one of {sorted(set(valid) - {0})}; got {k!r}")


from . import preact_resnet18, resnet18, resnet9, small_cnn, vit_small, wideresnet  # noqa: E402,F401  (registration)
from .folding import fold_batchnorm  # noqa: E402

__all__ = ["MODELS", "blocks", "create_model", "fold_batchnorm", "layer_units", "split_last_k", "weight_layers"]
