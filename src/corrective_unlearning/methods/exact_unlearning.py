"""EU: re-initialise and retrain on S_tr \\ S_f with recipe A (SPEC section 5)."""
from __future__ import annotations

from ..models import split_last_k
from . import Param, method
from .common import reinitialise
from .task import Task, Unlearned


@method("eu", params={"last_k": Param(int | str, "all"), "steps": None}, grid={"last_k": ["all", 2, 4]},
        style=("tab:blue", "o"))
def exact_unlearning(task: Task, hp: dict) -> Unlearned:
    """Exact unlearning: retrain from scratch on the retain set with recipe A. last_k = k: re-initialise and
    train only the last k layers for a quarter of the steps, the rest kept from M_o, frozen and in eval mode
    (the paper: k in {2, 4} for ResNet-9 with 1000 steps, {5, 13} for WRN-28x10 with 1500)."""
    k = hp["last_k"]
    if k == "all":
        model = task.fresh_model()
        frozen = []
    else:
        model = task.copy_original()
        frozen, trainable = split_last_k(model, k)
        reinitialise(trainable, task.seed)
    steps = hp["steps"] or (task.recipe.steps if k == "all" else max(1, task.recipe.steps // 4))
    task.fit(model, task.retain_idx, task.recipe.replace(steps=steps), frozen=frozen, desc="EU")
    return Unlearned(model)
