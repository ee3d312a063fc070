"""BppAttack's trigger: colour depth reduced to ``levels`` values per channel,
``x' = round(round(x / 255 (L - 1)) / (L - 1) 255)``.

Wang, Zhai & Ma, "BppAttack: Stealthy and efficient trojan attacks against deep neural networks via image
quantization and contrastive adversarial learning" (CVPR 2022), as BackdoorBench implements it (``attack/bpp.py``,
``config/attack/bpp/default.yaml``): ``squeeze_num`` 8 (here ``levels``), ``dithering: False``; the same
quantisation on training and test images.

What differs: only the poisoned images are stamped. BackdoorBench's bpp also trains on negative samples
(``neg_ratio``: randomly perturbed images keeping their labels) and, with ``dithering``, Floyd-Steinberg error
diffusion; neither is here. BackdoorBench keeps the quantised values as floats (k 255 / (L - 1)); they are rounded
half to even to uint8 here (with an even L - 1 a value can fall midway, e.g. 127.5 -> 128 for 3 levels).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import TRIGGERS
from ..checks import param
from .base import Trigger, to_pixels


@TRIGGERS.register("bpp")
@dataclass(frozen=True)
class Bpp(Trigger):
    levels: int = param(8, low=2, high=255)

    name = "bpp"

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        del indices  # a pointwise map, the same on every image
        steps = self.levels - 1
        # x * steps is exact in float32 and x * steps / 255 never falls midway (2 x steps is even, 255 odd); the
        # product level * 255 is exact, so the division is correctly rounded and a midway value stays midway.
        level = torch.round(images.float() * steps / 255)
        return to_pixels(level * 255 / steps)
