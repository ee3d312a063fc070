"""Training data in any of the practitioner's forms: a registered dataset name, a ``corrective train`` run folder, an
``.npz`` archive, an image folder of class subfolders (:mod:`.folders`), a pair (images, labels) or a torch Dataset,
each checked at the boundary into :class:`TrainingData`."""
from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import TrainConfig, from_dict
from ..data import SOURCES, load_dataset
from ..data.base import channel_stats
from ..runtime import Runtime
from ..training import ImageBank, Recipe
from .folders import is_image_folder, read_image_folder


@dataclass
class TrainingData:
    """Images as the model was trained on them, their given labels, and what is known beyond that.

    ``images``: uint8 ``[N, C, H, W]`` (normalised with ``mean``/``std`` on the [0, 1] scale) or floating point,
    exactly as the model reads them (``mean``/``std`` are then 0 and 1). ``train_idx``: the indices that were
    trained on (all of them for a user's data; a benchmark run holds its validation split out). ``true_labels`` and
    ``setting`` are known only for a benchmark run (``corrective train``'s folder)."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_idx: torch.Tensor
    val_idx: torch.Tensor | None = None  # a validation split of the same images (a benchmark run's)
    val_labels: torch.Tensor | None = None
    triggered: torch.Tensor | None = None  # samples rendered with the setting's trigger
    trigger: Any = None
    true_labels: torch.Tensor | None = None
    setting: Any = None  # experiment.Setting of a benchmark run: its test-set metrics
    description: str = "tensors"
    classes: tuple[str, ...] | None = None  # an image folder's class names, in label order (sorted)
    files: list[str] | None = None  # an image folder's files (relative to ``root``): index i is files[i]
    root: str | None = None  # the image folder

    @property
    def num_classes(self) -> int:
        if self.classes is not None:  # an image folder: every class folder counts, even one left empty
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def bank(self, runtime: Runtime) -> ImageBank:
        return ImageBank(self.images, self.mean, self.std, runtime.device, self.trigger, channels_last=False)


def describe(value) -> str:
    """``Tensor torch.uint8 (2, 3)``: what a value is, for an error message."""
    shape = tuple(getattr(value, "shape", ()))
    dtype = getattr(value, "dtype", "")
    return f"{type(value).__name__} {dtype} {shape}".replace("  ", " ").strip()


def as_images_labels(data, what: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` from a pair of tensors or arrays, or from a ``torch.utils.data.Dataset`` whose items
    are ``(image, label)``."""
    if isinstance(data, TrainingData):  # read from a file or folder: checked already
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    elif isinstance(data, torch.utils.data.Dataset):
        images, labels = _stack_dataset(data, what)
    else:
        raise ValueError(f"{what}: expected a torch Dataset of (image, label) items, a pair (images, labels) or a "
                         f"registered dataset name, got {describe(data)}")
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    return _check_images(images, what), _check_labels(labels, len(images), what)


