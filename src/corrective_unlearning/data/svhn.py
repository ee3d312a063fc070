"""SVHN (cropped digits, format 2) from the two official MATLAB files ``train_32x32.mat`` and ``test_32x32.mat``.

Each file holds ``X`` (uint8, ``[32, 32, 3, N]``: height, width, channel, sample) and ``y`` (``[N, 1]``, the digit,
with 0 stored as 10). They are read with scipy's ``loadmat`` (scipy is the optional extra ``svhn``), turned into
``[N, 3, 32, 32]`` and labelled 0-9 (10 -> 0). The ``extra_32x32.mat`` split is not read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import SOURCES
from .base import ImageDataset, content_checksum
from .download import fetch
from .locate import DEFAULT_DATA_DIR, DataNotFoundError, find

URL = "http://ufldl.stanford.edu/housenumbers/"
FILES = {"train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
         "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")}
CLASSES = tuple(str(d) for d in range(10))
MEAN, STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)


def _locate(name: str, md5: str, data_dir, explicit, download: bool) -> Path:
    target_dir = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR
    hint = f"run with --download to fetch {URL}{name} into {target_dir / 'svhn'}"
    try:
        return find([f"svhn/{name}", name], data_dir, what=f"SVHN file {name}", fetch_hint=hint, explicit=explicit)
    except DataNotFoundError:
        if not download:
            raise
        return fetch(URL + name, target_dir / "svhn" / name, md5)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 3, 32, 32]`` and int64 labels 0-9 of one SVHN ``.mat`` file."""
    try:
        from scipy.io import loadmat  # lazy: scipy is an optional extra, needed only for SVHN
    except ImportError:
        raise ImportError("SVHN is read with scipy: pip install 'corrective-unlearning[svhn]' (or scipy)") from None
    try:
        mat = loadmat(str(path))
    except Exception as error:  # scipy raises several types for a damaged file; all mean the same here
        raise ValueError(f"{path} is not a readable MATLAB file ({type(error).__name__}: {error}); expected SVHN's "
                         f"{path.name} with arrays X [32, 32, 3, N] and y [N, 1]") from None
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected arrays X and y, got {sorted(k for k in mat if not k.startswith('__'))}")
    images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != len(labels):
        raise ValueError(f"{path}: expected X of shape [H, W, 3, N] with N = {len(labels)} labels, got "
                         f"{list(images.shape)}")
    labels[labels == 10] = 0
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected labels 1-10 (10 for the digit 0), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)).astype(np.uint8), labels


@SOURCES.register("svhn")
def load_svhn(data_dir=None, path=None, download: bool = False) -> ImageDataset:
    """SVHN: ``svhn/train_32x32.mat`` and ``test_32x32.mat`` in a data directory (scipy reads them).

    The two files may also lie directly in the data directory; ``path`` may name the folder holding both."""
    found = {split: _locate(name, md5, data_dir, Path(path) / name if path else None, download)
             for split, (name, md5) in FILES.items()}
    x_train, y_train = read_svhn_mat(found["train"])
    x_test, y_test = read_svhn_mat(found["test"])
    return ImageDataset(
        name="svhn",
        train_images=torch.from_numpy(x_train),
        train_labels=torch.from_numpy(y_train),
        test_images=torch.from_numpy(x_test),
        test_labels=torch.from_numpy(y_test),
        classes=CLASSES,
        mean=MEAN,
        std=STD,
        checksum=content_checksum(x_train, y_train, x_test, y_test),
        origin=str(found["train"].parent),
    )
