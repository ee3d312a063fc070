"""SIG: a horizontal sinusoid added to every channel, ``x'[c, i, j] = clip(x + delta sin(2 pi j f / W))``.

Barni, Kallas & Tondi, "A new backdoor attack in CNNs by training set corruption without label poisoning" (2019),
as BackdoorBench implements it (``utils/bd_img_transform/sig.py``, ``config/attack/sig/default.yaml``): the
signal varies along the columns j (the image's width W; constant down each column) and is the same on every
channel, ``delta`` 40, ``f`` 6 (here ``frequency``), on training and test images alike.

SIG is a clean-label attack: the poisoned training images are drawn from the target class and keep their labels,
which the poison manipulation does with ``clean_label: true`` (``trigger: {name: sig}`` alone relabels them, as a
dirty-label attack would). What differs: the sum is rounded half to even where BackdoorBench truncates toward zero
(at most one grey level apart).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import TRIGGERS
from ..checks import param
from .base import Trigger, to_pixels


@TRIGGERS.register("sig")
@dataclass(frozen=True)
class Sig(Trigger):
    delta: float = param(40, low=0, high=255, closed="right")
    frequency: float = param(6, low=0, closed="neither")

    name = "sig"

    def signal(self, width: int, device: torch.device) -> torch.Tensor:
        """The ``[W]`` values added to each row, computed on ``device`` (no transfer)."""
        j = torch.arange(width, device=device, dtype=torch.float32)
        return self.delta * torch.sin(j * (2 * math.pi * self.frequency / width))

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        del indices  # the same signal on every image
        return to_pixels(images.float() + self.signal(images.shape[-1], images.device))
