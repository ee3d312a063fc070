"""Spare capacity for WideResNet (pre-activation ``WideBasic`` blocks: BN-ReLU-conv, BN-ReLU-conv, plus an
identity or 1x1 projection shortcut) and its ``Head`` (BN-ReLU-pool-Linear).

The block's code calls ``F.relu`` between layers, so there is no module slot after each activation. Here the
mask sits at the *consumers* instead: every widened convolution (and the head's linear layer) that reads spare
channels masks its input's spare channels first (:class:`MaskedInputConv2d`, :class:`MaskedInputLinear`, which
keep the original parameter names). Spare trunk channels themselves may be non-zero with the spare capacity
off, but no original channel ever reads them unmasked, so the narrowed model still equals the wide model in
``"off"`` mode. Every block output gets ``ceil(spare_fraction * c_out)`` spare channels (stem included), so an
identity shortcut keeps matching shapes.
"""
from __future__ import annotations

from torch import nn

from ..models.wideresnet import Head, WideBasic, WideResNet
from .core import UnsupportedModelError, WidenContext, register, widen_bn, widen_conv, widen_linear
from .masks import SpareMask


class MaskedInputConv2d(nn.Conv2d):
    spare_mask: SpareMask

    def forward(self, x):
        return super().forward(self.spare_mask(x))


class MaskedInputLinear(nn.Linear):
    spare_mask: SpareMask

    def forward(self, x):
        return super().forward(self.spare_mask(x))


def _mask_input(layer: nn.Module, n_orig: int, extra_in: int, ctx: WidenContext) -> nn.Module:
    if extra_in == 0:
        return layer
    layer.__class__ = MaskedInputConv2d if isinstance(layer, nn.Conv2d) else MaskedInputLinear
    layer.spare_mask = ctx.new_mask(n_orig, extra_in)
    return layer


@register(WideResNet)
def _wrn(model: WideResNet, extra_in: int, ctx: WidenContext):
    stem, *stages, head = list(model)
    s = ctx.spare_for(stem.out_channels)
    model[0] = _mask_input(widen_conv(stem, extra_in, s, ctx.generator), stem.in_channels, extra_in, ctx)
    extra = s
    for i, stage in enumerate(stages, start=1):
        model[i], extra = ctx.widen(stage, extra, str(i))
    model[len(model) - 1], extra = ctx.widen(head, extra, str(len(model) - 1))
    return model, extra


@register(WideBasic)
def _wide_basic(block: WideBasic, extra_in: int, ctx: WidenContext):
    c_in, c_out = block.conv1.in_channels, block.conv1.out_channels
    s_mid, s_out = ctx.spare_for(c_out), ctx.spare_for(block.conv2.out_channels)
    block.bn1 = widen_bn(block.bn1, extra_in)
    block.conv1 = _mask_input(widen_conv(block.conv1, extra_in, s_mid, ctx.generator), c_in, extra_in, ctx)
    block.bn2 = widen_bn(block.bn2, s_mid)
    block.conv2 = _mask_input(widen_conv(block.conv2, s_mid, s_out, ctx.generator), c_out, s_mid, ctx)
    if isinstance(block.shortcut, nn.Identity):
        if extra_in != s_out:
            raise UnsupportedModelError(f"capacity.widen: {ctx.where()}: identity shortcut gets {extra_in} spare "
                                        f"channels but the block produces {s_out}")
    else:
        block.shortcut = _mask_input(widen_conv(block.shortcut, extra_in, s_out, ctx.generator), c_in, extra_in, ctx)
    return block, s_out


@register(Head)
def _head(head: Head, extra_in: int, ctx: WidenContext):
    n = head.linear.in_features
    head.bn = widen_bn(head.bn, extra_in)
    head.linear = _mask_input(widen_linear(head.linear, extra_in, 0, ctx.generator), n, extra_in, ctx)
    return head, 0
