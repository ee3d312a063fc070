"""A tiny learnable dataset for tests: each class is a fixed random pattern plus pixel noise."""
from __future__ import annotations

import torch

from . import SOURCES
from .base import ImageDataset, content_checksum


@SOURCES.register("synthetic")
def load_synthetic(
    num_classes: int = 4,
    train_size: int = 384,
    test_size: int = 192,
    image_size: int = 16,
    channels: int = 3,
    noise: float = 40.0,
    seed: int = 0,
    **_ignored,
) -> ImageDataset:
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(num_classes, channels, image_size, image_size, generator=generator) * 160 + 48

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        pixels = prototypes[labels] + noise * torch.randn(n, channels, image_size, image_size, generator=generator)
        return pixels.clamp(0, 255).round().to(torch.uint8), labels.long()

    x_train, y_train = split(train_size)
    x_test, y_test = split(test_size)
    return ImageDataset(
        name="synthetic",
        train_images=x_train,
        train_labels=y_train,
        test_images=x_test,
        test_labels=y_test,
        classes=tuple(f"class{c}" for c in range(num_classes)),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        checksum=content_checksum(x_train, y_train, x_test, y_test),
        origin=f"synthetic(seed={seed})",
    )
