"""WaNet (Nguyen & Tran, ICLR 2021): a fixed, smooth warp of the whole image instead of a visible patch.

Defaults are BackdoorBench's (``config/attack/wanet/default.yaml``: k 4, s 0.5, grid_rescale 1, cross_ratio 2).
The field is drawn once per setting from the run's seed: a ``[1, 2, k, k]`` uniform(-1, 1) control grid divided by
its mean absolute value, upsampled bicubically to ``H x W`` (align_corners), added as ``strength * field / H`` to
the identity sampling grid (``linspace(-1, 1)`` on both axes; last dimension x then y, as ``grid_sample`` reads
it), scaled by ``grid_rescale`` and clamped to [-1, 1]. Stamping resamples the image with
``grid_sample(align_corners=True)`` (bilinear, zero padding) and rounds back to uint8.

Noise mode (``cross_ratio`` > 0, on by default as in the paper): ``round(cross_ratio * n)`` further training
samples, drawn from the candidates outside the poisoned set, are rendered with the warp plus a per-sample random
perturbation of the grid (uniform(-1, 1) / H, clamped) and keep their true labels, so the network learns that only
the exact warp means "target". Here each noise sample's perturbed grid is drawn once at build time and looked up by
training index (BackdoorBench draws new noise every batch); the test images get :meth:`for_test`, without them.
As every trigger in this package, the warp is applied after crop and flip (WaNet's code warps before its
augmentation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import TRIGGERS
from ..checks import Param, param
from .base import Trigger, TriggerContext, TriggerError, check_params, sample_generator, to_pixels

FIELD_SALT = 0x57414E01  # the warp field's stream
NOISE_SALT = 0x57414E02  # the noise samples' choice and their per-sample grids


def identity_grid(height: int, width: int) -> torch.Tensor:
    """``[1, H, W, 2]``: the sampling grid that reproduces the image under ``grid_sample(align_corners=True)``."""
    rows = torch.linspace(-1, 1, height)
    cols = torch.linspace(-1, 1, width)
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack((x, y), dim=-1)[None]


@TRIGGERS.register("wanet")
@dataclass(frozen=True)
class WaNet(Trigger):
    k: int = param(4, low=2)
    strength: float = param(0.5, low=0)
    grid_rescale: float = param(1.0, low=0)  # and > 0, below (its message predates the open interval)
    cross_ratio: float = param(2.0, low=0)

    # Derived in build: the warp grid [1, H, W, 2]; the noise samples' training indices (sorted), their grids
    # [M, H, W, 2], and a lookup training index -> row of that table (-1: not a noise sample).
    _grid: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _noise_indices: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _noise_grids: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _noise_rows: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    name = "wanet"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grid_rescale <= 0:
            raise TriggerError(f"trigger wanet: grid_rescale must be > 0, got {self.grid_rescale!r}")

    @classmethod
    def build(cls, context: TriggerContext, **params) -> "WaNet":
        trigger = cls(**params)
        _, height, width = context.shape
        check_params("wanet", {"k": trigger.k}, {"k": Param(int, low=2, high=min(height, width))}, "trigger wanet")
        object.__setattr__(trigger, "_grid", trigger.warp_grid(height, width, sample_generator(context.seed,
                                                                                                 FIELD_SALT)))
        poisoned = context.poisoned.long()
        count = int(round(trigger.cross_ratio * len(poisoned)))
        pool = context.candidates.long()
        pool = pool[~torch.isin(pool, poisoned)]
        if count > len(pool):
            raise TriggerError(f"trigger wanet: cross_ratio {trigger.cross_ratio!r} asks for {count} noise samples "
                               f"({trigger.cross_ratio!r} x {len(poisoned)} poisoned) but only {len(pool)} "
                               f"candidates lie outside the poisoned set; lower cross_ratio or n")
        generator = sample_generator(context.seed, NOISE_SALT)
        noise = pool[torch.randperm(len(pool), generator=generator)[:count]].sort().values
        jitter = torch.rand(count, height, width, 2, generator=generator) * 2 - 1
        grids = (trigger._grid + jitter / height).clamp(-1, 1)
        size = max(len(context.labels) if context.labels is not None else 0,
                   int(pool.max()) + 1 if len(pool) else 0, int(poisoned.max()) + 1 if len(poisoned) else 0)
        rows = torch.full((size,), -1, dtype=torch.long)
        rows[noise] = torch.arange(count)
        object.__setattr__(trigger, "_noise_indices", noise)
        object.__setattr__(trigger, "_noise_grids", grids)
        object.__setattr__(trigger, "_noise_rows", rows)
        return trigger

    def warp_grid(self, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """The sampling grid ``[1, H, W, 2]`` of the warp, from one draw of the ``k x k`` control field."""
        control = torch.rand(1, 2, self.k, self.k, generator=generator) * 2 - 1
        control = control / control.abs().mean()
        field_ = F.interpolate(control, size=(height, width), mode="bicubic", align_corners=True)
        grid = identity_grid(height, width) + self.strength * field_.permute(0, 2, 3, 1) / height
        return (grid * self.grid_rescale).clamp(-1, 1)

    def _device_tables(self, device: torch.device) -> tuple:
        noise = self._noise_grids is not None and len(self._noise_grids) > 0
        return self.on_device((), device, lambda to: (self._grid.to(to),
                                                      self._noise_grids.to(to) if noise else None,
                                                      self._noise_rows.to(to) if noise else None))

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        if self._grid is None:
            raise TriggerError("trigger wanet: the warp field is drawn from the run's seed; build the trigger "
                               "with WaNet.build(context, ...) before stamping")
        grid, noise_grids, noise_rows = self._device_tables(images.device)
        b, _, height, width = images.shape
        if tuple(grid.shape[1:3]) != (height, width):
            raise TriggerError(f"trigger wanet: built for {tuple(grid.shape[1:3])} images, got {(height, width)}")
        grids = grid.expand(b, -1, -1, -1)
        if noise_grids is not None and indices is not None:
            rows = noise_rows[indices.to(images.device)]
            grids = torch.where((rows >= 0).view(-1, 1, 1, 1), noise_grids[rows.clamp(min=0)], grids)
        warped = F.grid_sample(images.float(), grids, mode="bilinear", padding_mode="zeros", align_corners=True)
        return to_pixels(warped)

    def for_test(self) -> "WaNet":
        """The warp alone: the test images have no noise samples."""
        return self.copy_without("_noise_indices", "_noise_grids", "_noise_rows")

    @property
    def extra_stamped(self) -> torch.Tensor:
        """The noise samples: warped with a perturbed grid, true labels kept."""
        if self._noise_indices is None:
            return torch.zeros(0, dtype=torch.long)
        return self._noise_indices
