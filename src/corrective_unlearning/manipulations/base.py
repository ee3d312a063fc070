"""What a manipulation produces: corrupted labels, the index set S_m, trigger flags, and the test views."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
PATTERNS = ("square", "checkerboard")


@dataclass(frozen=True)
class Trigger:
    """A square patch stamped on every channel, in pixel units (255 = white).

    ``pattern="square"`` fills the patch with ``value`` (the reference's trigger). ``"checkerboard"`` alternates
    ``value`` and 0, starting with ``value`` in the patch's corners, like the BadNets pattern backdoor for MNIST:
    on dark-background data such as Fashion-MNIST a solid white square looks like clothing, and the network's
    clean-data features absorb it; a checkerboard does not occur naturally.

    Stamped after augmentation, so its position never moves (as in the reference code). Stamping white pixels
    before normalisation equals writing the normalised maximum ``(1 - mean) / std`` after it.
    """

    size: int = 3
    position: str = "bottom-right"
    value: int = 255
    pattern: str = "square"

    def __post_init__(self) -> None:
        if self.position not in CORNERS:
            raise ValueError(f"trigger position must be one of {CORNERS}, got {self.position!r}")
        if not 1 <= self.size:
            raise ValueError(f"trigger size must be >= 1, got {self.size}")
        if not 0 <= self.value <= 255:
            raise ValueError(f"trigger value must be a pixel value in [0, 255], got {self.value}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"trigger pattern must be one of {PATTERNS}, got {self.pattern!r}")

    def region(self, height: int, width: int) -> tuple[slice, slice]:
        rows = slice(height - self.size, height) if self.position.startswith("bottom") else slice(0, self.size)
        cols = slice(width - self.size, width) if self.position.endswith("right") else slice(0, self.size)
        return rows, cols

    def patch(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The ``[size, size]`` pixel values the trigger writes."""
        if self.pattern == "square":
            return torch.full((self.size, self.size), self.value, dtype=dtype, device=device)
        i = torch.arange(self.size, device=device)
        return torch.where((i[:, None] + i[None, :]) % 2 == 0, self.value, 0).to(dtype)

    def stamp(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return a copy of ``images`` [B, C, H, W] with the patch on every image (or those where ``mask``)."""
        rows, cols = self.region(images.shape[-2], images.shape[-1])
        stamped = images.clone()
        patch = self.patch(images.dtype, images.device)
        if mask is None:
            stamped[..., rows, cols] = patch
        else:
            region = stamped[..., rows, cols]
            stamped[..., rows, cols] = torch.where(mask.view(-1, 1, 1, 1), patch.expand_as(region), region)
        return stamped


@dataclass(frozen=True)
class TestView:
    """A slice of the test set scored against its *clean* labels, optionally with the trigger stamped."""

    indices: torch.Tensor
    triggered: bool = False


@dataclass(frozen=True)
class Manipulated:
    """The manipulated training set. Label tensors are fresh copies: shared arrays are never mutated."""

    name: str
    params: dict
    labels: torch.Tensor  # labels the model trains on, over the whole training split (validation untouched)
    clean_labels: torch.Tensor
    manipulated: torch.Tensor  # S_m, sorted indices into the training split
    triggered: torch.Tensor  # bool [N]: which training images carry the trigger
    trigger: Trigger | None
    test_views: dict[str, TestView] = field(default_factory=dict)
    affected_view: str = "affected"  # the view over D_m
    utility_view: str = "utility"  # the test data outside D_m

    @property
    def size(self) -> int:
        return len(self.manipulated)


def index_hash(indices: torch.Tensor) -> str:
    """A short, order-independent fingerprint of an index set, recorded with every run."""
    values = np.sort(np.asarray(indices, dtype=np.int64))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def choose(candidates: torch.Tensor, n: int, seed: int, what: str) -> torch.Tensor:
    """A seeded uniform choice of ``n`` distinct candidates, returned sorted."""
    if not 0 <= n <= len(candidates):
        raise ValueError(f"{what}: n must be in [0, {len(candidates)}] (the candidates available), got {n}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(np.asarray(candidates), size=n, replace=False)
    return torch.from_numpy(np.sort(chosen)).long()


def resolve_class(value: int | str, classes: tuple[str, ...]) -> int:
    """Accept a class index or a class name."""
    if isinstance(value, str) and not value.isdigit():
        if value not in classes:
            raise ValueError(f"unknown class {value!r}; expected one of {list(classes)}")
        return classes.index(value)
    index = int(value)
    if not 0 <= index < len(classes):
        raise ValueError(f"class index must be in [0, {len(classes) - 1}], got {index}")
    return index
