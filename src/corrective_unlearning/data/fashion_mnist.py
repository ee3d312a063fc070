"""Fashion-MNIST from the four original idx.gz files (a data directory, or Debian's dataset-fashion-mnist)."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from . import SOURCES
from .base import ImageDataset, content_checksum
from .download import fetch
from .locate import DEFAULT_DATA_DIR, DataNotFoundError, find

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MEAN, STD = (0.2860,), (0.3530,)


def read_idx(path: Path) -> np.ndarray:
    """Parse an (optionally gzipped) idx file into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values (truncated?)")
    return data.reshape(shape)


def _locate(name: str, data_dir, download: bool) -> Path:
    candidates = [f"fashion-mnist/{name}", name]
    hint = "apt-get install dataset-fashion-mnist, or run with --download"
    try:
        return find(candidates, data_dir, what=f"Fashion-MNIST file {name}", fetch_hint=hint, system=(DEBIAN_DIR,))
    except DataNotFoundError:
        if not download:
            raise
        target = (Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR) / "fashion-mnist" / name
        return fetch(MIRROR + name, target)


@SOURCES.register("fashion-mnist")
def load_fashion_mnist(data_dir=None, path=None, download: bool = False) -> ImageDataset:
    """Fashion-MNIST; ``path`` may name a folder holding the four idx.gz files."""
    if path is not None:
        data_dir = path
    arrays = {key: read_idx(_locate(name, data_dir, download)) for key, name in FILES.items()}
    return ImageDataset(
        name="fashion-mnist",
        train_images=torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        classes=CLASSES,
        mean=MEAN,
        std=STD,
        checksum=content_checksum(*arrays.values()),
        origin=str(_locate(FILES["train_images"], data_dir, False).parent),
    )
