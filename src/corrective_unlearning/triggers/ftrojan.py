"""FTrojan: a fixed bump added to two DCT coefficients of every block of the chroma channels.

Wang et al., "An invisible black-box backdoor attack through frequency domain" (ECCV 2022), as BackdoorBench
implements it (``utils/bd_img_transform/ftrojann.py``, ``config/attack/ftrojannn/default.yaml``): the RGB image is
converted to YCrCb (OpenCV's ``COLOR_RGB2YCrCb``: Y = 0.299 R + 0.587 G + 0.114 B, Cr = 0.713 (R - Y) + 128,
Cb = 0.564 (B - Y) + 128), each channel is cut into ``window_size`` x ``window_size`` blocks (32) and each block
gets an orthonormal 2-D DCT-II (as ``cv2.dct``); ``magnitude`` (30) is added at positions (15, 15) and (31, 31) of
every block of channels 1 and 2 (Cr and Cb), then the inverse DCT and the conversion back to RGB. ``yuv: false``
(BackdoorBench's ``YUV``) works on the RGB channels directly, so channels 1 and 2 are green and blue.

What differs:

- Images smaller than the window use one block of the whole side (28 for MNIST), where BackdoorBench would index
  past the block. The positions are then scaled to the block: p -> round(p (n - 1) / 31) for a side of n, so the
  highest frequency stays the highest and the middle one the middle ((13, 13) and (27, 27) for 28, (7, 7) and
  (15, 15) for 16). A side that is neither smaller than the window nor a multiple of it is refused (BackdoorBench
  would fail on its last, partial block).
- Grayscale images (C = 1) get the bump on their only channel, Y (BackdoorBench handles RGB only).
- Everything stays in float until one final rounding (half to even) and clipping to uint8; BackdoorBench rounds the
  YCrCb image to uint8 before the DCT and casts the inverse DCT to uint8 (truncating, and wrapping values outside
  [0, 255]) before converting back. The conversion back uses the exact inverse of the forward matrix (OpenCV's
  inverse coefficients are rounded to three digits).

The DCT is a block-diagonal matrix product, ``A_H X A_W^T``, batched over images and channels, so it runs on any
device; the matrices are made once per device and image size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import TRIGGERS
from ..checks import param
from .base import Trigger, TriggerContext, TriggerError, to_pixels

REFERENCE_WINDOW = 32
POSITIONS = ((15, 15), (31, 31))  # BackdoorBench's pos_list, in a 32 x 32 block
CHROMA = (1, 2)  # BackdoorBench's channel_list: Cr and Cb (G and B with yuv: false)

# OpenCV's RGB -> YCrCb, offset 128 on the chroma channels
RGB_TO_YCRCB = torch.tensor([[0.299, 0.587, 0.114],
                             [0.713 * (1 - 0.299), -0.713 * 0.587, -0.713 * 0.114],
                             [-0.564 * 0.299, -0.564 * 0.587, 0.564 * (1 - 0.114)]], dtype=torch.float64)
YCRCB_OFFSET = torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64)


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (float64): ``D @ x`` transforms a column of n values."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def scaled_position(p: int, n: int) -> int:
    """Reference position ``p`` (in a 32-block) in a block of side ``n``: round(p (n - 1) / 31), never midway."""
    return (2 * p * (n - 1) + REFERENCE_WINDOW - 1) // (2 * (REFERENCE_WINDOW - 1))


@TRIGGERS.register("ftrojan")
@dataclass(frozen=True)
class FTrojan(Trigger):
    magnitude: float = param(30, low=0)
    window_size: int = param(32, low=2)
    yuv: bool = True

    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    name = "ftrojan"

    @classmethod
    def build(cls, context: TriggerContext, **params) -> "FTrojan":
        trigger = cls(**params)
        trigger.blocks(*context.shape)  # refuses a shape it cannot cut into blocks, when the setting is made
        return trigger

    def blocks(self, channels: int, height: int, width: int) -> tuple[int, int]:
        """The block sides (rows, columns) for images of this shape, or a TriggerError."""
        if channels not in (1, 3):
            raise TriggerError(f"trigger ftrojan: needs images of 1 or 3 channels, got {channels}")
        sides = []
        for side in (height, width):
            n = min(self.window_size, side)
            if side % n:
                raise TriggerError(f"trigger ftrojan: window_size {self.window_size} does not divide the image "
                                   f"side {side}; use a divisor of it, or at least {side} for one block")
            sides.append(n)
        return sides[0], sides[1]

    def bump(self, channels: int, height: int, width: int) -> torch.Tensor:
        """The float64 ``[C, H, W]`` added to the DCT coefficients: ``magnitude`` at the scaled positions of every
        block, on the chroma channels (the only channel of a grayscale image)."""
        n_h, n_w = self.blocks(channels, height, width)
        add = torch.zeros(channels, height, width, dtype=torch.float64)
        for row, col in POSITIONS:
            r, c = scaled_position(row, n_h), scaled_position(col, n_w)
            for channel in (CHROMA if channels == 3 else (0,)):
                add[channel, r::n_h, c::n_w] += self.magnitude
        return add

    def operators(self, shape: tuple[int, int, int], device: torch.device) -> dict:
        """DCT matrices, bump and colour conversion as float32 on ``device``, made there once per image shape."""
        def make(to: torch.device) -> dict:
            channels, height, width = shape
            n_h, n_w = self.blocks(channels, height, width)
            ops = dict(rows=torch.kron(torch.eye(height // n_h, dtype=torch.float64), dct_matrix(n_h)),
                       cols=torch.kron(torch.eye(width // n_w, dtype=torch.float64), dct_matrix(n_w)),
                       bump=self.bump(channels, height, width))
            if self.yuv and channels == 3:
                ops.update(to_yuv=RGB_TO_YCRCB, to_rgb=torch.linalg.inv(RGB_TO_YCRCB),
                           offset=YCRCB_OFFSET.view(3, 1, 1))
            return {k: v.to(device=to, dtype=torch.float32) for k, v in ops.items()}

        return self.on_device(shape, device, make)

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        del indices  # the same coefficients on every image
        ops = self.operators(tuple(images.shape[1:]), images.device)
        x = images.float()
        if "to_yuv" in ops:
            x = torch.einsum("oc,bchw->bohw", ops["to_yuv"], x) + ops["offset"]
        coefficients = ops["rows"] @ x @ ops["cols"].T + ops["bump"]
        x = ops["rows"].T @ coefficients @ ops["cols"]
        if "to_rgb" in ops:
            x = torch.einsum("oc,bchw->bohw", ops["to_rgb"], x - ops["offset"])
        return to_pixels(x)
