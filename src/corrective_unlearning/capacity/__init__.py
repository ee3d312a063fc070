"""Spare capacity for REM (SPEC section 6): widen a trained network with extra channels whose outgoing weights
start at zero (same function), switch spare channels per example with masks computed on the fly from example
indices (one shared mask for identified samples), run inference with spare capacity off, and narrow back to the
original architecture.

    wide = widen(model, spare_fraction=1.0)          # p_on = 0.2 by default
    wide.shared_mask_for(identified_indices)
    with wide.masks(batch_indices):
        logits = wide(x)                             # each example's own mask (or the shared one)
    logits = wide(x)                                 # spare capacity off (default; inference)
    deployable = narrow(wide)                        # original shapes; loads into create_model(...)

Capacity-restricted training (a recipe's ``spare_capacity``) trains :func:`restricted_model` with the spare
capacity off; :func:`trained_spare` gives REM that wide network back from the deployed, narrowed one.

Supported: models built from ``conv_bn`` blocks and ``Residual`` (``resnet9``, ``small_cnn``), in
:mod:`.sequential_cnn`; WideResNet-28x10 (``wrn28x10``), in :mod:`.wideresnet`; ResNet-18 and PreAct-ResNet18
(``resnet18``, ``preact_resnet18``: every basic block's inner channels), in :mod:`.resnet18`; the ViT (``vit_small``,
``vit_tiny``: spare hidden units in every MLP block), in :mod:`.vit`. A user block takes part by implementing
:class:`SpareCapable`; anything else raises :class:`UnsupportedModelError` naming the block.
"""
from __future__ import annotations

from . import resnet18, sequential_cnn, vit, wideresnet  # noqa: F401  (registers handlers)
from .core import (WIDEN_PARAMS, SpareCapable, UnsupportedModelError, WideModel, WidenContext, narrow, widen, widen_bn,
                   widen_conv, widen_linear)
from .masks import MaskState, SpareMask, spare_bits
from .restricted import deployable, restricted_model, trained_spare

__all__ = ["WIDEN_PARAMS", "MaskState", "SpareCapable", "SpareMask", "UnsupportedModelError", "WideModel",
           "WidenContext", "deployable", "narrow", "restricted_model", "spare_bits", "trained_spare", "widen",
           "widen_bn", "widen_conv", "widen_linear"]
