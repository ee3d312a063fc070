"""Data sources, the dataset container's validation, the validation split, and the file readers."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corrective_unlearning.data import DataNotFoundError, ImageDataset, SOURCES, load_dataset, stratified_split
from corrective_unlearning.data import cifar, fashion_mnist
from corrective_unlearning.data.fashion_mnist import read_idx
from corrective_unlearning.data.tensors import from_tensors



# --------------------------------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_and_dtypes(synthetic):
    d = synthetic
    assert isinstance(d, ImageDataset)
    assert d.name == "synthetic"
    assert d.train_images.shape == (384, 3, 16, 16) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (192, 3, 16, 16) and d.test_images.dtype == torch.uint8
    assert d.train_labels.shape == (384,) and d.train_labels.dtype == torch.int64
    assert d.test_labels.shape == (192,) and d.test_labels.dtype == torch.int64
    assert d.num_classes == 4 and d.in_channels == 3 and d.image_size == 16
    assert d.classes == ("class0", "class1", "class2", "class3")
    # balanced classes
    assert torch.bincount(d.train_labels).tolist() == [96] * 4
    assert torch.bincount(d.test_labels).tolist() == [48] * 4
    assert len(d.mean) == len(d.std) == 3
    assert len(d.checksum) == 64


def test_synthetic_is_seeded_and_configurable():
    a, b, c = load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=3), load_dataset("synthetic", seed=4)
    assert a.checksum == b.checksum and torch.equal(a.train_images, b.train_images)
    assert a.checksum != c.checksum
    d = load_dataset("synthetic", num_classes=7, train_size=70, test_size=14, image_size=8, channels=1)
    assert d.train_images.shape == (70, 1, 8, 8) and d.test_images.shape == (14, 1, 8, 8)
    assert d.num_classes == 7 and int(d.train_labels.max()) == 6


def test_registry_lists_the_sources():
    for name in ("cifar10", "cifar100", "fashion-mnist", "synthetic", "tensors"):
        assert name in SOURCES
    with pytest.raises(KeyError, match="expected one of: .*synthetic"):
        load_dataset("imagenet-42")


# --------------------------------------------------------------------------------------------- stratified split
def _imbalanced_labels() -> torch.Tensor:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    return labels[torch.randperm(100, generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("size, expected", [(20, [12, 6, 2]), (7, [4, 2, 1]), (1, [1, 0, 0]), (99, [59, 30, 10])])
def test_stratified_split_sizes_and_proportions(size, expected):
    labels = _imbalanced_labels()
    keep, val = stratified_split(labels, size, seed=0)
    assert len(val) == size and len(keep) == 100 - size
    assert torch.bincount(labels[val], minlength=3).tolist() == expected
    assert keep.dtype == torch.int64 and val.dtype == torch.int64
    # disjoint, covering, sorted
    assert not set(keep.tolist()) & set(val.tolist())
    assert sorted(keep.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(val, torch.sort(val).values) and torch.equal(keep, torch.sort(keep).values)


def test_stratified_split_keeps_proportions_on_synthetic(synthetic):
    keep, val = stratified_split(synthetic.train_labels, 40, seed=1)
    assert torch.bincount(synthetic.train_labels[val]).tolist() == [10, 10, 10, 10]
    assert len(keep) == 344


def test_stratified_split_is_seeded_and_independent_of_global_rng():
    labels = _imbalanced_labels()
    torch.manual_seed(1)
    np.random.seed(1)
    a = stratified_split(labels, 20, seed=5)
    torch.manual_seed(2)
    np.random.seed(2)
    b = stratified_split(labels, 20, seed=5)
    c = stratified_split(labels, 20, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_stratified_split_size_zero_keeps_everything():
    keep, val = stratified_split(_imbalanced_labels(), 0, seed=0)
    assert keep.tolist() == list(range(100))
    assert len(val) == 0 and val.dtype == torch.int64


@pytest.mark.parametrize("size", [-1, 100, 101])
def test_stratified_split_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match=r"validation size must be in \[0, 99\]"):
        stratified_split(_imbalanced_labels(), size, seed=0)


# ------------------------------------------------------------------------------------------------ from_tensors
def _arrays(n_train=8, n_test=4, classes=3):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 256, (n_train, 3, 8, 8), generator=g, dtype=torch.uint8),
        torch.arange(n_train) % classes,
        torch.randint(0, 256, (n_test, 3, 8, 8), generator=g, dtype=torch.uint8),
        torch.arange(n_test) % classes,
    )


def test_from_tensors_defaults():
    xtr, ytr, xte, yte = _arrays()
    d = from_tensors(xtr.numpy(), ytr.numpy().astype(np.int32), xte, yte)
    assert d.classes == ("0", "1", "2")
    assert d.train_labels.dtype == torch.int64
    expected_mean = (xtr.float() / 255).mean(dim=(0, 2, 3))
    assert np.allclose(d.mean, expected_mean.numpy(), atol=1e-6)
    assert len(d.std) == 3 and all(s > 0 for s in d.std)
    assert d.name == "tensors"


def test_from_tensors_wrong_image_dtype():
    xtr, ytr, xte, yte = _arrays()
    with pytest.raises(ValueError, match=r"train images: expected a uint8 tensor \[N, C, H, W\], got .*float32"):
        from_tensors(xtr.float(), ytr, xte, yte)


def test_from_tensors_wrong_image_shape():
    xtr, ytr, xte, yte = _arrays()
    with pytest.raises(ValueError, match=r"train images: expected a uint8 tensor \[N, C, H, W\], got .*\(8, 8, 8\)"):
        from_tensors(xtr[:, 0], ytr, xte, yte)
    with pytest.raises(ValueError, match=r"train images are \(3, 8, 8\) but test images are \(3, 4, 4\)"):
        from_tensors(xtr, ytr, xte[..., :4, :4], yte)


def test_from_tensors_wrong_label_shape_and_count():
    xtr, ytr, xte, yte = _arrays()
    with pytest.raises(ValueError, match=r"test labels: expected an int64 tensor \[N\], got .*\(4, 1\)"):
        from_tensors(xtr, ytr, xte, yte[:, None])
    with pytest.raises(ValueError, match="train: 8 images but 7 labels"):
        from_tensors(xtr, ytr[:7], xte, yte)


def test_from_tensors_label_out_of_range():
    xtr, ytr, xte, yte = _arrays()
    bad = ytr.clone()
    bad[2] = 5
    with pytest.raises(ValueError, match=r"train labels: expected values in \[0, 2\], got \[0, 5\]"):
        from_tensors(xtr, bad, xte, yte, classes=["a", "b", "c"])
    negative = yte.clone()
    negative[0] = -1
    with pytest.raises(ValueError, match=r"test labels: expected values in \[0, 2\], got \[-1, 2\]"):
        from_tensors(xtr, ytr, xte, negative)


def test_from_tensors_mean_std_length():
    xtr, ytr, xte, yte = _arrays()
    with pytest.raises(ValueError, match="expected 3 mean/std values, got 1/1"):
        from_tensors(xtr, ytr, xte, yte, mean=[0.5], std=[0.2])


def test_tensor_file_source(tmp_path):
    xtr, ytr, xte, yte = _arrays()
    path = tmp_path / "mine.npz"
    np.savez(path, train_images=xtr.numpy(), train_labels=ytr.numpy(), test_images=xte.numpy(),
             test_labels=yte.numpy(), classes=np.array(["x", "y", "z"]))
    d = load_dataset("tensors", path=str(path))
    assert d.name == "mine" and d.classes == ("x", "y", "z")
    assert torch.equal(d.train_images, xtr) and torch.equal(d.test_labels, yte)
    np.savez(tmp_path / "broken.npz", train_images=xtr.numpy())
    with pytest.raises(ValueError, match="missing arrays"):
        load_dataset("tensors", path=str(tmp_path / "broken.npz"))


# ------------------------------------------------------------------------------------------ Fashion-MNIST (idx)
def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_read_idx_gzipped_and_plain(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    gz = tmp_path / "imgs-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(images)))
    out = read_idx(gz)
    assert out.shape == (5, 28, 28) and out.dtype == np.uint8
    assert np.array_equal(out, images)
    labels = np.array([9, 0, 3, 3, 1], dtype=np.uint8)
    plain = tmp_path / "labels-idx1-ubyte"
    plain.write_bytes(_idx_bytes(labels))
    assert read_idx(plain).tolist() == [9, 0, 3, 3, 1]


def test_read_idx_truncated_raises(tmp_path):
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    raw = _idx_bytes(images)
    path = tmp_path / "truncated-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ValueError, match=r"header says shape \(5, 28, 28\) .*truncated"):
        read_idx(path)
    # a gzip stream cut short is an error too, never a silently short array
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises((ValueError, EOFError, OSError)):
        read_idx(cut)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]))  # float idx: not supported
    with pytest.raises(ValueError, match="not an idx file of unsigned bytes"):
        read_idx(path)


def test_fashion_mnist_loader_on_tiny_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    rng = np.random.default_rng(1)
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    arrays = {
        "train_images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train_labels": np.array([0, 1, 2, 9, 4, 5], dtype=np.uint8),
        "test_images": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "test_labels": np.array([7, 8, 0], dtype=np.uint8),
    }
    for key, name in fashion_mnist.FILES.items():
        (folder / name).write_bytes(gzip.compress(_idx_bytes(arrays[key])))
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path / "data"))
    assert d.train_images.shape == (6, 1, 28, 28) and d.test_images.shape == (3, 1, 28, 28)
    assert torch.equal(d.train_images[:, 0], torch.from_numpy(arrays["train_images"]))
    assert d.train_labels.tolist() == [0, 1, 2, 9, 4, 5] and d.train_labels.dtype == torch.int64
    assert d.num_classes == 10 and d.origin == str(folder)


def test_fashion_mnist_missing_lists_every_path(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    env_dir = tmp_path / "env-dir"
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(debian))
    monkeypatch.setenv("CORRECTIVE_DATA_DIR", str(env_dir))
    from corrective_unlearning.data import locate

    mine = tmp_path / "mine"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=str(mine))
    message = str(info.value)
    name = "train-images-idx3-ubyte.gz"
    for directory in (mine, env_dir, locate.DEFAULT_DATA_DIR, debian):
        assert f"{directory / 'fashion-mnist' / name}" in message
        assert f"{directory / name}" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    assert isinstance(info.value, FileNotFoundError)


# --------------------------------------------------------------------------------------- CIFAR: JPEG archive
def _jpeg(image_hwc: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_hwc).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _pattern(i: int) -> np.ndarray:
    """A 32x32 RGB image that is not symmetric in H/W or across channels (catches transposes)."""
    y, x = np.mgrid[0:32, 0:32]
    return np.stack([(y * 8 + 10 * i) % 256, (x * 8) % 256, ((x + 2 * y) * 4 + 40 * i) % 256], -1).astype(np.uint8)


def _write_archive(path: Path, train_labels, test_labels, classes=("cat", "dog", "frog")) -> dict:
    def split(labels, first):
        images = [_pattern(first + i) for i in range(len(labels))]
        blobs = [_jpeg(im) for im in images]
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets, blobs

    tr_jpeg, tr_off, tr_blobs = split(train_labels, 0)
    te_jpeg, te_off, te_blobs = split(test_labels, 100)
    np.savez(path, train_jpeg=tr_jpeg, train_offsets=tr_off, train_labels=np.array(train_labels, dtype=np.uint8),
             test_jpeg=te_jpeg, test_offsets=te_off, test_labels=np.array(test_labels, dtype=np.uint8),
             classes=np.array(classes))
    return {"train": tr_blobs, "test": te_blobs}


def _decode_reference(blobs) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
                            ).permute(0, 3, 1, 2)


def test_jpeg_archive_decodes(tmp_path, isolated_cache):
    path = tmp_path / "tiny.npz"
    blobs = _write_archive(path, [0, 1, 2, 1, 0], [2, 0, 1])
    d = cifar.load_jpeg_archive(path)
    assert d.name == "cifar10"
    assert d.train_images.shape == (5, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (3, 3, 32, 32)
    assert d.train_labels.tolist() == [0, 1, 2, 1, 0] and d.train_labels.dtype == torch.int64
    assert d.test_labels.tolist() == [2, 0, 1]
    assert d.classes == ("cat", "dog", "frog")
    assert torch.equal(d.train_images, _decode_reference(blobs["train"]))
    assert torch.equal(d.test_images, _decode_reference(blobs["test"]))
    # close to the source pixels in [C, H, W] order (JPEG is lossy, but not by this much)
    source = torch.from_numpy(np.stack([_pattern(i) for i in range(5)])).permute(0, 3, 1, 2)
    assert (d.train_images.float() - source.float()).abs().mean() < 8
    assert d.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.mean == cifar.CIFAR_MEAN and d.origin == str(path)
    assert len(list((isolated_cache / "decoded").glob("*.npz"))) == 1


def test_jpeg_archive_second_load_hits_the_decoded_cache(tmp_path, isolated_cache, monkeypatch):
    path = tmp_path / "tiny.npz"
    _write_archive(path, [0, 1, 2], [2])
    first = cifar.load_jpeg_archive(path)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this archive")

    monkeypatch.setattr(cifar, "decode_jpeg_split", no_decoding)
    second = cifar.load_jpeg_archive(path)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels) and first.classes == second.classes
    assert first.checksum == second.checksum


def test_jpeg_archive_cache_key_follows_content(tmp_path, isolated_cache):
    path = tmp_path / "tiny.npz"
    _write_archive(path, [0, 1, 2], [2])
    assert cifar.load_jpeg_archive(path).train_labels.tolist() == [0, 1, 2]
    _write_archive(path, [2, 2, 0], [1])  # same file name, different content
    changed = cifar.load_jpeg_archive(path)
    assert changed.train_labels.tolist() == [2, 2, 0] and changed.test_labels.tolist() == [1]
    assert len(list((isolated_cache / "decoded").glob("*.npz"))) == 2


def test_jpeg_archive_corrupt_cache_entry_is_rebuilt(tmp_path, isolated_cache):
    path = tmp_path / "tiny.npz"
    _write_archive(path, [0, 1, 2], [2])
    good = cifar.load_jpeg_archive(path)
    (entry,) = (isolated_cache / "decoded").glob("*.npz")
    entry.write_bytes(b"not an npz file")
    again = cifar.load_jpeg_archive(path)
    assert torch.equal(good.train_images, again.train_images)


def test_jpeg_archive_via_source_and_bad_archive(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    _write_archive(folder / cifar.JPEG_ARCHIVE, [0, 1], [1])
    # the release folder is missing, so cifar10 falls back to the archive in the data dir
    d = load_dataset("cifar10", data_dir=str(folder))
    assert d.train_labels.tolist() == [0, 1]
    assert load_dataset("cifar10", path=str(folder / cifar.JPEG_ARCHIVE)).test_labels.tolist() == [1]
    np.savez(tmp_path / "bad.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match="not a readable CIFAR JPEG archive"):
        cifar.load_jpeg_archive(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------- CIFAR: python release
def _write_release(root: Path, per_batch=3, test_n=4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({b"batch_label": b"batch", b"labels": y, b"data": x}, f)
        train_x.append(x)
        train_y += y
    test_x = rng.integers(0, 256, (test_n, 3072), dtype=np.uint8)
    test_y = [9, 0, 5, 3][:test_n]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": test_y, b"data": test_x}, f)
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck")]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return np.concatenate(train_x), np.array(train_y), test_x, np.array(test_y)


def test_cifar10_python_release(tmp_path):
    train_x, train_y, test_x, test_y = _write_release(tmp_path)
    d = load_dataset("cifar10", data_dir=str(tmp_path))
    assert d.train_images.shape == (15, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (4, 3, 32, 32)
    assert d.train_labels.tolist() == train_y.tolist() and d.train_labels.dtype == torch.int64
    assert d.test_labels.tolist() == test_y.tolist()
    assert d.classes[3] == "cat" and d.classes[5] == "dog" and d.num_classes == 10
    # CIFAR rows are 1024 red, 1024 green, 1024 blue values, each row-major over 32x32
    i, c, y, x = 7, 2, 5, 30
    assert int(d.train_images[i, c, y, x]) == int(train_x[i, c * 1024 + y * 32 + x])
    assert np.array_equal(d.test_images.reshape(4, -1).numpy(), test_x)
    assert d.origin == str(tmp_path / "cifar-10-batches-py")
    # an explicit path to the folder works as well
    same = load_dataset("cifar10", path=str(tmp_path / "cifar-10-batches-py"))
    assert same.checksum == d.checksum


def test_cifar100_python_release(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    x, xt = rng.integers(0, 256, (4, 3072), dtype=np.uint8), rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    with open(folder / "train", "wb") as f:
        pickle.dump({b"data": x, b"fine_labels": [0, 47, 52, 99], b"coarse_labels": [0, 1, 2, 3]}, f)
    with open(folder / "test", "wb") as f:
        pickle.dump({b"data": xt, b"fine_labels": [53, 1], b"coarse_labels": [0, 0]}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    d = load_dataset("cifar100", data_dir=str(tmp_path))
    assert d.num_classes == 100 and d.name == "cifar100"
    assert d.train_labels.tolist() == [0, 47, 52, 99] and d.test_labels.tolist() == [53, 1]
    assert d.mean == cifar.CIFAR100_MEAN


def test_cifar_missing_lists_every_path_and_a_fetch_hint(tmp_path, monkeypatch):
    from corrective_unlearning.data import locate

    env_dir = tmp_path / "env-dir"
    monkeypatch.setenv("CORRECTIVE_DATA_DIR", str(env_dir))
    mine = tmp_path / "mine"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar10", data_dir=str(mine))
    message = str(info.value)
    for directory in (mine, env_dir, locate.DEFAULT_DATA_DIR):
        assert str(directory / "cifar-10-batches-py") in message
    assert "--download" in message and cifar.RELEASES["cifar10"]["url"] in message
    assert cifar.JPEG_ARCHIVE in message

    explicit = tmp_path / "explicit" / "cifar-100-python"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("cifar100", data_dir=str(mine), path=str(explicit))
    message = str(info.value)
    assert message.index(str(explicit)) < message.index(str(mine / "cifar-100-python"))
    for directory in (mine, env_dir, locate.DEFAULT_DATA_DIR):
        assert str(directory / "cifar-100-python") in message
    assert "--download" in message and "cifar-100-python.tar.gz" in message


# ----------------------------------------------------------------------------------------- the real archive
# read at collection time, before the autouse fixture clears $CORRECTIVE_DATA_DIR for each test
REAL_ARCHIVE = Path(os.environ.get("CORRECTIVE_DATA_DIR") or "/nonexistent") / cifar.JPEG_ARCHIVE


@pytest.mark.slow
@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason="set CORRECTIVE_DATA_DIR to a folder with cifar10-jpeg.npz")
def test_real_cifar10_jpeg_archive(monkeypatch):
    monkeypatch.setenv("CORRECTIVE_DATA_DIR", str(REAL_ARCHIVE.parent))
    d = load_dataset("cifar10", workers=min(4, os.cpu_count() or 1))
    assert d.origin == str(REAL_ARCHIVE)
    assert d.train_images.shape == (50000, 3, 32, 32) and d.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.train_labels).tolist() == [5000] * 10
    assert torch.bincount(d.test_labels).tolist() == [1000] * 10
    assert d.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    mean = d.train_images[::10].float().div(255).mean(dim=(0, 2, 3))
    assert np.allclose(mean.numpy(), cifar.CIFAR_MEAN, atol=0.01)
