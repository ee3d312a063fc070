"""A small CNN for 28x28 grayscale images (Fashion-MNIST), sized to train in well under a minute on a CPU.

Pooling comes early so that the wide layers run at 7x7: about 3.7 M multiply-adds per image.
"""
from __future__ import annotations

from torch import nn

from . import MODELS
from .resnet9 import conv_bn


@MODELS.register("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 1, width: int = 16) -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(conv_bn(in_channels, width), nn.MaxPool2d(2)),
        nn.Sequential(conv_bn(width, 2 * width), nn.MaxPool2d(2)),
        conv_bn(2 * width, 4 * width),
        conv_bn(4 * width, 4 * width),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes, bias=False),
    )
