"""CF: fine-tune M_o on S_tr \\ S_f, no re-initialisation (SPEC section 5)."""
from __future__ import annotations

from torch import nn

from . import method
from .common import last_blocks
from .task import Task


@method("cf", defaults={"last_k": 0, "steps": None, "lr": None}, grid={"last_k": [0]})
def catastrophic_forgetting(task: Task, hp: dict) -> nn.Module:
    """Catastrophic forgetting: fine-tune the original on the retain set for a quarter of recipe A's steps
    (1000 of 4000; 1500 of 6000), lr 0.025; last_k > 0 fine-tunes only the last k blocks."""
    model = task.copy_original()
    recipe = task.recipe.replace(steps=hp["steps"] or max(1, task.recipe.steps // 4), lr=hp["lr"] or task.recipe.lr)
    task.fit(model, task.retain_idx, recipe, parameters=last_blocks(model, hp["last_k"]), desc="CF")
    return model
