"""Inference-only copies of a model: batch norm folded into the convolution before it.

A frozen teacher (SCRUB, BadT) runs one forward pass per training step. In eval mode a BatchNorm2d right after a
Conv2d is an affine map per channel, so it can be merged into the convolution's weights and bias: the same
function with one kernel fewer per block. Batch norm that comes before its convolution (pre-activation blocks, as
in the WideResNet) is left as it is.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``model`` with every Conv2d -> BatchNorm2d pair inside an ``nn.Sequential``
    merged into one Conv2d. The original is untouched."""
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            _fold_children(module)
    return folded


def _fold_children(sequence: nn.Sequential) -> None:
    names = list(sequence._modules)
    for first, second in zip(names, names[1:]):
        conv, norm = sequence._modules[first], sequence._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
            sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
            sequence._modules[second] = nn.Identity()
