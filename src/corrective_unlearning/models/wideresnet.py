"""WideResNet-28x10 with pre-activation wide basic blocks (BN-ReLU-conv), widths 160/320/640."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import MODELS


class WideBasic(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=stride, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class Head(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.linear(F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1))


class WideResNet(nn.Sequential):
    """[conv1, stage1, stage2, stage3, head]; a last-k variant splits between wide blocks, and between the
    head's batch norm and its linear layer, as the reference does."""

    def layer_units(self) -> list[nn.Module]:
        conv1, *stages, head = self
        return [conv1, *(block for stage in stages for block in stage), head.bn, head.linear]


@MODELS.register("wrn28x10")
def wide_resnet(num_classes: int, in_channels: int = 3, depth: int = 28, widen: int = 10, dropout: float = 0.0):
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6k + 4, got {depth}")
    per_stage = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
    c_in = widths[0]
    for stage, stride in zip(widths[1:], (1, 2, 2)):
        stage_blocks = []
        for i in range(per_stage):
            stage_blocks.append(WideBasic(c_in, stage, stride if i == 0 else 1, dropout))
            c_in = stage
        layers.append(nn.Sequential(*stage_blocks))
    layers.append(Head(c_in, num_classes))
    return WideResNet(*layers)
