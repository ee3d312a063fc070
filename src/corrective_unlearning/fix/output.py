"""Where ``corrective fix`` and ``corrective train`` write: checked before any work, so that nothing a user has is
overwritten.

A folder is written into only when it is new, empty, or holds nothing but an earlier output of the same command
(recognised by that output's own files). ``corrective fix`` replaces an earlier fix only with ``--force``, and then
whole (stale figures included); ``corrective train`` rewrites its run folder when it is the same run (same
resolved config) and replaces a different run's only with ``--force``. A folder holding anything else is never
written into, even with ``--force``; neither is the folder an input was read from.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable

import yaml

WRITTEN_BY = "corrective fix"  # record.json and model.json of a fix say so
FIX_FILES = ("model.safetensors", "model.json", "record.json", "report.md", "flipped.csv", "files.csv")
FIX_FIGURES = ("accuracy.png", "per-class.png", "candidates.png")
TRAIN_FILES = ("config.yaml", "record.json", "model.safetensors", "model.json", "flagged.txt")


def _leftover(name: str, files: Iterable[str]) -> bool:
    """A partial file an interrupted atomic write of one of ``files`` left behind."""
    return any(name == f"{f}.part" or (name.startswith(f".{f}.") and name.endswith(".tmp")) for f in files)


def _names(paths: list[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f", ... ({len(paths)} in all)" if len(paths) > limit else "")


def check_writable(path: Path, what: str) -> None:
    """``path`` (a folder) exists and is writable, or can be created: its nearest existing parent is a writable
    folder. Probed with a temporary file, so read-only file systems count too; nothing is left behind."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        action = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise ValueError(f"{what} {path} {action} ({error.strerror or error})") from None


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_not_an_input(out: Path, inputs: dict[str, str | Path | None], option: str) -> None:
    """``out`` is neither an input's folder nor a folder holding an input (replacing it would remove that)."""
    resolved = out.resolve()
    for name, path in inputs.items():
        if path is None or str(path) == "":
            continue
        path = Path(path)
        folder = path.resolve() if path.is_dir() else path.resolve().parent
        if folder == resolved:
            kind = f"the {name} run folder" if path.is_dir() else f"the folder of {name}"
            raise ValueError(f"{option} {out} is {kind} ({path}): the output never goes where an input is read "
                             f"from; choose a new folder")
        if _inside(folder, resolved):
            raise ValueError(f"{option} {out} holds {name} ({path}): the output never goes where an input is read "
                             f"from; choose a new folder")


# ----------------------------------------------------------------------------------------------------- fix
def _foreign_to_fix(out: Path) -> tuple[list[str], list[str]]:
    """(entries fix did not write, fix's own files) under ``out``, as paths relative to it."""
    foreign, own = [], []
    for entry in sorted(out.iterdir()):
        if entry.name == "figures" and entry.is_dir() and not entry.is_symlink():
            for figure in sorted(entry.iterdir()):
                ok = figure.is_file() and (figure.name in FIX_FIGURES or _leftover(figure.name, FIX_FIGURES))
                (own if ok else foreign).append(f"figures/{figure.name}")
            own.append("figures/")
        elif entry.is_file() and (entry.name in FIX_FILES or _leftover(entry.name, FIX_FILES)):
            own.append(entry.name)
        else:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign, own


def earlier_fix(out: Path) -> dict | None:
    """What an earlier fix in ``out`` says about itself (its record.json, else its model.json), or None when
    ``out`` holds no fix."""
    for name in ("record.json", "model.json"):
        try:
            data = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (data.get("written_by") == WRITTEN_BY
                                       or {"requested_method", "flipped"} <= set(data)):  # before the marker
            return data
    return None


def check_fix_out(out: str | Path, inputs: dict[str, str | Path | None] | None = None, force: bool = False,
                  option: str = "--out") -> Path:
    """Check that a fix may write into ``out``: not '', not a file, not an input's folder (``inputs``: option
    name -> path), new or empty or an earlier fix's folder (then only with ``force``), writable. Raises a
    ValueError saying what is wrong; returns the folder. Nothing is changed."""
    if str(out).strip() == "":
        raise ValueError(f"{option}: expected a folder, got {str(out)!r} (it would write into the current folder)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out} is a file; expected a folder (new, empty, or an earlier fix's, replaced "
                         f"with --force)")
    _check_not_an_input(out, inputs or {}, option)
    if out.is_dir():
        try:
            foreign, own = _foreign_to_fix(out)
        except OSError as error:
            raise ValueError(f"{option} {out} cannot be read ({error.strerror or error}); expected a folder fix "
                             f"may write into") from None
        if foreign:
            raise ValueError(f"{option} {out} holds files fix did not write ({_names(foreign)}): they are never "
                             f"replaced, even with --force; choose a new or empty folder")
        if own:
            earlier = earlier_fix(out)
            if earlier is None:
                raise ValueError(f"{option} {out} holds {_names([o for o in own if o != 'figures/'])} but no earlier "
                                 f"fix (its record.json): they are never replaced, even with --force; choose a new "
                                 f"or empty folder")
            if not force:
                raise ValueError(f"{option} {out} holds an earlier fix (method {earlier.get('method', '?')}); pass "
                                 f"--force to replace it whole, or choose another folder")
    check_writable(out, option)
    return out


