"""What the practitioner's paths read: training data in any of its forms, the flagged indices, a model file.

Every reader checks its input at the boundary and raises a ValueError (or FileNotFoundError) that says what was
expected and what was received, so a bad file or argument fails before any work is done.

Both ``corrective fix`` (:mod:`.fix`) and the suspects ranking (:mod:`.suspects`) read these inputs, so they live
below both: neither has to reach into the other to parse what the practitioner hands it.
"""
from __future__ import annotations

import csv
import json
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .config import TrainConfig, from_dict
from .data import SOURCES, load_dataset
from .data.base import channel_stats
from .models import create_model
from .runtime import Runtime
from .training import ImageBank, Recipe


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

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def bank(self, runtime: Runtime) -> ImageBank:
        return ImageBank(self.images, self.mean, self.std, runtime.device, self.trigger, channels_last=False)


def _describe(value) -> str:
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
                         f"registered dataset name, got {_describe(data)}")
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
            raise ValueError(f"{what}: item {i} of the Dataset is {_describe(item)}; expected (image, label)")
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
        kind = _describe(value)
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
                         f"{_describe(images)}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError(f"{what} images: some values are NaN or infinite")
    return images


def _check_labels(labels: torch.Tensor, n: int, what: str) -> torch.Tensor:
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{what} labels: expected integer class indices [N], got {_describe(labels)}")
    if len(labels) != n:
        raise ValueError(f"{what}: {n} images but {len(labels)} labels")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"{what} labels: expected class indices >= 0, got {int(labels.min())}")
    return labels.cpu().long()


def training_data(data, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  data_dir: str | None = None, download: bool = False, runtime: Runtime | None = None
                  ) -> TrainingData:
    """:class:`TrainingData` from a registered dataset name, a benchmark run folder (``corrective train``'s
    output), an ``.npz`` file with ``images`` and ``labels``, a pair (images, labels) or a torch Dataset."""
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, (str, Path)):
        return _named_data(str(data), data_dir, download, runtime)
    images, labels = as_images_labels(data)
    return training_data_from_tensors(images, labels, mean, std)


def training_data_from_tensors(images: torch.Tensor, labels: torch.Tensor, mean=None, std=None, description: str = "tensors",
                 what: str = "train") -> TrainingData:
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
                         f"'corrective train' run folder (holding record.json) or an .npz file with images and "
                         f"labels")
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
    from .experiment import build_setting  # lazy: only a benchmark run needs experiment (manipulations, cache)

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


# ----------------------------------------------------------------------------------------------------- flagged
def flagged_indices(flagged, n: int) -> torch.Tensor:
    """Sorted int64 CPU indices from integer indices or a boolean mask of length ``n``. Refused, each with a
    message saying what was expected: floats, duplicates, an empty set, indices outside [0, n - 1], a mask of
    another length, more than one dimension."""
    if isinstance(flagged, (set, frozenset)):  # unordered: taken sorted
        try:
            flagged = sorted(flagged)
        except TypeError:
            raise ValueError(f"flagged: expected a set of integer indices, got one holding "
                             f"{sorted({type(v).__name__ for v in flagged})}") from None
    flagged = torch.as_tensor(np.asarray(flagged) if not isinstance(flagged, torch.Tensor) else flagged).cpu()
    if flagged.dim() > 1:
        raise ValueError(f"flagged: expected a 1-D set of indices or a boolean mask, got shape {tuple(flagged.shape)}")
    flagged = flagged.reshape(-1)
    if flagged.dtype == torch.bool:
        if len(flagged) != n:
            raise ValueError(f"flagged: a boolean mask of length {n} (one entry per training sample) is expected, "
                             f"got one of length {len(flagged)}")
        flagged = torch.nonzero(flagged).flatten()
    elif len(flagged) and (flagged.is_floating_point() or flagged.is_complex()):
        raise ValueError(f"flagged: expected integer indices or a boolean mask, got dtype {flagged.dtype}")
    if len(flagged) == 0:
        raise ValueError("flagged: the set is empty; expected at least one index of a sample found to be bad")
    flagged = flagged.to(torch.int64)
    unique, counts = flagged.unique(return_counts=True)
    if bool((counts > 1).any()):
        repeated = unique[counts > 1]
        raise ValueError(f"flagged: {len(repeated)} index(es) appear more than once (e.g. "
                         f"{repeated[:5].tolist()}); expected each sample once")
    if int(unique.min()) < 0 or int(unique.max()) >= n:
        outside = unique[(unique < 0) | (unique >= n)]
        raise ValueError(f"flagged: expected indices in [0, {n - 1}] ({n} training samples), got "
                         f"{len(outside)} outside it (e.g. {outside[:5].tolist()})")
    return unique


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
FLAGGED_COLUMNS = ("index", "idx", "flagged")
_SEPARATORS = (",", ";", "\t")


