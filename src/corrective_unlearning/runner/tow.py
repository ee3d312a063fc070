"""A deletion set's ToW references in a grid: obtained and scored once, before its first method runs, and written
to ``<out>/references/<deletion set>.json``, the one record of their cost."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..experiment import OriginalInfo, Setting
from ..methods import Task
from ..records import write_json_atomic
from ..references import DeletionSetReferences, deletion_set_references
from ..runtime import Runtime
from .spec import TowConfig


def write_deletion_set_references(setting: Setting, original: nn.Module, info: OriginalInfo, forget: torch.Tensor,
                                  task: Callable[[], Task], tow: TowConfig,
                                  clean_oracle: Callable[[], tuple[nn.Module, dict]], runtime: Runtime,
                                  use_cache: bool, path: Path) -> DeletionSetReferences:
    """One deletion set's ToW references, scored once; also written to ``path``
    (``<out>/references/<deletion set>.json``: ``train_seconds``, the synchronised training time, measured when the
    model was trained; ``cache``: miss = trained in this run, hit = read from the cache, reused = already obtained
    in this run for another deletion set; ``seconds_this_run``: what obtaining it cost this run). None of it is
    charged to a method's ``method_seconds``. ``task()``: the deletion set's :class:`Task`."""
    references = deletion_set_references(setting, original, forget, task, tow.references, tow.retain_samples,
                                         info["cache_key"], clean_oracle, runtime, use_cache)
    write_json_atomic(path, {"deletion_set": path.stem, "written": time.time(), "retain_samples": tow.retain_samples,
                             "original_cache_key": info["cache_key"], **references.block()})
    return references