def _stack_dataset(dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        n = len(dataset)
    except TypeError as error:
        raise ValueError(f"{what}: the Dataset must have a length (a map-style Dataset)") from error
    if n == 0:
        raise ValueError(f"{what}: the Dataset is empty")
    images, labels = [], []
    for i in range(n):
        item = dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise ValueError(f"{what}: item {i} of the Dataset is {describe(item)}; expected (image, label)")
        images.append(torch.as_tensor(np.asarray(item[0]) if not isinstance(item[0], torch.Tensor) else item[0]))
        labels.append(_item_label(item[1], i, what))
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise ValueError(f"{what}: the Dataset's images differ in shape ({sorted(shapes)[:3]}...); expected one "
                         f"shape [C, H, W]")
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _item_label(value, i: int, what: str) -> int:
    """A Dataset item's label as an int; a float label is refused (as the pair form refuses float labels), not
    truncated."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.reshape(()).item()  # a Python int, float or bool, as the tensor's dtype
    elif isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)):
        kind = "bool"
    elif isinstance(value, (int, np.integer)):
        return int(value)
    elif isinstance(value, (float, np.floating)):
        raise ValueError(f"{what} labels: item {i}'s label is {float(value)!r} (float); expected an integer class "
                         f"index (float labels are refused, not truncated)")
    else:
        kind = describe(value)
    raise ValueError(f"{what} labels: item {i}'s label is {value!r} ({kind}); expected an integer class index")


def check_float_scale(images: torch.Tensor, what: str) -> None:
    """Float images are fed to the model as given; values in [0, >1.5] with nothing negative look like the 0-255
    scale of undivided pixels, which a model trained on [0, 1] or normalised images would misread."""
    if not images.is_floating_point() or images.numel() == 0:
        return
    low, high = float(images.min()), float(images.max())
    if low >= 0 and high > 1.5:
        raise ValueError(f"{what} images: float values in [{low:g}, {high:g}] look like a 0-255 scale, but float "
                         f"images are fed to the model exactly as given: pass uint8 images (normalised with "
                         f"mean/std), floats as the model reads them (scaled to [0, 1] or normalised), or mean= and "
                         f"std= to normalise these floats as (x - mean) / std (mean=0, std=1 takes them as they are)")


def _check_images(images: torch.Tensor, what: str) -> torch.Tensor:
    if images.dim() == 3:  # [N, H, W]: one channel
        images = images.unsqueeze(1)
    if images.dim() != 4 or not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise ValueError(f"{what} images: expected uint8 or float [N, C, H, W] (or [N, H, W]), got "
                         f"{describe(images)}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError(f"{what} images: some values are NaN or infinite")
    return images


def _check_labels(labels: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{what} labels: expected integer class indices [N], got {describe(labels)}")
    if len(labels) != n:
        raise ValueError(f"{what}: {n} images but {len(labels)} labels")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"{what} labels: expected class indices >= 0, got {int(labels.min())}")
    return labels.cpu().long()


def training_data(data, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  data_dir: str | None = None, download: bool = False, runtime: Runtime | None = None,
                  image_size=None, like: TrainingData | None = None) -> TrainingData:
    """:class:`TrainingData` from a registered dataset name, a benchmark run folder (``corrective train``'s
    output), an ``.npz`` file with ``images`` and ``labels``, an image folder of class subfolders (resized to
    ``image_size``, else the first image's size), a pair (images, labels) or a torch Dataset.

    ``like``: the training data a validation set belongs to; an image folder is then read with its classes, size,
    channels and normalisation."""
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, (str, Path)):
        if is_image_folder(data) and not _registered_name(str(data)):
            return _folder_data(Path(data), mean, std, image_size, like)
        return _named_data(str(data), data_dir, download, runtime)
    images, labels = as_images_labels(data)
    return training_data_from_tensors(images, labels, mean, std)


def training_data_from_tensors(images: torch.Tensor, labels: torch.Tensor, mean=None, std=None,
                               description: str = "tensors", what: str = "train") -> TrainingData:
    """uint8 images are normalised with ``mean``/``std`` on the [0, 1] scale (computed from the images when not
    given); float images are taken as the model reads them, or normalised as ``(x - mean) / std`` on their own scale
    when ``mean`` and ``std`` are given. Float images that look like a 0-255 scale need ``mean``/``std``."""
    images = images.cpu()
    if images.dtype != torch.uint8 and (mean is None or std is None):  # already as the model reads it
        check_float_scale(images, what)
        mean, std = (0.0,) * images.shape[1], (1.0,) * images.shape[1]
    elif images.dtype == torch.uint8 and (mean is None or std is None):
        mean, std = channel_stats(images)
    for name, stats in (("mean", mean), ("std", std)):
        if len(stats) != images.shape[1]:
            raise ValueError(f"{name}: expected one value per channel ({images.shape[1]}), got {len(stats)}")
    return TrainingData(images=images, labels=labels, mean=tuple(mean), std=tuple(std),
                        train_idx=torch.arange(len(labels)), description=description)


def _registered_name(spec: str) -> bool:
    """A registered dataset's bare name (``cifar10``) means the dataset even when a folder of that name is in the
    current folder; ``./cifar10`` names the folder."""
    return spec in SOURCES.names() and "/" not in spec and "\\" not in spec


def _folder_data(root: Path, mean, std, size, like: TrainingData | None) -> TrainingData:
    if like is not None:
        size = tuple(like.images.shape[2:]) if size is None else size
        mean, std = (like.mean, like.std) if mean is None or std is None else (mean, std)
    folder = read_image_folder(root, size, classes=like.classes if like is not None else None,
                               channels=int(like.images.shape[1]) if like is not None else None)
    data = training_data_from_tensors(folder.images, folder.labels, mean, std,
                                      description=f"image folder {root} ({len(folder.files)} images, "
                                                  f"{len(folder.classes)} classes)", what=str(root))
    return dataclasses.replace(data, classes=folder.classes, files=folder.files, root=str(root))


def _named_data(spec: str, data_dir, download, runtime) -> TrainingData:
    path = Path(spec)
    if path.is_dir() and (path / "record.json").exists():
        return from_run(path, runtime or Runtime.create("cpu", progress=False))
    if path.suffix == ".npz":
        images, labels = _read_npz(path)
        images, labels = _check_images(images, str(path)), _check_labels(labels, len(images), str(path))
        return training_data_from_tensors(images, labels, description=str(path), what=str(path))
    if spec not in SOURCES.names():
        raise ValueError(f"data {spec!r}: expected a registered dataset ({', '.join(SOURCES.names())}), a "
                         f"'corrective train' run folder (holding record.json), an image folder of class "
                         f"subfolders or an .npz file with images and labels")
    options = {"download": download} | ({"data_dir": data_dir} if data_dir else {})
    dataset = load_dataset(spec, **options)
    return training_data_from_tensors(dataset.train_images, dataset.train_labels, dataset.mean, dataset.std,
                        description=f"{spec} (training split as stored)")


# The two layouts of an .npz archive: a practitioner's training data, or the ``tensors`` dataset's archive (whose
# training split is the data; its test split is never read here).
NPZ_LAYOUTS = (("images", "labels"), ("train_images", "train_labels"))
NPZ_EXPECTED = "arrays 'images' and 'labels' (or 'train_images' and 'train_labels', as a dataset archive holds)"


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of an .npz archive in either of :data:`NPZ_LAYOUTS`, never unpickling anything."""
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"data {path} is a folder; expected an .npz file with {NPZ_EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz archive (numpy.savez writes a zip of .npy arrays); expected one "
                         f"with {NPZ_EXPECTED}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = next((layout for layout in NPZ_LAYOUTS if set(layout) <= set(archive.files)), None)
            if keys is None:
                raise ValueError(f"{path}: expected {NPZ_EXPECTED}; it holds {sorted(archive.files)}")
            images, labels = (_numeric_array(archive, key, path) for key in keys)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path} is not a readable .npz archive ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else 'damaged'})") from None
    return torch.from_numpy(images), torch.from_numpy(labels)


