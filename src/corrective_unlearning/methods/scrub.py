"""SCRUB: alternate max-steps on S_f and min-steps on the retain set (SPEC section 5)."""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..training import DivergenceError
from . import method
from .common import frozen_teacher, kl_to_teacher
from .task import Task


def _check(loss: torch.Tensor, where: str) -> None:
    if not torch.isfinite(loss):
        raise DivergenceError(f"SCRUB diverged: loss {float(loss)} in {where}; lower the learning rate")


@method("scrub", defaults={"variant": "original", "lr": None, "alpha": 0.001, "gamma": 0.99, "temperature": 4.0,
                           "epochs": 3, "msteps": 2, "forget_batch": 64, "retain_batch": 128, "steps": None,
                           "max_steps": 100},
        grid={"variant": ["bench"], "alpha": [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]})
def scrub(task: Task, hp: dict) -> nn.Module:
    """SCRUB (variant original: SGD lr 5e-4, max-steps on S_f in the first msteps of `epochs` epochs,
    min-steps gamma*CE + alpha*KL on the retain set, T 4; bench: 1000 steps at lr 0.0025, alternating a pass
    over S_f by gradient ascent on CE + alpha*KL, while fewer than max_steps steps are done, with a pass over
    the retain set minimising CE + alpha*KL).

    The bench variant follows the reference bench's loop: each pass is a whole epoch and every batch counts as
    a step, so with the defaults the ascent runs a handful of times in the first 100 steps, each followed by
    a full epoch of descent on the retain set."""
    student, teacher = task.copy_original(), frozen_teacher(task.original, task.runtime)
    forward = task.runtime.compiled(student)
    variant = hp["variant"]
    if variant not in ("original", "bench"):
        raise ValueError(f"scrub variant must be 'original' or 'bench', got {variant!r}")
    lr = hp["lr"] or (5e-4 if variant == "original" else 0.0025)
    recipe = task.recipe.replace(lr=lr)
    optimizer = recipe.make_optimizer(student.parameters())
    generator = torch.Generator(device=task.device).manual_seed(task.seed)
    t, alpha, gamma = hp["temperature"], hp["alpha"], hp["gamma"]

    # The batches and their augmentations depend on the seed and the loop's shape, never on alpha, gamma or lr:
    # the teacher's logits of call i are the same in every cell of the grid on this deletion set, so the first
    # cell records them and the others replay them (as SSD shares its importances).
    shape = {k: v for k, v in hp.items() if k not in ("alpha", "gamma", "lr", "temperature")}
    recorded = task.cache.setdefault(("scrub-teacher-logits", tuple(sorted(shape.items()))), [])
    calls = itertools.count()

    def outputs(indices):
        x = task.inputs(indices, augment=True, generator=generator)
        call = next(calls)
        if call == len(recorded):
            with torch.no_grad(), task.runtime.autocast():
                recorded.append(teacher(x))
        teacher_logits = recorded[call]
        task.runtime.step_begin()
        with task.runtime.autocast():
            return forward(x), teacher_logits, task.labels[indices]

    def step(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def max_step(indices):  # push the student away from the teacher (and, bench, the labels) on S_f
        logits, teacher_logits, labels = outputs(indices)
        divergence = kl_to_teacher(logits, teacher_logits, t)
        ascent = divergence if variant == "original" else F.cross_entropy(logits.float(), labels) + alpha * divergence
        step(-ascent)
        return ascent

    def min_step(indices):  # stay close to the teacher and the labels on the retain set
        logits, teacher_logits, labels = outputs(indices)
        loss = gamma * F.cross_entropy(logits.float(), labels) + alpha * kl_to_teacher(logits, teacher_logits, t)
        step(loss)
        return loss

    student.train()
    if variant == "original":
        forget_steps = math.ceil(len(task.forget_idx) / hp["forget_batch"])
        retain_steps = math.ceil(len(task.retain_idx) / hp["retain_batch"])
        for epoch in range(hp["epochs"]):
            seed = task.seed + 1000 * epoch
            if epoch < hp["msteps"]:
                for batch in task.stream(task.forget_idx, forget_steps, hp["forget_batch"], seed):
                    loss = max_step(batch)
                _check(loss, f"max-steps of epoch {epoch}")
            for batch in task.stream(task.retain_idx, retain_steps, hp["retain_batch"], seed + 1):
                loss = min_step(batch)
            _check(loss, f"min-steps of epoch {epoch}")
    else:  # the reference bench: epochs interleaved, every batch one step of one schedule
        steps = hp["steps"] or max(1, task.recipe.steps // 4)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.replace(steps=steps).lr_factor)
        batch_size, done, epoch = task.recipe.batch_size, 0, 0
        while done < steps:
            seed = task.seed + 1000 * epoch
            phases = [(task.forget_idx, max_step)] if done < hp["max_steps"] else []
            for indices, update in phases + [(task.retain_idx, min_step)]:
                count = min(math.ceil(len(indices) / batch_size), steps - done)
                if count == 0:
                    break
                for batch in task.stream(indices, count, batch_size, seed):
                    loss = update(batch)
                    schedule.step()
                done += count
                _check(loss, f"epoch {epoch} of the bench variant")
            epoch += 1
    student.eval()
    return student
