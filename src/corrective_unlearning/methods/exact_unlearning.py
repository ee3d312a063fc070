"""EU: re-initialise and retrain on S_tr \\ S_f with recipe A (SPEC section 5)."""
from __future__ import annotations

from torch import nn

from ..models import blocks
from . import method
from .common import last_blocks, reinitialise
from .task import Task


@method("eu", defaults={"last_k": 0, "steps": None}, grid={"last_k": [0]})
def exact_unlearning(task: Task, hp: dict) -> nn.Module:
    """Exact unlearning: retrain from scratch on the retain set (last_k > 0: re-init and train only the last k
    blocks, the rest kept from M_o and frozen; the paper uses k in {2, 4} with 1000 steps)."""
    k = hp["last_k"]
    if k == 0:
        model = task.fresh_model()
    else:
        model = task.copy_original()
        reinitialise(blocks(model)[-k:], task.seed)
    steps = hp["steps"] or (task.recipe.steps if k == 0 else max(1, task.recipe.steps // 4))
    task.fit(model, task.retain_idx, task.recipe.replace(steps=steps), parameters=last_blocks(model, k), desc="EU")
    return model
