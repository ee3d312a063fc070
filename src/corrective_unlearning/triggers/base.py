"""What every trigger is: a stamp on uint8 images ``[B, C, H, W]``, after crop and flip, deterministic per sample.

A trigger is built once per setting from a :class:`TriggerContext` (the image shape, the run's seed, the poisoned
training indices, ...) and its parameters; every random draw it needs (a noise pattern, a warp field) comes from
a generator seeded from that seed, so two identical runs stamp identical pixels. ``stamp`` receives the indices of
the images in their bank (training or test split) so that a per-sample variant (WaNet's noise samples, the
label-consistent attack's adversarial perturbation) is a lookup, never a fresh draw.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

from ..checks import ConfigError, Param, check_values, field_params
from ..runtime import seeded_generator


ALL_TO_ALL = "all-to-all"  # a poison target: each class y is sent to y + 1 mod C


def attack_labels(labels: torch.Tensor, target: int | str, num_classes: int) -> torch.Tensor:
    """The label the attack wants for images of true class ``labels``: the target, or y + 1 mod C (all-to-all)."""
    if target == ALL_TO_ALL:
        return (labels + 1) % num_classes
    return torch.full_like(labels, int(target))


class TriggerError(ConfigError):
    """A trigger parameter is out of range; the message names the parameter, the value and the valid range."""


@dataclass(frozen=True)
class TriggerContext:
    """What a trigger may see when it is built.

    ``poisoned``: sorted training indices that will carry the trigger. ``candidates``: the training indices the
    adversary may touch (the validation split excluded). ``images``/``labels``: the clean uint8 training images and
    labels (CPU), for triggers computed from the data (label-consistent). ``surrogate``: a zero-argument function
    returning a clean model trained by the product (cached like an original), for attacks that need one.
    ``mean``/``std``: the dataset's normalisation (a model reads ``(x / 255 - mean) / std``).
    """

    shape: tuple[int, int, int]
    seed: int
    target: int | None = None
    num_classes: int = 10
    poisoned: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    candidates: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    surrogate: Callable[[], torch.nn.Module] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


class Trigger:
    """Base class of the registered triggers. Subclasses are frozen dataclasses (equal when their parameters are)
    and implement :meth:`stamp`; :meth:`build` turns a config's parameters into an instance. Their parameters are
    their init fields (not starting with ``_``): the annotation is the type, and a field made with
    :func:`~corrective_unlearning.checks.param` declares a range or choices; every instance is checked against
    them when it is made (a subclass with checks of its own calls ``super().__post_init__()`` first)."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        declared = trigger_params(type(self))
        check_params(self.name, {key: getattr(self, key) for key in declared}, declared, f"trigger {self.name}")

    @classmethod
    def build(cls, context: TriggerContext, **params: Any) -> "Trigger":
        """The trigger for a setting. The default passes the parameters to the constructor."""
        del context
        return cls(**params)

    def stamp(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """A stamped copy of uint8 ``images`` ``[B, C, H, W]``; ``indices[k]`` is image k's index in its bank."""
        raise NotImplementedError

    def perturb(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Applied before crop and flip to the training images that carry the trigger (the label-consistent
        attack's adversarial perturbation); the default changes nothing."""
        del indices
        return images

    def for_test(self) -> "Trigger":
        """The trigger the test images get: without the training-only parts (noise samples, perturbations)."""
        return self

    @property
    def extra_stamped(self) -> torch.Tensor:
        """Training indices outside the poisoned set that the trigger also renders (with their true labels):
        WaNet's noise samples. Empty for most triggers."""
        return torch.zeros(0, dtype=torch.long)

    def on_device(self, key: tuple, device: torch.device, make: Callable[[torch.device], Any]) -> Any:
        """``make(device)`` (a trigger's tensors on ``device``), made once per ``key`` and device and kept in the
        subclass's private ``_on_device`` dict: a batch never pays a host-to-device copy."""
        cache_key = (str(device), *key)
        if cache_key not in self._on_device:
            self._on_device[cache_key] = make(device)
        return self._on_device[cache_key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_on_device": {}}  # device copies stay where they were made

    def copy_without(self, *private: str) -> "Trigger":
        """A copy with the ``private`` fields set to None and no device copies (what ``for_test`` returns when it
        drops training-only parts)."""
        copied = copy.copy(self)
        for name in private:
            object.__setattr__(copied, name, None)
        object.__setattr__(copied, "_on_device", {})
        return copied

    def describe(self) -> dict:
        """The parameters that define the trigger, as recorded (name first)."""
        fields = dataclasses.fields(self) if dataclasses.is_dataclass(self) else ()
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields
                                      if f.init and not f.name.startswith("_")}}


@functools.cache
def trigger_params(cls: type[Trigger]) -> dict[str, Param]:
    """Trigger class ``cls``'s declared parameters, in field order (made once per class)."""
    return field_params(cls)


def check_params(trigger: str, params: dict, declared: dict[str, Param], where: str) -> dict:
    """One-line TriggerError unless ``params`` satisfy ``declared``, trigger ``trigger``'s declarations:
    ``trigger wanet: k must be in [2, 9], got 10``; ``where`` starts the message of an unknown name."""
    return check_values(params, declared, where=where, owner=f"trigger {trigger}", phrasing="must be",
                        error=TriggerError)


def to_pixels(values: torch.Tensor) -> torch.Tensor:
    """uint8 images from a float computation on pixel values (0-255): rounded half to even, clipped."""
    return values.round().clamp_(0, 255).to(torch.uint8)


def sample_generator(seed: int, salt: int) -> torch.Generator:
    """A CPU generator for one trigger's draws: seeded from the run's seed and a per-trigger salt, so two triggers
    of one run never share a stream."""
    return seeded_generator(seed, salt)
