"""Blended: the image mixed with a fixed pattern, ``x' = round((1 - alpha) x + alpha P)`` on every pixel.

Chen et al., "Targeted backdoor attacks on deep learning systems using data poisoning" (2017), as BackdoorBench
implements it (``utils/bd_img_transform/blended.py``, ``config/attack/blended/default.yaml``): ``alpha`` 0.2 for
the training and the test images (``attack_train_blended_alpha``, ``attack_test_blended_alpha``; here ``alpha``
and ``test_alpha``, None meaning the same), the pattern an image file resized to the data's size.

What differs: the default pattern is not BackdoorBench's Hello Kitty picture (not shipped here) but uniform noise
of the data's shape ``[C, H, W]`` (the original paper's random-pattern variant), drawn once from the run's seed;
``pattern: <path>`` reads an image file instead (converted to the data's channel count, resized bilinearly to
H x W, as torchvision's Resize does). The result is rounded half to even where BackdoorBench truncates toward
zero (at most one grey level apart). The recorded parameters name the file, not its content.
"""
from __future__ import annotations

import dataclasses
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checks import param
from . import TRIGGERS
from .base import Trigger, TriggerContext, TriggerError, sample_generator, to_pixels

NOISE = "noise"
SALT = zlib.crc32(b"blend")  # the noise pattern's stream, apart from any other trigger's


@TRIGGERS.register("blend")
@dataclass(frozen=True)
class Blend(Trigger):
    alpha: float = param(0.2, low=0, high=1, closed="right")
    test_alpha: float | None = param(None, low=0, high=1, closed="right")
    pattern: str = NOISE

    _pattern: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    name = "blend"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pattern != NOISE and not Path(self.pattern).expanduser().is_file():
            raise TriggerError(f"trigger blend: pattern must be '{NOISE}' or the path of an image file, "
                               f"got {self.pattern!r} (no such file)")

    @classmethod
    def build(cls, context: TriggerContext, **params) -> "Blend":
        trigger = cls(**params)
        channels, height, width = context.shape
        if trigger.pattern == NOISE:
            image = torch.randint(0, 256, (channels, height, width), dtype=torch.uint8,
                                  generator=sample_generator(context.seed, SALT))
        else:
            image = read_pattern(trigger.pattern, channels, height, width)
        object.__setattr__(trigger, "_pattern", image)
        return trigger

    def for_test(self) -> "Blend":
        if self.test_alpha is None or self.test_alpha == self.alpha:
            return self
        test = dataclasses.replace(self, alpha=self.test_alpha)
        object.__setattr__(test, "_pattern", self._pattern)
        return test

    def describe(self) -> dict:
        """The parameters, and for a pattern file the fingerprint of the pattern read from it: the recorded
        parameters (hence the original's cache key) change when the file behind the same path does."""
        described = super().describe()
        if self.pattern != NOISE and self._pattern is not None:
            described["pattern_sha256"] = hashlib.sha256(self._pattern.contiguous().numpy().tobytes()).hexdigest()[:16]
        return described

    def pattern_on(self, device: torch.device) -> torch.Tensor:
        """The ``[C, H, W]`` pattern as float on ``device``, copied there once (no transfer per batch)."""
        if self._pattern is None:
            raise TriggerError("trigger blend: no pattern yet; build it with Blend.build(context, ...)")
        return self.on_device((), device, lambda to: self._pattern.to(device=to, dtype=torch.float32))

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        del indices  # the same pattern on every image
        pattern = self.pattern_on(images.device)
        if tuple(images.shape[1:]) != tuple(pattern.shape):
            raise TriggerError(f"trigger blend: images of shape {tuple(images.shape[1:])}, pattern built for "
                               f"{tuple(pattern.shape)}")
        return to_pixels((1 - self.alpha) * images.float() + self.alpha * pattern)


def read_pattern(path: str, channels: int, height: int, width: int) -> torch.Tensor:
    """uint8 ``[channels, height, width]`` from an image file: grey or RGB, resized bilinearly."""
    from PIL import (
        Image,  # lazy: only a blend pattern read from an image file needs Pillow's decoders
    )

    if channels not in (1, 3):
        raise TriggerError(f"trigger blend: a pattern file needs images of 1 or 3 channels, got {channels}")
    try:
        with Image.open(Path(path).expanduser()) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
    except OSError as error:  # missing, unreadable, or not an image (UnidentifiedImageError)
        raise TriggerError(f"trigger blend: pattern {path!r} cannot be read as an image: {error}") from None
    array = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