def read_flagged(path: str | Path, n: int | None = None) -> list[int]:
    """Indices from a text file (one per line; blank lines and ``#`` comments skipped), a CSV file (``,``, ``;`` or
    tab separated; a column named index, idx or flagged, else the first column; the first row is a header when its
    first field is not a number) or a JSON file (a list, or an object with an ``indices`` or ``flagged`` list). A
    UTF-8 byte order mark is skipped.

    Every value must be an integer index (``5.0`` is refused, not read as 5), each at most once, and, when ``n`` (the
    number of training samples) is given, in [0, n - 1]. Errors name the file and the line (the entry for JSON)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"flagged file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"flagged file {path} is a folder; expected a file of indices (.txt, .csv or .json)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file: expected one index per line, CSV or JSON") from None
    if path.suffix == ".json":
        entries = _json_entries(text, path)
    elif path.suffix == ".csv":
        entries = _csv_entries(text, path)
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append((f"line {number}", _index(line, path, f"line {number}")))
    return _checked_entries(entries, path, n)


def _json_entries(text: str, path: Path) -> list[tuple[str, int]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if isinstance(data, dict):
        data = data.get("indices", data.get("flagged"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of indices or an object with an 'indices' list")
    return [(f"entry {i}", _index(v, path, f"entry {i}")) for i, v in enumerate(data)]


def _csv_entries(text: str, path: Path) -> list[tuple[str, int]]:
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    separator = next((c for c in _SEPARATORS if c in lines[0][1]),
                     next((c for c in _SEPARATORS if any(c in line for _, line in lines)), ","))
    rows = [(number, [cell.strip() for cell in next(csv.reader([line], delimiter=separator))])
            for number, line in lines]
    header = None
    if not _NUMBER.fullmatch(rows[0][1][0] if rows[0][1] else ""):
        header = [cell.lower() for cell in rows[0][1]]
        rows = rows[1:]
    column = next((header.index(name) for name in FLAGGED_COLUMNS if header and name in header), 0)
    where = f"column {header[column]!r} (column {column + 1})" if header and column < len(header) else \
        f"column {column + 1}"
    entries = []
    for number, row in rows:
        if len(row) <= column:
            raise ValueError(f"{path}, line {number}: expected a value in {where}, got a row of {len(row)} "
                             f"field{'' if len(row) == 1 else 's'}")
        if row[column] == "":
            raise ValueError(f"{path}, line {number}: expected a value in {where}, got an empty field")
        entries.append((f"line {number}", _index(row[column], path, f"line {number}")))
    return entries


def _checked_entries(entries: list[tuple[str, int]], path: Path, n: int | None) -> list[int]:
    """The values, after checking each is >= 0 (and < ``n``) and appears once; errors name where."""
    seen: dict[int, str] = {}
    for where, value in entries:
        if value < 0:
            raise ValueError(f"{path}, {where}: expected an index >= 0, got {value}")
        if n is not None and value >= n:
            raise ValueError(f"{path}, {where}: index {value} is outside [0, {n - 1}] ({n} training samples)")
        if value in seen:
            raise ValueError(f"{path}, {where}: index {value} is already on {seen[value]}; expected each sample "
                             f"once")
        seen[value] = where
    return [value for _, value in entries]


def _index(value, path: Path, where: str) -> int:
    """An integer index from a JSON value or a text field; 5.0, 5.5, true and words are refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError(f"{path}, {where}: expected an integer index, got {value!r}")


