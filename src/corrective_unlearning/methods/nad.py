"""NAD, Neural Attention Distillation (Li et al., ICLR 2021). Needs no flagged sample.

1. Teacher: a copy of M_o fine-tuned on the clean reserve for ``teacher_epochs`` (BackdoorBench's ``te_epochs``).
2. Student: M_o trained on the reserve with cross-entropy plus, at each of three feature layers,
   ``beta_i * MSE(A(student_i), A(teacher_i))``, where the attention map of a feature map ``a`` ``[B, C, H, W]`` is
   ``A(a) = s / (||s||_2 + 1e-6)`` with ``s = sum_c |a_c|^p`` (the norm over the spatial positions of each sample):
   :func:`attention_map`, :func:`attention_loss`. The teacher is frozen, in eval mode.

Layers: BackdoorBench reads PreAct-ResNet18's last three stages (layer2, layer3, layer4) with betas 500, 1000, 1000.
Models here have no named stages, so the three are the last three layer units whose output is a feature map
(:func:`.defence_common.feature_units`: small_cnn's block 2, conv 3, conv 4; ResNet-9's conv 3 + pool, res 2,
conv 4), the deepest last, with the betas in the same order: the same depth profile (the last blocks before
the classifier's pooling, where a trigger's features live).

Defaults, BackdoorBench's CIFAR-10 NAD (config/defense/nad/cifar10.yaml): 5% clean data, teacher 10 epochs, student
``epochs`` 100 (the NAD paper: 20), batch 256, SGD lr 0.01, momentum 0.9, weight decay 1e-4, betas 500/1000/1000,
p 2. Here over the reserve with the task recipe's schedule (warm-up, linear decay; BackdoorBench: cosine) and
augmentation; ``steps`` replaces the student's epochs, ``teacher_steps`` the teacher's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reserve import CLEAN_SAMPLES, reserve_samples
from ..training import Batch
from . import Param, method
from .defence_common import feature_units, finetune_on_reserve
from .task import Task, Unlearned


def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """``[B, 1, H, W]``: the sum over channels of ``|a|^p``, divided by its L2 norm over H x W (+ eps)."""
    summed = features.float().abs().pow(p).sum(1, keepdim=True)
    return summed / (torch.linalg.vector_norm(summed, dim=(2, 3), keepdim=True) + eps)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the two attention maps (over batch and positions)."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher, p))


@method("nad", params={"clean_samples": CLEAN_SAMPLES, "teacher_epochs": Param(float, 10.0, low=0, closed="neither"),
                       "epochs": Param(float, 100.0, low=0, closed="neither"), "batch_size": Param(int, 256, low=1),
                       "lr": 0.01, "weight_decay": 1e-4, "betas": Param(list[float], [500.0, 1000.0, 1000.0]),
                       "p": Param(float, 2.0, low=0, closed="neither"),
                       "steps": Param(int, None, low=1, nullable=True, doc="null: epochs over the reserve"),
                       "teacher_steps": Param(int, None, low=1, nullable=True,
                                              doc="null: teacher_epochs over the reserve")},
        grid={}, style=("darkorange", "D"),
        reads_reserve=True, needs_flagged=False)
def nad(task: Task, hp: dict) -> Unlearned:
    """Neural Attention Distillation: a teacher fine-tuned on the clean reserve (10 epochs), then M_o distilled
    towards the teacher's attention maps at its last three feature layers (betas 500, 1000, 1000; p 2) with
    cross-entropy on the reserve (100 epochs, batch 256, lr 0.01, weight decay 1e-4)."""
    betas = [float(b) for b in hp["betas"]]
    if not betas:
        raise ValueError("nad: betas must list one weight per distilled layer")
    clean = reserve_samples(task, hp["clean_samples"], "nad")
    teacher = task.copy_original()
    teacher_hp = {**hp, "steps": hp["teacher_steps"]}
    teacher_steps = finetune_on_reserve(task, teacher, clean, teacher_hp, "NAD teacher", epochs_key="teacher_epochs")
    teacher.eval().requires_grad_(False)  # frozen, batch norm on its running statistics
    student = task.copy_original()
    example = task.inputs(clean[:1])
    s_units, t_units = feature_units(student, example, len(betas)), feature_units(teacher, example, len(betas))
    s_maps: list = [None] * len(betas)
    t_maps: list = [None] * len(betas)
    hooks = [u.register_forward_hook(lambda m, i, o, k=k: s_maps.__setitem__(k, o)) for k, u in enumerate(s_units)]
    hooks += [u.register_forward_hook(lambda m, i, o, k=k: t_maps.__setitem__(k, o)) for k, u in enumerate(t_units)]

    def loss_fn(_forward, batch: Batch) -> torch.Tensor:
        logits = student(batch.x)  # the module itself, never a compiled forward: its hooks must see this very pass
        with torch.no_grad():
            teacher(batch.x)
        loss = F.cross_entropy(logits, batch.labels)
        for beta, s, t in zip(betas, s_maps, t_maps):
            loss = loss + beta * attention_loss(s, t.detach(), hp["p"])
        return loss

    try:
        steps = finetune_on_reserve(task, student, clean, hp, "NAD student", loss_fn=loss_fn)
    finally:
        for hook in hooks:
            hook.remove()
    return Unlearned(student, {"clean_samples": len(clean), "teacher_steps": teacher_steps, "steps": steps,
                               "layers": [type(u).__name__ for u in s_units]})
