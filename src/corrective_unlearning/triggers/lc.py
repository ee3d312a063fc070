"""The label-consistent attack (Turner, Tsipras & Madry, 2019): target-class images made hard to classify by an
adversarial perturbation, then stamped; they keep their (correct) labels, so only the trigger explains them.

Use it with the poison manipulation's ``clean_label: true`` (the poisoned samples are then drawn from the target
class); anything else is refused. Build: the clean surrogate (``context.surrogate()``, a model the product trains on
the clean training split and caches) is attacked with L-inf PGD, untargeted on the true (target) label: ``steps``
signed-gradient steps of ``step_size`` maximising its cross-entropy on the normalised input it reads, each projected
back to ``eps`` of the clean image and to [0, 255]. Units are pixels (0-255): ``eps: 16`` is 16/255. The result
is rounded to uint8 and stays within ``floor(eps)`` of the clean pixels; it replaces the poisoned images before crop
and flip (:meth:`perturb`). Defaults: ``eps`` 16 (the bound BackdoorBench's ``attack/lc.py`` reads its
perturbed set for), ``steps`` 100 and ``step_size`` 1.5 from a clean start (the PGD settings of BackdoorBench's
``resource/label-consistent/craft_adv_dataset.py``). BackdoorBench attacks an adversarially trained ResNet-18;
here the surrogate is the dataset's default model trained normally.

The stamp is BackdoorBench's ``all-corners`` pattern (``utils/bd_img_transform/lc.py``, from the authors' code) at
full amplitude (its default ``reduced_amplitude: 1``: +255 or -255, clipped, i.e. white or black): a 3x3 pattern in
each corner, ``[[1, 0, 0], [0, 1, 0], [1, 0, 1]]`` (1 = ``value``, 0 = black) in the left corners and its mirror
image in the right ones. ``patch_size`` other than 3 scales that pattern by nearest neighbour, as BackdoorBench
does for images other than 32x32. Test images get :meth:`for_test`: the stamp without the perturbations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import TRIGGERS
from ..checks import param
from .base import Trigger, TriggerContext, TriggerError, sample_generator, to_pixels

START_SALT = 0x4C4301  # the random start of the PGD, when asked for
PGD_BATCH = 256

# The authors' all-corners trigger, top-left corner (1: the trigger value, 0: black); the right corners mirror it.
CORNER = ((1, 0, 0), (0, 1, 0), (1, 0, 1))


@TRIGGERS.register("lc")
@dataclass(frozen=True)
class LabelConsistent(Trigger):
    eps: float = param(16.0, low=0, high=255)
    steps: int = param(100, low=0)
    step_size: float = param(1.5, low=0, high=255)
    random_start: bool = False
    patch_size: int = param(3, low=1)
    value: int = param(255, low=0, high=255)

    # Derived in build: the perturbed poisoned images (uint8 [M, C, H, W]) and a lookup training index -> their row
    # (-1: not perturbed).
    _adversarial: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _rows: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _on_device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    name = "lc"

    # ------------------------------------------------------------------------------------------------ build
    @classmethod
    def build(cls, context: TriggerContext, **params) -> "LabelConsistent":
        trigger = cls(**params)
        trigger.corner_slices(*context.shape[1:])  # the patch fits the images
        poisoned = context.poisoned.long()
        if context.images is None or context.labels is None:
            raise TriggerError("trigger lc: needs the training images and labels in its context")
        labels = context.labels[poisoned]
        if context.target is None or not bool((labels == context.target).all()):
            found = sorted(set(labels.tolist()) - {context.target})
            raise TriggerError(f"trigger lc: the label-consistent attack perturbs target-class images that keep "
                               f"their labels; use it with clean_label: true (poisoned samples of classes {found} "
                               f"found for target {context.target!r})")
        if context.surrogate is None:
            raise TriggerError("trigger lc: needs a clean surrogate model to craft its perturbations against "
                               "(TriggerContext.surrogate), none was given")
        rows = torch.full((len(context.labels),), -1, dtype=torch.long)
        rows[poisoned] = torch.arange(len(poisoned))
        if len(poisoned):
            adversarial = trigger.attack(context.surrogate(), context.images[poisoned], labels, context)
        else:
            adversarial = context.images[:0].clone()
        object.__setattr__(trigger, "_adversarial", adversarial)
        object.__setattr__(trigger, "_rows", rows)
        return trigger

    def attack(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               context: TriggerContext) -> torch.Tensor:
        """PGD on uint8 ``images`` (CPU) against ``model``: the perturbed uint8 images, on the CPU. The model is
        read in eval mode and left in its own mode; only the input receives gradients."""
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        channels = images.shape[1]
        mean = torch.tensor(context.mean or (0.0,) * channels, device=device).view(1, -1, 1, 1)
        std = torch.tensor(context.std or (1.0,) * channels, device=device).view(1, -1, 1, 1)
        generator = sample_generator(context.seed, START_SALT)
        bound = math.floor(self.eps)
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.enable_grad():
                for start in range(0, len(images), PGD_BATCH):
                    clean = images[start:start + PGD_BATCH].to(device).float()
                    target = labels[start:start + PGD_BATCH].to(device)
                    x = clean.clone()
                    if self.random_start:
                        noise = torch.rand(clean.shape, generator=generator) * 2 - 1
                        x = (x + self.eps * noise.to(device)).clamp(0, 255)
                    for _ in range(self.steps):
                        x.requires_grad_(True)
                        loss = F.cross_entropy(model((x / 255 - mean) / std), target, reduction="sum")
                        (grad,) = torch.autograd.grad(loss, x)
                        x = x.detach() + self.step_size * grad.sign()
                        x = torch.minimum(torch.maximum(x, clean - self.eps), clean + self.eps).clamp(0, 255)
                    delta = (x.detach() - clean).round().clamp(-bound, bound)
                    out.append(to_pixels(clean + delta).cpu())
        finally:
            model.train(was_training)
        return torch.cat(out)

    # ------------------------------------------------------------------------------------------------ apply
    def _device_tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.on_device((), device, lambda to: (self._adversarial.to(to), self._rows.to(to)))

    def perturb(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The poisoned training images replaced by their perturbed versions; others unchanged."""
        if self._adversarial is None or len(self._adversarial) == 0:
            return images
        adversarial, rows = self._device_tables(images.device)
        row = rows[indices.to(images.device)]
        return torch.where((row >= 0).view(-1, 1, 1, 1), adversarial[row.clamp(min=0)], images)

    def corner_slices(self, height: int, width: int) -> list[tuple[slice, slice, bool]]:
        """(rows, cols, mirrored) of the four corners."""
        size = self.patch_size
        if 2 * size > min(height, width):
            raise TriggerError(f"trigger lc: patch_size must be at most half the image side "
                               f"{min(height, width) // 2}, got {size}")
        top, bottom = slice(0, size), slice(height - size, height)
        left, right = slice(0, size), slice(width - size, width)
        return [(top, left, False), (bottom, left, False), (top, right, True), (bottom, right, True)]

    def corner(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The ``[patch_size, patch_size]`` pattern of the left corners."""
        base = torch.tensor(CORNER, dtype=torch.bool, device=device)
        pick = torch.arange(self.patch_size, device=device) * 3 // self.patch_size
        pattern = base[pick][:, pick]
        return torch.where(pattern, self.value, 0).to(dtype)

    def stamp(self, images: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        del indices  # the same four corners on every image
        stamped = images.clone()
        pattern = self.corner(images.dtype, images.device)
        for rows, cols, mirrored in self.corner_slices(images.shape[-2], images.shape[-1]):
            stamped[..., rows, cols] = pattern.flip(-1) if mirrored else pattern
        return stamped

    def for_test(self) -> "LabelConsistent":
        """The four-corner stamp alone: test images are not perturbed."""
        return self.copy_without("_adversarial", "_rows")
