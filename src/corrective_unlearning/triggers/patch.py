"""BadNets' patch: a square in a corner, solid (the reference's trigger) or a checkerboard (BadNets' pattern
backdoor for MNIST), stamped on every channel.

On dark-background data such as Fashion-MNIST a solid white square looks like clothing and the network's
clean-data features absorb it; a checkerboard does not occur naturally. Stamped after augmentation, so it never
moves (as in the reference code); white pixels before normalisation equal the normalised maximum after it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import TRIGGERS
from ..checks import param
from .base import Trigger, TriggerError

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
PATTERNS = ("square", "checkerboard")


@TRIGGERS.register("patch")
@dataclass(frozen=True)
class Patch(Trigger):
    size: int = param(3, low=1)
    position: str = param("bottom-right", choices=CORNERS)
    value: int = param(255, low=0, high=255)
    pattern: str = param("square", choices=PATTERNS)

    name = "patch"

    def region(self, height: int, width: int) -> tuple[slice, slice]:
        if self.size > min(height, width):
            raise TriggerError(f"trigger patch: size must be at most the image side {min(height, width)}, "
                               f"got {self.size}")
        rows = slice(height - self.size, height) if self.position.startswith("bottom") else slice(0, self.size)
        cols = slice(width - self.size, width) if self.position.endswith("right") else slice(0, self.size)
        return rows, cols

    def patch(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The ``[size, size]`` pixel values the trigger writes."""
        if self.pattern == "square":
            return torch.full((self.size, self.size), self.value, dtype=dtype, device=device)
        i = torch.arange(self.size, device=device)
        return torch.where((i[:, None] + i[None, :]) % 2 == 0, self.value, 0).to(dtype)

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        del indices  # the same patch on every image
        rows, cols = self.region(images.shape[-2], images.shape[-1])
        stamped = images.clone()
        stamped[..., rows, cols] = self.patch(images.dtype, images.device)
        return stamped
