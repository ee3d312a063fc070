"""PreAct-ResNet18 as BackdoorBench builds it (``models/preact_resnet.py``): a 3x3 stride-1 stem convolution with
no batch norm and no max-pool, four stages of two pre-activation basic blocks (BN-ReLU-conv3x3, BN-ReLU-conv3x3;
64, 128, 256, 512 channels; stages 2-4 downsample by 2, with a 1x1 projection shortcut applied to the block's
pre-activated input), then global average pooling and a linear classifier, with no final batch norm (as
BackdoorBench's has none). About 11.2 M parameters for 10 classes.

``last_k`` numbering (:func:`..models.split_last_k`), the same as ResNet-18's: the units are ``[stem, block1 ..
block8, linear]``; the stem counts 1 layer, every block 2 (a 1x1 projection does not count), the linear layer 1,
18 in all. ``k = 1`` trains the linear layer, ``k = 3`` the last block and the linear layer, ``k = 2j + 1`` the
last ``j`` blocks and the linear layer, ``k = 18`` everything; even ``k`` below 18 is refused.

Default recipe: the dataset's (recipe A on CIFAR, SGD with momentum); BackdoorBench also trains it with SGD.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import MODELS
from .resnet18 import ResNet18, stages


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut (identity on ``x``, or a 1x1 conv on the
    pre-activated input when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(ResNet18):
    """[stem, layer1, layer2, layer3, layer4, pool, flatten, linear], split for last-k as ResNet-18 is."""


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int = 3) -> PreActResNet18:
    stem = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
    return PreActResNet18(stem, *stages(PreActBlock), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(512, num_classes))
