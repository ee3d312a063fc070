"""SCRUB: alternate max-steps on S_f and min-steps on the retain set (SPEC section 5)."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..training import Batch, LossFn, Reference
from . import Param, method
from .common import frozen_teacher, kl_to_teacher
from .task import Task, Unlearned


@method("scrub", params={"variant": Param(str, "original", choices=("original", "bench")), "lr": None,
                         "alpha": 0.001, "gamma": 0.99, "temperature": 4.0, "epochs": 3, "msteps": 2,
                         "forget_batch": 64, "retain_batch": 128, "steps": None, "max_steps": 100},
        grid={"variant": ["bench"], "alpha": [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]}, style=("tab:purple", "^"))
def scrub(task: Task, hp: dict) -> Unlearned:
    """SCRUB (variant original: SGD lr 5e-4, max-steps on S_f in the first msteps of `epochs` epochs,
    min-steps gamma*CE + alpha*KL on the retain set, T 4; bench: 1000 steps at lr 0.0025, alternating a pass
    over S_f by gradient ascent on CE + alpha*KL, while fewer than max_steps steps are done, with a pass over
    the retain set minimising CE + alpha*KL).

    The bench variant follows the reference bench's loop: each pass is a whole epoch and every batch counts as
    a step, so with the defaults the ascent runs a handful of times in the first 100 steps, each followed by
    a full epoch of descent on the retain set."""
    variant = hp["variant"]
    lr = hp["lr"] or (5e-4 if variant == "original" else 0.0025)
    recipe = task.recipe.replace(lr=lr)
    t, alpha, gamma = hp["temperature"], hp["alpha"], hp["gamma"]
    plan = bench_plan(task, hp) if variant == "bench" else original_plan(task, hp)

    # The batches and their augmentations depend on the seed and the plan, never on alpha, gamma, lr or T: the
    # teacher's logits are the same in every cell of the grid on this deletion set. The first cell computes
    # them (timed as shared work) and the others reuse them, as SSD shares its importances.
    shape = tuple(sorted((k, v) for k, v in hp.items() if k not in ("alpha", "gamma", "lr", "temperature")))
    teacher_logits = task.shared(("scrub-teacher-logits", *shape), lambda: _teacher_logits(task, plan))

    student = task.copy_original()
    # one schedule over the whole plan for bench; SCRUB's own loop keeps its rate constant
    recipe = recipe.replace(steps=len(plan)) if variant == "bench" else recipe.replace(schedule="constant")
    loop = task.loop(student, recipe, augment_seed=task.seed, reference=Reference(logits=teacher_logits))
    objectives = {True: max_objective(variant, alpha, t), False: min_objective(alpha, gamma, t)}
    student.train()
    for ascend, phase in itertools.groupby(plan, key=lambda entry: entry[0]):  # the max and min phases, in turn
        loop.run([indices for _, indices in phase], objectives[ascend], desc="SCRUB")
    student.eval()
    return Unlearned(student)


def max_objective(variant: str, alpha: float, temperature: float) -> LossFn:
    """The max-step loss on S_f: push the student away from the teacher (bench: and from the given labels)."""
    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        logits = forward(batch.x)
        divergence = kl_to_teacher(logits, batch.reference, temperature)
        if variant == "original":
            return -divergence
        return -(F.cross_entropy(logits.float(), batch.labels) + alpha * divergence)
    return loss


def min_objective(alpha: float, gamma: float, temperature: float) -> LossFn:
    """The min-step loss on the retain set: stay close to the teacher and to the given labels."""
    def loss(forward: nn.Module, batch: Batch) -> torch.Tensor:
        logits = forward(batch.x)
        divergence = kl_to_teacher(logits, batch.reference, temperature)
        return gamma * F.cross_entropy(logits.float(), batch.labels) + alpha * divergence
    return loss


Plan = list[tuple[bool, torch.Tensor]]  # (ascent on S_f?, batch indices) per optimiser step


def original_plan(task: Task, hp: dict) -> Plan:
    """SCRUB's own loop: `epochs` epochs, each a pass over S_f by ascent (first `msteps` epochs only), then a
    pass over the retain set by descent."""
    plan: Plan = []
    forget_steps = math.ceil(len(task.forget_idx) / hp["forget_batch"])
    retain_steps = math.ceil(len(task.retain_idx) / hp["retain_batch"])
    for epoch in range(hp["epochs"]):
        seed = task.seed + 1000 * epoch
        if epoch < hp["msteps"]:
            plan += [(True, b) for b in task.stream(task.forget_idx, forget_steps, hp["forget_batch"], seed)]
        plan += [(False, b) for b in task.stream(task.retain_idx, retain_steps, hp["retain_batch"], seed + 1)]
    return plan


def bench_plan(task: Task, hp: dict) -> Plan:
    """The reference bench's loop, every batch one step of one schedule of `steps` steps: epochs of a pass over
    S_f by ascent (while fewer than `max_steps` steps are done) followed by a pass over the retain set.

    It ends: every epoch takes at least one retain step (the Task guarantees a non-empty retain set), so there
    are at most `steps` epochs."""
    steps = hp["steps"] or max(1, task.recipe.steps // 4)
    batch_size = task.recipe.batch_size
    plan: Plan = []
    for epoch in range(steps):
        if len(plan) >= steps:
            break
        seed = task.seed + 1000 * epoch
        phases = [(True, task.forget_idx)] if len(plan) < hp["max_steps"] else []
        for ascend, indices in phases + [(False, task.retain_idx)]:
            count = min(math.ceil(len(indices) / batch_size), steps - len(plan))
            if count > 0:
                plan += [(ascend, b) for b in task.stream(indices, count, batch_size, seed)]
    return plan


@torch.no_grad()
def _teacher_logits(task: Task, plan: Plan) -> list[torch.Tensor]:
    """M_o's logits on every batch of ``plan``, augmented exactly as the student will see them."""
    teacher = frozen_teacher(task.original, task.runtime)
    generator = torch.Generator(device=task.device).manual_seed(task.seed)
    logits = []
    for _, indices in plan:
        x = task.inputs(indices, augment=True, generator=generator)
        with task.runtime.autocast():
            logits.append(teacher(x))
    return logits
