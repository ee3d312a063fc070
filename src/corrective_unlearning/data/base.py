"""The in-memory dataset every source returns, and the validation split."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class ImageDataset:
    """uint8 images ``[N, C, H, W]`` with int64 labels, for a train and a test split.

    ``checksum`` identifies the content (it enters every cache key); ``origin`` says where it was read from.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checksum: str
    origin: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_images(self.train_images, self.train_labels, "train", len(self.classes))
        validate_images(self.test_images, self.test_labels, "test", len(self.classes))
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}; expected the same [C, H, W]"
            )
        channels = self.train_images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: expected {channels} mean/std values, got {len(self.mean)}/{len(self.std)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


def validate_images(images: torch.Tensor, labels: torch.Tensor, split: str, num_classes: int) -> None:
    """Raise a ValueError that says what was expected and what was received."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}"
        raise ValueError(f"{split} images: expected a uint8 tensor [N, C, H, W], got {got}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        got = f"{type(labels).__name__} {getattr(labels, 'dtype', '')} {tuple(getattr(labels, 'shape', ()))}"
        raise ValueError(f"{split} labels: expected an int64 tensor [N], got {got}")
    if len(images) != len(labels):
        raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{split} labels: expected values in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
        )


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale (std floored so normalising never divides by 0)."""
    scaled = images.float().div(255)
    return tuple(scaled.mean(dim=(0, 2, 3)).tolist()), tuple(scaled.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())


def content_checksum(*arrays: np.ndarray | torch.Tensor) -> str:
    """sha256 over the raw bytes of the given arrays (shape included)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def stratified_split(labels: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out ``size`` indices with class proportions kept; returns (train indices, validation indices).

    Seeded and independent of torch's global RNG. ``size = 0`` keeps the whole set for training (the reference's
    exact setting).
    """
    n = len(labels)
    if not 0 <= size < n:
        raise ValueError(f"validation size must be in [0, {n - 1}], got {size}")
    if size == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    # Largest-remainder apportionment so the per-class quotas add up to exactly `size`.
    exact = counts * size / n
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[i] += 1
    held = [rng.permutation(np.flatnonzero(labels_np == c))[:q] for c, q in zip(classes, quota)]
    val = np.sort(np.concatenate(held))
    keep = np.setdiff1d(np.arange(n), val)
    return torch.from_numpy(keep).long(), torch.from_numpy(val).long()