def clear_fix(out: Path) -> None:
    """Remove an earlier fix from ``out`` (checked by :func:`check_fix_out`: nothing else is there)."""
    foreign, own = _foreign_to_fix(out)
    if foreign:  # checked before; a file that appeared since is still never removed
        raise ValueError(f"{out} holds files fix did not write ({_names(foreign)}): they are never replaced")
    for name in own:
        if name != "figures/":
            (out / name).unlink()
    if (out / "figures").is_dir():
        (out / "figures").rmdir()


# --------------------------------------------------------------------------------------------------- train
def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    flat = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat or {prefix: data}


IGNORED = ("out", "device", "compile", "cache")  # where and how it runs, not what it makes


def config_differences(old: dict, new: dict) -> list[str]:
    """``key old -> new`` for every leaf that differs, where and how a run runs (out, device, ...) left out."""
    a, b = _flat(old), _flat(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if k.rstrip(".").split(".")[0] not in IGNORED]
    return [f"{k.rstrip('.')} {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys if a.get(k) != b.get(k)]


def check_train_folder(folder: Path, config: dict, flag_rate: float, force: bool = False) -> bool:
    """Check that ``corrective train`` may write its run into ``folder``: new, empty, the same run (same resolved
    ``config`` and ``flag_rate``), or, with ``force``, a different run's folder holding nothing else. Returns True
    when an earlier, different run is to be replaced (:func:`clear_train`)."""
    if str(folder.parent).strip() == "" or str(config.get("out", "x")).strip() == "":
        raise ValueError("out: expected a folder, got '' (it would write into the current folder)")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"run folder {folder} is a file; expected a folder")
    replace = False
    try:
        occupied = folder.is_dir() and any(folder.iterdir())
    except OSError as error:
        raise ValueError(f"run folder {folder} cannot be read ({error.strerror or error})") from None
    if occupied:
        own = [e.name for e in folder.iterdir() if e.is_file() and (e.name in TRAIN_FILES
                                                                    or _leftover(e.name, TRAIN_FILES))]
        foreign = sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir() if e.name not in own)
        earlier = _earlier_run(folder)
        if earlier is None:
            raise ValueError(f"run folder {folder} holds files that are not a 'corrective train' run's "
                             f"({_names(sorted(own) + foreign)}): they are never replaced, even with --force; "
                             f"choose another --out")
        old_config, old_rate = earlier
        differences = config_differences(old_config, config)
        if old_rate is not None and old_rate != flag_rate:
            differences.append(f"--flag {old_rate} -> {flag_rate}")
        if differences:
            if not force:
                raise ValueError(f"run folder {folder} holds a different run ({'; '.join(differences[:3])}"
                                 f"{'; ...' if len(differences) > 3 else ''}); pass --force to replace it, or "
                                 f"choose another --out")
            if foreign:
                raise ValueError(f"run folder {folder} holds files train did not write ({_names(foreign)}): they "
                                 f"are never replaced, even with --force; choose another --out")
            replace = True
    check_writable(folder, "run folder")
    return replace


def _earlier_run(folder: Path) -> tuple[dict, float | None] | None:
    """(config, flag rate) of the run in ``folder``: its record.json, else (an unfinished run) its config.yaml."""
    try:
        record = json.loads((folder / "record.json").read_text())
        if isinstance(record, dict) and record.get("kind") == "original" and isinstance(record.get("config"), dict):
            return record["config"], record.get("flag_rate")
    except (OSError, ValueError):
        pass
    if (folder / "config.yaml").is_file():

        try:
            config = yaml.safe_load((folder / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return None
        if isinstance(config, dict) and "manipulation" in config:
            return config, None
    return None


def clear_train(folder: Path) -> None:
    """Remove an earlier run's own files from ``folder`` (checked: nothing else is there)."""
    entries = sorted(folder.iterdir())
    foreign = [e.name for e in entries if not (e.is_file() and (e.name in TRAIN_FILES
                                                                or _leftover(e.name, TRAIN_FILES)))]
    if foreign:  # checked before; a file that appeared since is still never removed
        raise ValueError(f"run folder {folder} holds files train did not write ({_names(foreign)}): they are never "
                         f"replaced")
    for entry in entries:
        entry.unlink()
