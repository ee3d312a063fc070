"""FT: fine-tune M_o on the clean reserve (BackdoorBench's ``ft`` defence). Needs no flagged sample.

BackdoorBench's CIFAR-10 defaults (config/defense/ft/cifar10.yaml, config.yaml): 5% clean training data, 100 epochs
over it, batch 256, SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine schedule. Here: the same epochs, batch, lr
and weight decay over the reserve (``clean_samples`` of it, default all), with the task recipe's momentum, schedule
(warm-up, linear decay) and augmentation, so the budget scales with the reserve; ``steps`` replaces the epochs.
"""
from __future__ import annotations

from ..reserve import CLEAN_SAMPLES, reserve_samples
from . import Param, method
from .defence_common import finetune_on_reserve
from .task import Task, Unlearned

PARAMS = {"clean_samples": CLEAN_SAMPLES, "epochs": Param(float, 100.0, low=0, closed="neither"),
          "batch_size": Param(int, 256, low=1), "lr": 0.01, "weight_decay": 5e-4,
          "steps": Param(int, None, low=1, nullable=True, doc="null: epochs over the reserve")}


@method("ft_clean", params=PARAMS, grid={}, style=("darkgreen", "s"),
        reads_reserve=True, needs_flagged=False)
def ft_clean(task: Task, hp: dict) -> Unlearned:
    """Fine-tuning on clean data (BackdoorBench's FT): M_o trained on the clean reserve for ``epochs`` epochs (100)
    at batch 256, lr 0.01, weight decay 5e-4; no flagged sample is read."""
    clean = reserve_samples(task, hp["clean_samples"], "ft_clean")
    model = task.copy_original()
    steps = finetune_on_reserve(task, model, clean, hp, desc="FT-clean")
    return Unlearned(model, {"clean_samples": len(clean), "steps": steps})
