"""Spare capacity for ResNet-18 (post-activation ``BasicBlock``) and PreAct-ResNet18 (``PreActBlock``): every basic
block's *inner* channels are widened, the trunk is not.

Inside a block, the first 3x3 convolution gets ``s = ceil(spare_fraction * c)`` fresh output channels (with
neutral batch-norm channels after it: ``bn1`` in a post-activation block, ``bn2`` in a pre-activation one), and the
second 3x3 convolution reads them through a :class:`SpareMask` at its input (:class:`MaskedInputConv2d`, as
WideResNet's widening does, because the block calls ``F.relu`` and has no module slot after the activation) with
zero weights into its original outputs and no spare outputs. So the block's output, the shortcut, the stem, the
pooling and the classifier keep their original shapes: the spare units are per-block hidden channels, one mask per
block (8 in all), and with the spare capacity off the second convolution never sees a spare value, so the
narrowed model equals the wide model in ``"off"`` mode. Widening the trunk as well (as WideResNet's does) would
add spare channels to every shortcut and the stem; the inner channels already give REM a spare path in every
block, with the block's two weight layers as the reference's capacity unit.
"""
from __future__ import annotations

from torch import nn

from ..models.preact_resnet18 import PreActBlock, PreActResNet18
from ..models.resnet18 import BasicBlock, ResNet18
from .core import UnsupportedModelError, WidenContext, register, widen_bn, widen_conv
from .wideresnet import MaskedInputConv2d


def _masked_input(conv: nn.Conv2d, n_orig: int, extra_in: int, ctx: WidenContext) -> nn.Conv2d:
    conv.__class__ = MaskedInputConv2d
    conv.spare_mask = ctx.new_mask(n_orig, extra_in)
    return conv


@register(ResNet18)
@register(PreActResNet18)
def _resnet18(model: ResNet18, extra_in: int, ctx: WidenContext):
    if extra_in:
        raise UnsupportedModelError(f"capacity.widen: {ctx.where()}: a ResNet-18 takes no spare input channels")
    for i in range(1, 5):
        stage = model[i]
        for j, block in enumerate(stage):
            stage[j], _ = ctx.widen(block, 0, f"{i}.{j}")
    return model, 0


@register(BasicBlock)
@register(PreActBlock)
def _block(block: BasicBlock | PreActBlock, extra_in: int, ctx: WidenContext):
    if extra_in:
        raise UnsupportedModelError(f"capacity.widen: {ctx.where()}: only a block's inner channels are widened")
    c = block.conv1.out_channels
    s = ctx.spare_for(c)
    block.conv1 = widen_conv(block.conv1, 0, s, ctx.generator)
    if isinstance(block, BasicBlock):
        block.bn1 = widen_bn(block.bn1, s)
    else:
        block.bn2 = widen_bn(block.bn2, s)
    block.conv2 = _masked_input(widen_conv(block.conv2, s, 0, ctx.generator), c, s, ctx)
    return block, 0
