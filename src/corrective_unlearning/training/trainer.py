"""Recipe A as one function used by every caller: the original model, retraining and fine-tuning methods.

No DataLoader: the whole training set sits on the device as uint8 (an :class:`ImageBank`); each step gathers a
batch, crops, flips and stamps it on the device. The index order for every step is drawn up front from a seeded
generator, so a run is deterministic for a seed on the CPU.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar
from ..runtime import Runtime, Stopwatch
from .bank import ImageBank
from .recipe import Recipe

# A batch loss: (model, inputs, targets, sample indices) -> scalar. The default is cross-entropy.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# Sees each training step's logits: (detached logits, labels, sample indices) -> None.
Observer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]
CHECK_EVERY = 50  # steps between finiteness checks and progress updates (each one syncs the device)


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class TrainLog:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss over each CHECK_EVERY window
    selected_step: int | None = None
    selected_score: float | None = None


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, _indices: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def step_order(indices: torch.Tensor, steps: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``[steps, batch]`` sample indices: consecutive seeded permutations (epochs) cut into full batches."""
    batch_size = min(batch_size, len(indices))
    epochs = math.ceil(steps * batch_size / len(indices))
    perms = [indices[torch.randperm(len(indices), generator=generator)] for _ in range(epochs)]
    return torch.cat(perms)[: steps * batch_size].view(steps, batch_size)


def train(
    model: nn.Module,
    bank: ImageBank,
    labels: torch.Tensor,
    indices: torch.Tensor,
    recipe: Recipe,
    *,
    seed: int,
    runtime: Runtime,
    triggered: torch.Tensor | None = None,
    frozen: Sequence[nn.Module] = (),
    loss_fn: LossFn = cross_entropy,
    select: Callable[[nn.Module], float] | None = None,
    observe: Observer | None = None,
    after_step: Callable[[int], None] | None = None,
    desc: str = "train",
) -> TrainLog:
    """Train ``model`` in place on ``indices`` of ``bank`` with ``labels`` (the given, possibly corrupted ones).

    ``triggered`` flags samples that carry the trigger; ``frozen`` modules (last-k variants) stay exactly as
    they are: out of the optimiser, no gradients, and in eval mode so that their batch-norm statistics do not
    move either; ``observe(logits, labels, indices)`` sees each step's detached logits of the default
    cross-entropy loss (per-example statistics without another forward pass); ``after_step(step)`` runs after
    each optimiser step (e.g. to hold masked weights in place); ``select`` scores a checkpoint when ``recipe.checkpoint`` is ``val`` or ``test`` (higher is better).
    """
    if len(indices) == 0:
        raise ValueError("cannot train on an empty index set")
    if observe is not None and loss_fn is not cross_entropy:
        raise ValueError("observe sees the logits of the default cross-entropy loss only")
    if recipe.checkpoint != "last" and select is None:
        raise ValueError(f"recipe.checkpoint={recipe.checkpoint!r} needs a selection score")
    device = bank.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    order = step_order(indices.cpu(), recipe.steps, recipe.batch_size, generator).to(device)
    aug_generator = torch.Generator(device=device).manual_seed(seed + 1)
    labels, triggered = labels.to(device), None if triggered is None else triggered.to(device)

    held = [p for module in frozen for p in module.parameters() if p.requires_grad]
    held_ids = {id(p) for p in held}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in held_ids]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = recipe.make_optimizer(params)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recipe.lr_factor)
    forward = runtime.compiled(model)
    epoch_steps = max(1, len(indices) // order.shape[1])
    eval_every = recipe.eval_every or epoch_steps
    log = TrainLog(steps=recipe.steps, seconds=0.0)
    best_state, losses = None, torch.zeros(recipe.steps, device=device)

    def train_mode():
        model.train()
        for module in frozen:
            module.eval()

    train_mode()
    for p in held:
        p.requires_grad_(False)
    bar = progress_bar(recipe.steps, desc, runtime.progress, leave=False)
    with Stopwatch(runtime) as clock, _restore_grad(held):
        for step in range(recipe.steps):
            runtime.step_begin()
            batch = order[step]
            stamp = triggered[batch] if triggered is not None else False
            x = bank.batch(batch, stamp, recipe.crop_padding, recipe.flip, aug_generator)
            with runtime.autocast():
                if observe is None:
                    loss = loss_fn(forward, x, labels[batch], batch)
                else:
                    logits = forward(x)
                    loss = F.cross_entropy(logits, labels[batch])
                    observe(logits.detach(), labels[batch], batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step(step)
            losses[step] = loss.detach().float()
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == recipe.steps:
                window = losses[step - step % CHECK_EVERY : step + 1]
                _check_finite(window, step + 1 - len(window), recipe)
                log.losses.append(float(window.mean()))
                bar.set_postfix(loss=f"{log.losses[-1]:.3f}", lr=f"{schedule.get_last_lr()[0]:.4f}")
                bar.update(len(window))
            if select is not None and recipe.checkpoint != "last" and ((step + 1) % eval_every == 0
                                                                       or step + 1 == recipe.steps):
                score = select(model)
                train_mode()
                if log.selected_score is None or score > log.selected_score:
                    log.selected_step, log.selected_score = step + 1, score
                    best_state = copy.deepcopy(model.state_dict())  # a copy, never an alias of the live model
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.seconds = clock.seconds
    return log


@contextlib.contextmanager
def _restore_grad(params: list[nn.Parameter]):
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _check_finite(window: torch.Tensor, first_step: int, recipe: Recipe) -> None:
    bad = torch.nonzero(~torch.isfinite(window)).flatten()
    if len(bad):
        step = first_step + int(bad[0])
        raise DivergenceError(
            f"training diverged: loss is {float(window[bad[0]])} at step {step} of {recipe.steps} "
            f"(learning rate {recipe.lr_at(step):.5g}, base lr {recipe.lr}); lower the learning rate"
        )
