"""CF: fine-tune M_o on S_tr \\ S_f, no re-initialisation (SPEC section 5)."""
from __future__ import annotations

from ..models import split_last_k
from . import AutoCandidate, Param, method
from .task import Task, Unlearned


@method("cf", params={"last_k": Param(int | str, "all"), "steps": None, "lr": None}, grid={"last_k": ["all", 2, 4]},
        style=("tab:orange", "s"), auto=AutoCandidate(3, {"grid": {"last_k": ["all"]}}, "interclass and random "
                                                                         "labels (paper 1's tables)"))
def catastrophic_forgetting(task: Task, hp: dict) -> Unlearned:
    """Catastrophic forgetting: fine-tune the original on the retain set for a quarter of recipe A's steps
    (1000 of 4000; 1500 of 6000), lr 0.025; last_k = k fine-tunes only the last k layers, the rest frozen and
    in eval mode (the paper: k in {2, 4, all})."""
    model = task.copy_original()
    frozen, _ = split_last_k(model, hp["last_k"])
    recipe = task.recipe.replace(steps=hp["steps"] or max(1, task.recipe.steps // 4), lr=hp["lr"] or task.recipe.lr)
    task.fit(model, task.retain_idx, recipe, frozen=frozen, desc="CF")
    return Unlearned(model)