def _numeric_array(archive, key: str, path: Path) -> np.ndarray:
    """Array ``key`` of an open archive; one that would need unpickling is refused."""
    try:
        array = archive[key]
    except ValueError as error:
        pickled = "pickle" in str(error).lower() or "object" in str(error).lower()
        raise ValueError(f"{path}: array {key!r} " + (
            "holds Python objects, which would need unpickling (refused); expected a numeric array"
            if pickled else f"cannot be read ({str(error).splitlines()[0]})")) from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: array {key!r} is not a numpy array (its entry is not an .npy file)")
    return array


def from_run(folder: Path, runtime: Runtime) -> TrainingData:
    """The manipulated training set of a ``corrective train`` run, rebuilt from its record (the same data, split,
    manipulation and seed; checked against the record's index hashes)."""
    from ..experiment import build_setting  # lazy: only a benchmark run needs experiment (manipulations, cache)

    record = json.loads((folder / "record.json").read_text())
    config = from_dict(TrainConfig, {k: v for k, v in record["config"].items() if k not in ("recipe",)}
                       | {"recipe": {}})
    m = config.manipulation
    dataset = load_dataset(config.dataset.name, **config.dataset.loader_options())
    val_size = config.dataset.resolved_val_size(len(dataset.train_labels))
    recipe = Recipe(**record["config"]["recipe"])  # the run's resolved recipe: a surrogate trains as it did
    setting = build_setting(dataset, m.name, m.n, config.seed, runtime, val_size, recipe, **m.params)
    if record.get("index_hashes") and setting.index_hashes() != record["index_hashes"]:
        raise ValueError(f"{folder}: the rebuilt training set differs from the one the run recorded (index hashes "
                         f"{setting.index_hashes()} vs {record['index_hashes']}): the data files changed")
    manipulated = setting.manipulated
    return TrainingData(
        images=dataset.train_images, labels=manipulated.labels.cpu(), mean=dataset.mean, std=dataset.std,
        train_idx=setting.train_idx, val_idx=setting.val_idx,
        val_labels=manipulated.clean_labels[setting.val_idx].cpu(), triggered=manipulated.triggered.cpu(),
        trigger=manipulated.trigger, true_labels=manipulated.clean_labels.cpu(), setting=setting,
        description=f"{folder} ({dataset.name}, {m.name} n={m.n}, seed {config.seed})")
