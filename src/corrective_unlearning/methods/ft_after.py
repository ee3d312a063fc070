"""A corrective method followed by fine-tuning on the clean reserve: e.g. REM (or EU with expansion) removes what
the flagged samples taught, then FT (:mod:`.ft_clean`, same defaults) repairs on clean data. Needs flagged samples
(the first method's) and the reserve."""
from __future__ import annotations

from torch import nn

from ..reserve import reserve_samples, uses_reserve
from . import METHODS, method
from .defence_common import finetune_on_reserve
from .ft_clean import DEFAULTS as FT_DEFAULTS
from .task import Task


@uses_reserve("ft_after", flagged=True)
@method("ft_after", defaults={"first": "rem", "first_params": {}, **FT_DEFAULTS}, grid={})
def ft_after(task: Task, hp: dict) -> nn.Module:
    """``first`` (a registered corrective method, default REM, with ``first_params``) on the task, then FT on the
    clean reserve from its result (ft_clean's defaults: 100 epochs, batch 256, lr 0.01)."""
    if hp["first"] in ("ft_after",):
        raise ValueError("ft_after: first must be a corrective method, not ft_after itself")
    first = METHODS.get(hp["first"])
    model = first(task, hp["first_params"])
    first_notes = dict(task.notes)
    task.notes.clear()
    clean = reserve_samples(task, hp["clean_samples"], "ft_after")
    task.notes["steps"] = finetune_on_reserve(task, model, clean, hp, desc=f"{hp['first']}+FT")
    task.notes["first"] = {"method": hp["first"], "hparams": first.resolve(hp["first_params"]), "notes": first_notes}
    return model
