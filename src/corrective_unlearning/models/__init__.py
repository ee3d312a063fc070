"""Model registry: ``create_model(name, num_classes, in_channels)``.

Adding a model is one file here with a factory decorated by ``@MODELS.register("name")``. A model is any
``nn.Module`` classifier; those built as an ``nn.Sequential`` of blocks support the last-k-blocks method variants
(see :func:`blocks`).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's top-level blocks that hold parameters, input to output."""
    return [child for child in model.children() if any(True for _ in child.parameters())]


from . import resnet9, small_cnn, wideresnet  # noqa: E402,F401  (registration)
from .folding import fold_batchnorm  # noqa: E402

__all__ = ["MODELS", "blocks", "create_model", "fold_batchnorm"]
