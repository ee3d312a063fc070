"""Whole datasets held on the device as uint8, turned into normalised batches there (crop, flip, trigger)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..triggers import Trigger


class ImageBank:
    """Images ``[N, C, H, W]`` resident on ``device``, with their normalisation and optional trigger: uint8 (the
    datasets' form; scaled to [0, 1], then normalised by ``mean``/``std``) or floating point (a user's data exactly
    as the model reads it: ``mean``/``std`` apply without scaling, pass 0 and 1 to leave it as it is)."""

    def __init__(self, images: torch.Tensor, mean, std, device: torch.device, trigger: Trigger | None = None,
                 channels_last: bool = True):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.trigger = trigger
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.images)

    def batch(
        self,
        indices: torch.Tensor,
        stamp: torch.Tensor | bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Normalised float batch of ``images[indices]``.

        ``stamp``: True stamps the trigger on all, a bool tensor on those flagged. The stamp comes after the
        crop and flip, as in the reference, so the patch never moves; a trigger's per-sample perturbation (the
        label-consistent attack's) comes before them, as it is part of the image the adversary supplied.
        """
        indices = indices.to(self.device)
        x = self.images[indices]
        stamping = self.trigger is not None and (stamp is True or isinstance(stamp, torch.Tensor))
        if stamping:
            x = self._where(stamp, self.trigger.perturb(x, indices), x)
        if crop_padding:
            x = random_crop(x, crop_padding, generator)
        if flip:
            x = random_flip(x, generator)
        if stamping:
            x = self._where(stamp, self.trigger.stamp(x, indices), x)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


    def _where(self, stamp: torch.Tensor | bool, stamped: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``stamped`` where ``stamp`` (all when True): a select on the device, no host synchronisation."""
        if stamp is True:
            return stamped
        return torch.where(stamp.to(self.device).view(-1, 1, 1, 1), stamped, x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back at a random offset per image, in one gather."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(len(x), device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
