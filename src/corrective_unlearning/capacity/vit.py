"""Spare capacity for the ViT (``vit_small``): spare hidden units in every transformer block's MLP.

Each block's ``FeedForward`` (LayerNorm, fc1: dim -> hidden, GELU, fc2: hidden -> dim) gets
``s = ceil(spare_fraction * hidden)`` extra hidden units: fc1 gains ``s`` fresh output rows, the activation slot
becomes ``Sequential(GELU, TokenSpareMask)``, and fc2 reads the spare units with weights starting at exactly zero.
The residual stream (dim), the attention and the head are unchanged, so every block maps dim -> dim as before and
the original parameter names are kept (the mask holds no state); :func:`narrow` slices fc1/fc2 back.

What is masked, and why hidden units and not token positions: the reference applies its example-tied dropout to
``x.shape[1]`` of a [batch, tokens, dim] tensor, i.e. it drops *token positions* (REFERENCE-NOTES 3.2), because the
channel-wise layer written for [B, C, H, W] maps was reused unchanged. We mask hidden units instead, because:

* REM's idea is dedicated *neurons*: capacity that S_f is routed through and that is switched off at inference.
  A token-position mask adds no parameters, so there is nothing to dedicate or discard; switching it "off" at
  inference would instead delete half of every image's patches for every input.
* The MLP hidden layer is the transformer's analogue of a convolution's channels (a per-token, position-shared
  feature), and the widen-then-narrow protocol (append units, zero their read-out, drop them afterwards) needs
  appended units: with the spare units off the widened model computes the original function, and narrowing gives
  back the deployable architecture.

An example's mask is one bit per spare unit, from the example's index (:func:`..masks.spare_bits`, as for
channels), broadcast over its tokens; the indices registered with ``shared_mask_for`` share one mask.
With the spare units off they are exactly zero, so the function is the original one up to float summation order in
fc2 (the matrix product runs over ``hidden + s`` inputs, the extra ones zero): the tests allow 1e-5 absolute.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.vit_small import ViT
from .core import UnsupportedModelError, WidenContext, register, widen_linear
from .masks import SpareMask


class TokenSpareMask(SpareMask):
    """A :class:`SpareMask` over the *last* dimension of a [batch, tokens, units] tensor: units [n_orig:] are spare
    and get the example's 0/1 mask, the same for all its tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.n_orig + self.n_spare:
            raise ValueError(f"TokenSpareMask expects {self.n_orig}+{self.n_spare} units, got {x.shape[-1]}")
        m = self.mask(x.shape[0]).to(device=x.device, dtype=x.dtype)
        full = torch.cat([torch.ones(x.shape[0], self.n_orig, device=x.device, dtype=x.dtype), m], dim=1)
        return x * full.reshape(x.shape[0], *([1] * (x.dim() - 2)), full.shape[1])


@register(ViT)
def _vit(model: ViT, extra_in: int, ctx: WidenContext):
    if extra_in:  # the ViT is a whole model: nothing feeds it spare channels
        raise UnsupportedModelError(f"capacity.widen: {ctx.where()}: a ViT receives no spare inputs, got {extra_in}")
    for name, block in model.named_children():
        ff = getattr(block, "ff", None)
        if ff is None:
            continue  # the embedding and the head keep their shapes
        ctx.path.append(name)
        try:
            hidden = ff.fc1.out_features
            s = ctx.spare_for(hidden)
            ff.fc1 = widen_linear(ff.fc1, 0, s, ctx.generator)
            ff.act = nn.Sequential(ff.act, TokenSpareMask(len(ctx.masks), hidden, s, ctx.state))
            ctx.masks.append(ff.act[1])
            ff.fc2 = widen_linear(ff.fc2, s, 0, ctx.generator)
        finally:
            ctx.path.pop()
    return model, 0
