"""The flagged indices: integer indices or a boolean mask in memory, or a file of them (text, CSV or JSON), each
checked to name every sample once and to lie inside the training set."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import torch


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