# ------------------------------------------------------------------------------------------------------- model
def check_model(model: nn.Module, bank: ImageBank, num_classes: int) -> int:
    """The model's number of outputs, after checking that its weights are finite and that it maps the first
    images of ``bank`` (normalised as in training) to one score per class (at least ``num_classes``)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
    bad = [name for name, t in list(model.named_parameters()) + list(model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"model: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[:3]}); expected "
                         f"finite weights (was the model saved after its training diverged?)")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = bank.batch(torch.arange(min(2, len(bank)))).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as error:  # the user's model: any failure means it does not take these inputs
        raise ValueError(f"model: it does not accept the training images (a batch of shape {tuple(x.shape)}): "
                         f"{type(error).__name__}: {error}") from error
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        raise ValueError(f"model: expected logits of shape [batch, classes] for a batch of {len(x)}, got "
                         f"{_describe(out)}")
    if out.shape[1] < num_classes:
        raise ValueError(f"model: it has {out.shape[1]} outputs but the labels need {num_classes} classes "
                         f"(labels go up to {num_classes - 1}); expected one output per class")
    return int(out.shape[1])


def load_model(path: str | Path, arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """A registry model (``arch``) with the weights of ``path``: safetensors, or a PyTorch checkpoint read with
    ``weights_only=True`` (a state dict, or a dict holding one under ``state_dict`` or ``model``)."""
    path = check_model_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError  # lazy: read only for a .safetensors file
        from safetensors.torch import load_file  # lazy: read only for a .safetensors file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    else:
        if not _looks_like_checkpoint(path):
            raise ValueError(f"{path} is not a readable model file: expected safetensors (.safetensors) or a PyTorch "
                             f"checkpoint written by torch.save (a zip archive or a pickle)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle errors come in many types; all mean the same here
            raise ValueError(
                f"{path} cannot be read as weights only ({type(error).__name__}: {str(error).splitlines()[0]}). "
                f"Checkpoints that need to run pickled code on loading are refused, since that code could do "
                f"anything: save the model's state_dict() (torch.save(model.state_dict(), ...)) or safetensors") \
                from error
        if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
            state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    model = create_model(arch, num_classes, in_channels)
    expected = model.state_dict()
    state, stripped = _strip_wrapper_prefix(state, expected)
    what = f"{path} does not fit a {arch} with {num_classes} classes and {in_channels} input channel(s)" + (
        f" (key prefix {stripped!r} of {PREFIXES[stripped]} stripped)" if stripped else "")
    problems = state_dict_mismatch(state, expected)
    if problems:
        raise ValueError(f"{what}: {problems} (check --arch and the data)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{what}: {str(error).splitlines()[0]} (check --arch and the data)") from error
    if stripped:
        warnings.warn(f"{path}: key prefix {stripped!r} ({PREFIXES[stripped]}) stripped from its keys", UserWarning,
                      stacklevel=2)
    return model


# key prefixes that wrappers add to every name of the state dict they save
PREFIXES = {"module.": "a DataParallel / DistributedDataParallel wrapper", "_orig_mod.": "a torch.compile wrapper"}


def _strip_wrapper_prefix(state: dict, expected: dict) -> tuple[dict, str | None]:
    """``state`` without a wrapper's key prefix (:data:`PREFIXES`) that every key has and the model's do not."""
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
            return {k[len(prefix):]: v for k, v in state.items()}, prefix
    return state, None


def state_dict_mismatch(state: dict, expected: dict, limit: int = 3) -> str:
    """What keeps ``state`` from loading into a model with state dict ``expected`` (the first ``limit`` of each
    kind: shape mismatches, missing and unexpected keys), or '' when it fits."""
    def listing(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")

    shapes = [f"{k}: file {list(state[k].shape)} vs model {list(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {listing(shapes)}")
    if missing:
        parts.append(f"{len(missing)} key(s) the model has but the file lacks: {listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} key(s) in the file the model lacks: {listing(unexpected)}")
    return "; ".join(parts)


def check_model_file(path: str | Path, what: str = "model file") -> Path:
    """``path`` is an existing file (a folder is refused, naming the model files in it)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin"))
        hint = f" (it holds {', '.join(str(path / name) for name in inside[:3])})" if inside else ""
        raise ValueError(f"{what} {path} is a folder; expected a model file (.safetensors or a PyTorch "
                         f"checkpoint){hint}")
    return path


def _looks_like_checkpoint(path: Path) -> bool:
    """torch.save writes a zip archive (or, in its legacy format, a pickle starting with the protocol byte)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80"


__all__ = ["FLAGGED_COLUMNS", "PREFIXES", "TrainingData", "as_images_labels", "check_float_scale", "check_model",
           "check_model_file", "flagged_indices", "from_run", "training_data_from_tensors", "load_model", "read_flagged",
           "state_dict_mismatch", "training_data"]
