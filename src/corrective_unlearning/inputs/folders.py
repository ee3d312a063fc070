"""Image folders: a folder of class subfolders (``root/<class>/<image>``, the layout torchvision's ImageFolder and
most labelling tools write), read with Pillow.

- Classes are the subfolder names, sorted; class ``i`` is the ``i``-th name. A validation folder is read with the
  training folder's classes (a class it lacks is fine; one the training folder lacks is an error).
- Images are the files with an image suffix (:data:`IMAGE_SUFFIXES`) anywhere under a class folder; hidden files
  and other files are skipped. The file list is sorted by class, then by path inside the class folder: index ``i``
  of the data (and of the flagged indices) is the ``i``-th file of that list, which ``corrective fix`` writes beside
  its report (``files.csv``: index, path, class).
- One size for all: ``size`` (``32``, or ``(height, width)``) when given, else the first image's; others are resized
  (bilinear). Grayscale (every image in mode L, 1, I or F) gives one channel, anything else RGB.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = ("L", "1", "I", "I;16", "F")


@dataclass
class ImageFolder:
    """The images (uint8 ``[N, C, H, W]``), labels, sorted classes and the sorted file list (paths relative to
    ``root``) of an image folder."""

    root: Path
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    files: list[str]


def is_image_folder(path: str | Path) -> bool:
    """A folder that is not a ``corrective train`` run (no record.json): read as class subfolders."""
    path = Path(path)
    return path.is_dir() and not (path / "record.json").exists()


def image_size(size) -> tuple[int, int] | None:
    """``32``, ``"32"``, ``"32x48"`` or ``(32, 48)`` as (height, width); None stays None."""
    if size is None:
        return None
    try:
        if isinstance(size, str):
            parts = [int(p) for p in size.lower().replace(",", "x").split("x")]
        elif isinstance(size, int):
            parts = [size]
        else:
            parts = [int(p) for p in size]
    except (TypeError, ValueError):
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError(f"image size: expected a size such as 32 or 32x48 (height x width), got {size!r}")
    return parts[0], parts[1]


def list_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> tuple[tuple[str, ...], list[str],
                                                                                    list[int]]:
    """The classes (sorted subfolder names, or ``classes`` as given), and the sorted relative file paths with their
    class indices."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        loose = sorted(p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        got = f"{len(loose)} image file(s) directly in it (e.g. {loose[0]})" if loose else "no subfolders"
        raise ValueError(f"image folder {root}: expected one subfolder per class (root/<class>/<image>), got {got}")
    if classes is None:
        classes = tuple(found)
    else:
        classes = tuple(classes)
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise ValueError(f"image folder {root}: class folder(s) {unknown[:3]} are not among the training "
                             f"data's classes {list(classes)}; expected the same class names")
    files, labels = [], []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        inside = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                        and not any(part.startswith(".") for part in p.relative_to(root).parts))
        files.extend(p.relative_to(root).as_posix() for p in inside)
        labels.extend([index] * len(inside))
    if not files:
        raise ValueError(f"image folder {root}: its class folders ({', '.join(found[:5])}) hold no image files; "
                         f"expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return classes, files, labels


def read_image_folder(root: str | Path, size=None, classes: Sequence[str] | None = None,
                      channels: int | None = None) -> ImageFolder:
    """Read every image of ``root`` (module docstring); ``channels`` (1 or 3) forces the channel count, as a
    validation folder must match the training folder's."""
    root = Path(root)
    classes, files, labels = list_image_folder(root, classes)
    size = image_size(size)
    opened = []
    for name in files:
        try:
            with Image.open(root / name) as image:
                image.load()
                opened.append(image.copy())
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"image folder {root}: {name} is not a readable image ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else 'damaged'}); expected an image Pillow "
                             f"reads (or remove it)") from None
    if channels is None:
        channels = 1 if all(image.mode in GRAYSCALE_MODES for image in opened) else 3
    if size is None:
        width, height = opened[0].size
        size = (height, width)
    arrays = []
    for image in opened:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return ImageFolder(root=root, images=torch.from_numpy(np.stack(arrays)), labels=torch.tensor(labels),
                       classes=classes, files=files)


def is_path_list(path: str | Path) -> bool:
    """A flagged file that lists image paths rather than indices: its first entry (after blank lines and ``#``
    comments) has an image suffix."""
    path = Path(path)
    if not path.is_file() or path.suffix in (".json", ".csv"):
        return False
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        return False
    first = next((line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
    return Path(first).suffix.lower() in IMAGE_SUFFIXES


def flagged_from_paths(path: str | Path, root: str | Path, files: Sequence[str]) -> list[int]:
    """The indices of the images a text file lists, one path a line (relative to the image folder ``root`` or
    absolute; blank lines and ``#`` comments skipped); each must be one of ``files``, at most once."""
    path, root = Path(path), Path(root)
    where = {name: i for i, name in enumerate(files)}
    resolved_root = root.resolve()
    indices, seen = [], {}
    for number, line in enumerate(path.read_bytes().decode("utf-8-sig").splitlines(), start=1):
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if not line:
            continue
        given = Path(line)
        candidate = given.resolve() if given.is_absolute() else (root / given).resolve()
        try:
            name = candidate.relative_to(resolved_root).as_posix()
        except ValueError:
            name = None
        if name not in where:
            raise ValueError(f"{path}, line {number}: expected an image of the folder {root} (a path relative to it "
                             f"or absolute), got {line!r}, which is not one of its {len(files)} images")
        if name in seen:
            raise ValueError(f"{path}, line {number}: {line!r} is already on line {seen[name]}; expected each "
                             f"image once")
        seen[name] = number
        indices.append(where[name])
    if not indices:
        raise ValueError(f"{path} lists no image; expected at least one path of a flagged image")
    return indices


def write_file_list(path: str | Path, files: Sequence[str], labels: Sequence[int], classes: Sequence[str],
                    root: str | Path | None = None) -> Path:
    """``index,path,class`` for every image (the order the indices refer to), as CSV."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path", "class"])
        for i, (name, label) in enumerate(zip(files, labels)):
            writer.writerow([i, name if root is None else (Path(root) / name).as_posix(), classes[int(label)]])
    return path
