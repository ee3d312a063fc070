"""ResNet-18, the CIFAR variant RUM uses (kuangliu's ``pytorch-cifar`` layout): a 3x3 stride-1 stem with no
max-pool, four stages of two post-activation basic blocks (64, 128, 256, 512 channels; stages 2-4 downsample by 2
with a 1x1 projection shortcut), global average pooling and a linear classifier. About 11.2 M parameters for 10
classes.

``last_k`` numbering (:func:`..models.split_last_k`): the units are ``[stem, block1 .. block8, linear]``; the stem
counts 1 layer, every basic block 2 (its two 3x3 convolutions; a 1x1 projection does not count), the linear layer
1, 18 in all. So ``k = 1`` trains the linear layer, ``k = 3`` the last block and the linear layer, ``k = 5`` the
last stage (blocks 7 and 8) and the linear layer, ``k = 2j + 1`` the last ``j`` blocks and the linear layer, and
``k = 18`` everything; even ``k`` below 18 ends inside a block and is refused.

Default recipe: the dataset's (recipe A on CIFAR: SGD with momentum 0.9, weight decay 5e-4, warm-up then linear
decay), as for ResNet-9; RUM trains its ResNet-18 with SGD and momentum too.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import MODELS


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, plus the shortcut (identity, or 1x1 conv + BN when the shape changes), ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Sequential):
    """[stem, layer1, layer2, layer3, layer4, pool, flatten, linear]; a last-k variant splits between basic
    blocks (see the module docstring)."""

    def layer_units(self) -> list[nn.Module]:
        stem, *stages, _pool, _flatten, linear = self
        return [stem, *(block for stage in stages for block in stage), linear]


def stages(block: type, widths=(64, 128, 256, 512), per_stage: int = 2) -> list[nn.Sequential]:
    out, c_in = [], widths[0]
    for i, width in enumerate(widths):
        layer = []
        for j in range(per_stage):
            layer.append(block(c_in, width, 2 if i > 0 and j == 0 else 1))
            c_in = width
        out.append(nn.Sequential(*layer))
    return out


@MODELS.register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3) -> ResNet18:
    stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
    return ResNet18(stem, *stages(BasicBlock), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
