"""SVHN from its official .mat files: small files written here (never downloaded), the layout and labels, and the
missing-file message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

scipy_io = pytest.importorskip("scipy.io")

from corrective_unlearning.data import DataNotFoundError, SOURCES, load_dataset  # noqa: E402
from corrective_unlearning.data import locate, svhn  # noqa: E402
from corrective_unlearning.training.recipe import DEFAULT_MODELS, DEFAULT_RECIPES  # noqa: E402


def _write_mat(path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # HWCN, as the official files
    y = np.arange(1, n + 1).reshape(n, 1) % 10 + 1  # 1..10, 10 standing for the digit 0
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(str(path), {"X": x, "y": y.astype(np.uint8)})
    return x, y.reshape(-1)


def test_svhn_reads_the_mat_files(tmp_path):
    x, y = _write_mat(tmp_path / "svhn" / "train_32x32.mat", 12, 0)
    _write_mat(tmp_path / "svhn" / "test_32x32.mat", 5, 1)
    d = load_dataset("svhn", data_dir=str(tmp_path))
    assert "svhn" in SOURCES
    assert d.train_images.shape == (12, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (5, 3, 32, 32)
    # NCHW from HWCN: sample 3, channel 1, row 4, column 7
    assert int(d.train_images[3, 1, 4, 7]) == int(x[4, 7, 1, 3])
    expected = np.where(y == 10, 0, y)
    assert d.train_labels.tolist() == expected.tolist() and d.train_labels.dtype == torch.int64
    assert 0 in d.train_labels.tolist() and 10 not in d.train_labels.tolist()
    assert d.classes == tuple("0123456789") and d.num_classes == 10


def test_svhn_path_names_the_folder(tmp_path):
    _write_mat(tmp_path / "mine" / "train_32x32.mat", 4, 0)
    _write_mat(tmp_path / "mine" / "test_32x32.mat", 3, 1)
    assert len(load_dataset("svhn", path=str(tmp_path / "mine")).train_labels) == 4


def test_svhn_missing_lists_every_path(tmp_path, monkeypatch):
    env_dir = tmp_path / "env-dir"
    monkeypatch.setenv("CORRECTIVE_DATA_DIR", str(env_dir))
    mine = tmp_path / "mine"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("svhn", data_dir=str(mine))
    message = str(info.value)
    for directory in (mine, env_dir, locate.DEFAULT_DATA_DIR):
        assert f"{directory / 'svhn' / 'train_32x32.mat'}" in message
        assert f"{directory / 'train_32x32.mat'}" in message
    assert "--download" in message and "ufldl.stanford.edu/housenumbers/train_32x32.mat" in message


def test_svhn_download_fetches_the_official_urls(tmp_path, monkeypatch):
    fetched = []

    def fake_fetch(url, target, md5=None):
        fetched.append((url, md5))
        _write_mat(target, 3, len(fetched))
        return target

    monkeypatch.setattr(svhn, "fetch", fake_fetch)
    monkeypatch.setenv("CORRECTIVE_DATA_DIR", str(tmp_path / "nothing"))
    d = load_dataset("svhn", data_dir=str(tmp_path / "dl"), download=True)
    assert [u for u, _ in fetched] == ["http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                                       "http://ufldl.stanford.edu/housenumbers/test_32x32.mat"]
    assert all(md5 for _, md5 in fetched)
    assert (tmp_path / "dl" / "svhn" / "train_32x32.mat").exists() and len(d.train_labels) == 3


def test_svhn_bad_file_is_one_line(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"not matlab")
    _write_mat(tmp_path / "svhn" / "test_32x32.mat", 3, 1)
    with pytest.raises(ValueError, match="not a readable MATLAB file"):
        load_dataset("svhn", data_dir=str(tmp_path))
    scipy_io.savemat(str(tmp_path / "svhn" / "train_32x32.mat"), {"images": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="expected arrays X and y"):
        load_dataset("svhn", data_dir=str(tmp_path))


def test_svhn_has_default_recipe_and_model():
    assert "svhn" in DEFAULT_RECIPES and "svhn" in DEFAULT_MODELS
