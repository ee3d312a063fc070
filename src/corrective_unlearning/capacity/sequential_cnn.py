"""Spare capacity for models built as ``nn.Sequential`` of ``conv_bn`` blocks (Conv2d, BatchNorm2d, activation),
``Residual`` blocks, pooling, ``Flatten`` and a final ``Linear``: the registry's ``resnet9`` and ``small_cnn``.

* Every ``conv_bn`` gets ``s = ceil(spare_fraction * c_out)`` extra output channels: fresh filters, neutral
  batch-norm channels, and a :class:`SpareMask` appended after the activation (the block becomes
  ``Sequential(conv, bn, act, mask)``, so the original parameter names are kept).
* The channel trunk is widened consistently, residual blocks included: a ``Residual(c)`` receives ``c + s``
  channels, and its body (two ``conv_bn(c, c)``) maps ``c + s`` to ``c + s``, so the skip addition keeps matching
  shapes. The residual's spare output is the sum of two masked tensors, zero when the spare capacity is off.
  (Widening only inside the body would leave the trunk's spare channels nowhere to go.)
* The next layer's weights from spare inputs into original outputs are zero, so the function is unchanged; the
  final ``Linear`` reads the spare inputs with zero weights and has no spare outputs.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..models.resnet9 import Residual
from .core import UnsupportedModelError, WidenContext, register, widen_bn, widen_conv, widen_linear

_ACTIVATIONS = (nn.CELU, nn.ReLU, nn.ELU, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


def _is_conv_bn(m: nn.Module) -> bool:
    return (type(m) is nn.Sequential and len(m) == 3 and isinstance(m[0], nn.Conv2d)
            and isinstance(m[1], nn.BatchNorm2d) and isinstance(m[2], _ACTIVATIONS))


@register(nn.Sequential)
def _sequential(module: nn.Sequential, extra_in: int, ctx: WidenContext):
    if _is_conv_bn(module):
        conv, bn, act = module
        s = ctx.spare_for(conv.out_channels)
        ctx.pooled_to_one = False
        return nn.Sequential(widen_conv(conv, extra_in, s, ctx.generator), widen_bn(bn, s), act,
                             ctx.new_mask(conv.out_channels, s)), s
    children = OrderedDict()
    extra = extra_in
    for name, child in module.named_children():
        children[name], extra = ctx.widen(child, extra, name)
    if type(module) is nn.Sequential:
        return nn.Sequential(children), extra
    for name, child in children.items():  # a Sequential subclass: keep its class, swap the children
        module._modules[name] = child
    return module, extra


@register(Residual)
def _residual(module: Residual, extra_in: int, ctx: WidenContext):
    body, extra_out = ctx.widen(module.body, extra_in, "body")
    if extra_out != extra_in:
        raise UnsupportedModelError(f"capacity.widen: {ctx.where()}: residual body maps {extra_in} spare channels "
                                    f"to {extra_out}; the skip connection needs them equal")
    module.body = body
    return module, extra_out


@register(nn.Conv2d)
def _conv(module: nn.Conv2d, extra_in: int, ctx: WidenContext):
    ctx.pooled_to_one = False
    return widen_conv(module, extra_in, 0, ctx.generator), 0


@register(nn.BatchNorm2d)
def _bn(module: nn.BatchNorm2d, extra_in: int, ctx: WidenContext):
    return widen_bn(module, extra_in), extra_in


@register(nn.Linear)
def _linear(module: nn.Linear, extra_in: int, ctx: WidenContext):
    return widen_linear(module, extra_in, 0, ctx.generator), 0


def _passthrough(module, extra_in, ctx):
    return module, extra_in


for _t in (*_ACTIVATIONS, *_POOLS):
    register(_t)(_passthrough)


@register(nn.AdaptiveMaxPool2d)
@register(nn.AdaptiveAvgPool2d)
def _adaptive_pool(module, extra_in, ctx: WidenContext):
    ctx.pooled_to_one = module.output_size in (1, (1, 1))
    return module, extra_in


@register(nn.Flatten)
def _flatten(module: nn.Flatten, extra_in: int, ctx: WidenContext):
    if extra_in and not ctx.pooled_to_one:
        raise UnsupportedModelError(f"capacity.widen: {ctx.where()}: Flatten over a spatial map would interleave "
                                    f"spare channels with original ones; pool to 1x1 first")
    return module, extra_in
