"""ResNet-9 exactly as the reference code builds it (SPEC section 3), about 2.3 M parameters for 10 classes."""
from __future__ import annotations

from torch import nn

from . import MODELS


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=True),
        nn.BatchNorm2d(c_out),
        nn.CELU(alpha=0.075),
    )


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


@MODELS.register("resnet9")
def resnet9(num_classes: int, in_channels: int = 3) -> nn.Sequential:
    return nn.Sequential(
        conv_bn(in_channels, 64),
        conv_bn(64, 128, kernel=5, stride=2, padding=2),
        Residual(128),
        nn.Sequential(conv_bn(128, 256), nn.MaxPool2d(2)),
        Residual(256),
        conv_bn(256, 128, kernel=3, padding=0),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes, bias=False),
    )
