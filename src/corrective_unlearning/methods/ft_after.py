"""A corrective method followed by fine-tuning on the clean reserve: e.g. REM (or EU with expansion) removes what
the flagged samples taught, then FT (:mod:`.ft_clean`, same defaults) repairs on clean data. Needs flagged samples
(the first method's) and the reserve."""
from __future__ import annotations

from ..reserve import reserve_samples
from . import METHODS, Param, method
from .defence_common import finetune_on_reserve
from .ft_clean import PARAMS as FT_PARAMS
from .task import Task, Unlearned


@method("ft_after", params={"first": Param(str, "rem", doc="a registered corrective method"),
                            "first_params": Param(dict, {}), **FT_PARAMS}, grid={}, style=("slategray", "X"),
        reads_reserve=True)
def ft_after(task: Task, hp: dict) -> Unlearned:
    """``first`` (a registered corrective method, default REM, with ``first_params``) on the task, then FT on the
    clean reserve from its result (ft_clean's defaults: 100 epochs, batch 256, lr 0.01).

    The first method runs inside this run (its shared work is this run's), as one complete run of both."""
    if hp["first"] in ("ft_after",):
        raise ValueError("ft_after: first must be a corrective method, not ft_after itself")
    first = METHODS.get(hp["first"])
    first_hp = first.resolve(hp["first_params"])
    result = first.run(task, first_hp)
    model = result.model
    clean = reserve_samples(task, hp["clean_samples"], "ft_after")
    steps = finetune_on_reserve(task, model, clean, hp, desc=f"{hp['first']}+FT")
    return Unlearned(model, {"clean_samples": len(clean), "steps": steps,
                             "first": {"method": hp["first"], "hparams": first_hp, "notes": dict(result.notes)}})
