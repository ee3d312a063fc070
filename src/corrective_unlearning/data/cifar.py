"""CIFAR-10 and CIFAR-100: the standard python release, or CIFAR-10 as a JPEG archive (``cifar10-jpeg.npz``).

The JPEG archive holds each image as a JPEG file (format: ``train_jpeg``/``test_jpeg`` byte blobs,
``*_offsets``, ``*_labels``, ``classes``). It is decoded once with a process pool; the decoded arrays are cached
under the cache directory, keyed by the archive's sha256.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import SOURCES
from .base import ImageDataset, content_checksum
from .download import fetch_and_extract
from .locate import DEFAULT_DATA_DIR, DataNotFoundError, cache_dir, find

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

RELEASES = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        label_key=b"labels",
        meta=("batches.meta", b"label_names"),
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train=["train"],
        test=["test"],
        label_key=b"fine_labels",
        meta=("meta", b"fine_label_names"),
    ),
}
JPEG_ARCHIVE = "cifar10-jpeg.npz"


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _read_release(folder: Path, spec: dict) -> tuple[np.ndarray, ...]:
    def split(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_unpickle(folder / f) for f in files]
        images = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(p[spec["label_key"]]) for p in parts])
        return images.astype(np.uint8), labels.astype(np.int64)

    meta_file, meta_key = spec["meta"]
    classes = tuple(c.decode() for c in _unpickle(folder / meta_file)[meta_key])
    return (*split(spec["train"]), *split(spec["test"]), classes)


def _load_release(name: str, data_dir, path, download: bool, mean, std) -> ImageDataset:
    spec = RELEASES[name]
    hint = f"run with --download to fetch {spec['url']} into {data_dir or DEFAULT_DATA_DIR}"
    try:
        folder = find([spec["folder"]], data_dir, what=f"{name} ({spec['folder']}/)", fetch_hint=hint, explicit=path)
    except DataNotFoundError:
        if not download:
            raise
        target = Path(data_dir).expanduser() if data_dir else DEFAULT_DATA_DIR
        fetch_and_extract(spec["url"], target, spec["md5"])
        folder = target / spec["folder"]
    x_train, y_train, x_test, y_test, classes = _read_release(folder, spec)
    return ImageDataset(
        name=name,
        train_images=torch.from_numpy(x_train),
        train_labels=torch.from_numpy(y_train),
        test_images=torch.from_numpy(x_test),
        test_labels=torch.from_numpy(y_test),
        classes=classes,
        mean=mean,
        std=std,
        checksum=content_checksum(x_train, y_train, x_test, y_test),
        origin=str(folder),
    )


def _decode_jpegs(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


def decode_jpeg_split(blob: np.ndarray, offsets: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Decode concatenated JPEG files to uint8 ``[N, 3, H, W]`` with a process pool."""
    raw = blob.tobytes()
    files = [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    chunk = 2500
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    if workers == 1 or len(chunks) == 1:
        decoded = [_decode_jpegs(c) for c in chunks]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            decoded = list(pool.map(_decode_jpegs, chunks))
    return np.concatenate(decoded).transpose(0, 3, 1, 2).copy()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def load_jpeg_archive(path: Path, workers: int | None = None) -> ImageDataset:
    """Read a CIFAR-10 JPEG archive, decoding it once and caching the decoded arrays."""
    sha = _sha256(path)
    cached = cache_dir() / "decoded" / f"cifar10-jpeg-{sha[:16]}.npz"
    arrays = None
    if cached.exists():
        try:
            with np.load(cached) as f:
                arrays = {k: f[k] for k in f.files}
        except Exception:  # a corrupt cache entry is rebuilt, never used
            arrays = None
    if arrays is None:
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {
                    "train_images": decode_jpeg_split(f["train_jpeg"], f["train_offsets"], workers),
                    "test_images": decode_jpeg_split(f["test_jpeg"], f["test_offsets"], workers),
                    "train_labels": f["train_labels"].astype(np.int64),
                    "test_labels": f["test_labels"].astype(np.int64),
                    "classes": f["classes"].astype(str),
                }
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(
                f"{path} is not a readable CIFAR JPEG archive (expected arrays train_jpeg, train_offsets, "
                f"train_labels, test_jpeg, test_offsets, test_labels, classes): {error}"
            ) from error
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(cached.name + ".part.npz")
        np.savez(partial, **arrays)
        partial.replace(cached)
    return ImageDataset(
        name="cifar10",
        train_images=torch.from_numpy(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"]),
        test_images=torch.from_numpy(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"]),
        classes=tuple(str(c) for c in arrays["classes"]),
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        checksum=sha,
        origin=str(path),
    )


@SOURCES.register("cifar10")
def load_cifar10(data_dir=None, path=None, download: bool = False, workers: int | None = None) -> ImageDataset:
    """CIFAR-10: ``cifar-10-batches-py/`` in a data directory, else the JPEG archive ``cifar10-jpeg.npz``.

    ``path`` may name either the release folder or a ``.npz`` archive.
    """
    if path is not None and str(path).endswith(".npz"):
        return load_jpeg_archive(find([], None, what="CIFAR-10 JPEG archive", fetch_hint="check the path",
                                      explicit=path), workers)
    try:
        return _load_release("cifar10", data_dir, path, False, CIFAR_MEAN, CIFAR_STD)
    except DataNotFoundError as missing_release:
        try:
            archive = find([JPEG_ARCHIVE], data_dir, what="CIFAR-10 JPEG archive", fetch_hint="")
        except DataNotFoundError:
            if download:
                return _load_release("cifar10", data_dir, path, True, CIFAR_MEAN, CIFAR_STD)
            raise DataNotFoundError(
                f"{missing_release}\n(also looked for {JPEG_ARCHIVE} in the same directories)"
            ) from None
        return load_jpeg_archive(archive, workers)


@SOURCES.register("cifar100")
def load_cifar100(data_dir=None, path=None, download: bool = False) -> ImageDataset:
    """CIFAR-100 (fine labels): ``cifar-100-python/`` in a data directory."""
    return _load_release("cifar100", data_dir, path, download, CIFAR100_MEAN, CIFAR100_STD)
