"""The clean reserve: a part of the never-manipulated validation split that a method may train on.

Post-training backdoor defences (fine-tuning, NAD, ANP, I-BAU) need a little clean data and no flagged samples. They
get it from the validation split, which is held out of training and never manipulated; the part they may train on
(the *reserve*) is carved off once per setting, so selection and the guarded rule use only the rest (the
*selection split*) and no sample is used both to train and to choose:

    reserve, selection = split_validation(val_idx, val_labels, fraction, seed)

The split is stratified by class and seeded; ``fraction`` is the config's ``clean_reserve`` (default
:data:`DEFAULT_FRACTION`, half of the validation split, where the grid has a method that reads the reserve; 0,
no reserve, otherwise, so grids without defences keep their records). A method takes at most ``clean_samples`` of
the reserve (:func:`reserve_samples`: the first k of a seeded permutation, so a smaller request is a subset of a
larger one) and notes how many it consumed as ``clean_samples`` in its notes (the record's ``clean_samples``).

Methods that train on the reserve, and whether they need flagged samples, say so on their registry entry
(``@method(..., reads_reserve=True, needs_flagged=False)``), so a method that needs no flagged sample can run on an
empty S_f (the grid's 0% discovery column, rate 0).
"""
from __future__ import annotations

import numpy as np
import torch

from .checks import Param

DEFAULT_FRACTION = 0.5
# how a defence declares the share of the reserve it takes (a hyperparameter of its ``params``)
CLEAN_SAMPLES = Param(int, None, low=1, nullable=True, doc="samples of the reserve; null: all of it")

def check_fraction(fraction, where: str = "clean_reserve") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= float(fraction) < 1:
        raise ValueError(f"{where}: expected the fraction of the validation split a method may train on, a number "
                         f"in [0, 1) (0 = no reserve), got {fraction!r}")
    return float(fraction)


def split_validation(val_idx: torch.Tensor, val_labels: torch.Tensor, fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(reserve, selection): disjoint, sorted, together exactly ``val_idx``. Per class, round(fraction * count)
    samples of a seeded permutation go to the reserve (at least one sample stays for selection overall)."""
    fraction = check_fraction(fraction)
    val_idx = torch.as_tensor(val_idx, dtype=torch.long).cpu()
    val_labels = torch.as_tensor(val_labels).cpu()
    if len(val_idx) != len(val_labels):
        raise ValueError(f"split_validation: {len(val_idx)} indices but {len(val_labels)} labels")
    if fraction == 0 or len(val_idx) == 0:
        return torch.empty(0, dtype=torch.long), torch.sort(val_idx).values
    rng = np.random.default_rng([int(seed), 22])
    chosen = []
    for c in np.unique(val_labels.numpy()):
        members = np.flatnonzero(val_labels.numpy() == c)
        members = members[rng.permutation(len(members))]
        chosen.append(members[: int(round(fraction * len(members)))])
    taken = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    if len(taken) == len(val_idx):  # keep one sample to select on
        taken = taken[:-1]
    mask = np.zeros(len(val_idx), dtype=bool)
    mask[taken] = True
    mask = torch.from_numpy(mask)
    return torch.sort(val_idx[mask]).values, torch.sort(val_idx[~mask]).values


def reserve_samples(task, clean_samples: int | None, method: str) -> torch.Tensor:
    """The reserve indices ``method`` trains on: all of ``task.clean_idx``, or the first ``clean_samples`` of a
    seeded permutation of it (a method declares ``clean_samples`` as an integer >= 1 or null). Refuses, with what
    to do, a task without a reserve. The method notes ``len(...)`` of the result as its ``clean_samples``."""
    reserve = getattr(task, "clean_idx", None)
    if reserve is None or len(reserve) == 0:
        raise ValueError(
            f"method {method!r} trains on clean data, but this task has no clean reserve: give the grid "
            f"'clean_reserve: 0.5' (the fraction of the validation split a method may train on; selection then uses "
            f"the rest), or pass validation data to correct()/corrective fix, whose reserve is carved from it")
    if clean_samples is not None and clean_samples < len(reserve):
        order = torch.randperm(len(reserve), generator=torch.Generator().manual_seed(task.seed + 22))
        reserve = torch.sort(reserve.cpu()[order[:clean_samples]]).values
    return reserve.to(task.device)
