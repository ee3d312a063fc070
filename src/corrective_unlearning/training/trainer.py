"""Recipe A's training loop, the one every caller steps through: the original model, retraining and every
unlearning method (a method is its loss, its batches and its stopping rule on this loop).

No DataLoader: the whole training set sits on the device as uint8 (an :class:`ImageBank`); each step gathers a
batch, crops, flips and stamps it on the device. The index order for every step is drawn up front from a seeded
generator, so a run is deterministic for a seed on the CPU.

:class:`Loop` is one optimiser over one model; :meth:`Loop.run` takes steps over given batches with a given loss
(several runs may share the optimiser, e.g. REM's flush and repair). :func:`train` is recipe A: one run over a
seeded order, with checkpoint selection.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar
from ..runtime import Runtime, Stopwatch
from .bank import ImageBank
from .recipe import Recipe

CHECK_EVERY = 50  # steps between finiteness checks and progress updates (each one syncs the device)


@dataclass(frozen=True)
class Batch:
    """What a loss sees at one step."""

    x: torch.Tensor  # the normalised, augmented inputs
    labels: torch.Tensor  # the labels the run trains with, of ``indices``
    indices: torch.Tensor  # training-split sample indices, on the device
    step: int  # 0-based step of the loop (over all its runs)
    reference: torch.Tensor | None = None  # the frozen reference's logits on ``x`` (no grad), where the loop has one


# A batch loss: (the model's forward, the batch) -> scalar. The default is cross-entropy.
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
# Sees each training step's logits: (detached logits, labels, sample indices) -> None.
Observer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class Reference:
    """A frozen reference whose logits every step's loss sees as ``batch.reference``: ``model`` run on the batch
    without grad, through ``route(indices)`` when given (e.g. REM's per-example masks), or ``logits`` computed
    beforehand, one tensor per loop step (e.g. SCRUB's teacher, shared by a grid's cells)."""

    model: Callable[[torch.Tensor], torch.Tensor] | None = None
    logits: Sequence[torch.Tensor] | None = None
    route: Callable[[torch.Tensor], ContextManager] | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.logits is None):
            raise ValueError("a reference is a model or precomputed logits, exactly one of them")

    def __call__(self, x: torch.Tensor, indices: torch.Tensor, step: int) -> torch.Tensor:
        if self.logits is not None:
            return self.logits[step]
        with torch.no_grad(), (self.route(indices) if self.route is not None else contextlib.nullcontext()):
            return self.model(x)


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class TrainLog:
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss over each CHECK_EVERY window
    selected_step: int | None = None
    selected_score: float | None = None


def cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(model(batch.x), batch.labels)


def observing(observe: Observer) -> LossFn:
    """Cross-entropy that shows ``observe`` each step's detached logits (per-example statistics without another
    forward pass)."""
    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(batch.x)
        value = F.cross_entropy(logits, batch.labels)
        observe(logits.detach(), batch.labels, batch.indices)
        return value
    return loss


def step_order(indices: torch.Tensor, steps: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``[steps, batch]`` sample indices: consecutive seeded permutations (epochs) cut into full batches."""
    batch_size = min(batch_size, len(indices))
    epochs = math.ceil(steps * batch_size / len(indices))
    perms = [indices[torch.randperm(len(indices), generator=generator)] for _ in range(epochs)]
    return torch.cat(perms)[: steps * batch_size].view(steps, batch_size)


class Loop:
    """One optimiser (``recipe``'s, under its learning-rate schedule) over ``model``'s trainable parameters, and
    the step every training run takes: render and augment the batch on the device (augmentation drawn from one
    generator seeded ``augment_seed``), the reference's logits without grad, the loss under autocast, then
    zero_grad, backward, optimiser step and schedule step.

    ``frozen`` modules stay exactly as they are during a run: out of the optimiser and without gradients (keeping
    them in eval mode is the caller's, who owns the modes). ``compile=False`` runs ``model`` itself, for a loss that
    switches the model's routing between forward passes (REM's masks), which a compiled graph would not follow."""

    def __init__(self, model: nn.Module, bank: ImageBank, labels: torch.Tensor, recipe: Recipe, runtime: Runtime,
                 *, augment_seed: int, triggered: torch.Tensor | None = None, frozen: Sequence[nn.Module] = (),
                 reference: Reference | None = None, compile: bool = True):
        device = bank.device
        self.model, self.bank, self.recipe, self.runtime, self.reference = model, bank, recipe, runtime, reference
        self.labels = labels.to(device)
        self.triggered = None if triggered is None else triggered.to(device)
        self.held = [p for module in frozen for p in module.parameters() if p.requires_grad]
        held_ids = {id(p) for p in self.held}
        params = [p for p in model.parameters() if p.requires_grad and id(p) not in held_ids]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        self.optimizer = recipe.make_optimizer(params)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, recipe.lr_factor)
        self.forward = runtime.compiled(model) if compile else model
        self.generator = torch.Generator(device=device).manual_seed(augment_seed)
        self.steps = 0  # steps taken over all runs: the schedule's position and ``Batch.step``

    def step(self, indices: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        """One optimiser step on the samples ``indices``; returns the detached loss."""
        self.runtime.step_begin()
        stamp = self.triggered[indices] if self.triggered is not None else False
        x = self.bank.batch(indices, stamp, self.recipe.crop_padding, self.recipe.flip, self.generator)
        with self.runtime.autocast():
            # the reference before the student: its forward pass is part of the step as the methods define it
            reference = None if self.reference is None else self.reference(x, indices, self.steps)
            loss = loss_fn(self.forward, Batch(x, self.labels[indices], indices, self.steps, reference))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        return loss.detach()

    def run(self, batches: Sequence[torch.Tensor], loss_fn: LossFn = cross_entropy, *,
            after_step: Callable[[int], None] | None = None, desc: str = "train") -> list[float]:
        """One step per element of ``batches`` (sample indices, on the device); ``after_step(i)`` after the
        ``i``-th step of this run (e.g. to hold masked weights in place). Returns the mean loss of each
        CHECK_EVERY window; raises :class:`DivergenceError` (naming ``desc``) when a loss is not finite, checked
        every CHECK_EVERY steps and at the end of the run."""
        count, first = len(batches), self.steps
        losses, means = torch.zeros(count, device=self.bank.device), []
        bar = progress_bar(count, desc, self.runtime.progress, leave=False)
        with _held(self.held):
            for i, indices in enumerate(batches):
                loss = self.step(indices, loss_fn)
                if after_step is not None:
                    after_step(i)
                losses[i] = loss.float()
                if (i + 1) % CHECK_EVERY == 0 or i + 1 == count:
                    window = losses[i - i % CHECK_EVERY : i + 1]
                    self._check_finite(window, i + 1 - len(window), count, first, desc)
                    means.append(float(window.mean()))
                    bar.set_postfix(loss=f"{means[-1]:.3f}", lr=f"{self.schedule.get_last_lr()[0]:.4f}")
                    bar.update(len(window))
        bar.close()
        return means

    def _check_finite(self, window: torch.Tensor, first_step: int, count: int, offset: int, desc: str) -> None:
        bad = torch.nonzero(~torch.isfinite(window)).flatten()
        if len(bad):
            step = first_step + int(bad[0])
            raise DivergenceError(
                f"{desc} diverged: loss is {float(window[bad[0]])} at step {step} of {count} "
                f"(learning rate {self.recipe.lr_at(offset + step):.5g}, base lr {self.recipe.lr}); "
                f"lower the learning rate"
            )


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
    """Train ``model`` in place on ``indices`` of ``bank`` with ``labels`` (the given, possibly corrupted ones):
    one :class:`Loop` run over ``recipe.steps`` batches of a seeded order (seed ``seed``; augmentation ``seed + 1``).

    ``triggered`` flags samples that carry the trigger; ``frozen`` modules (last-k variants) stay exactly as
    they are: out of the optimiser, no gradients, and in eval mode so that their batch-norm statistics do not
    move either; ``observe(logits, labels, indices)`` sees each step's detached logits of the default
    cross-entropy loss; ``after_step(step)`` runs after each optimiser step (e.g. to hold masked weights in place);
    ``select`` scores a checkpoint when ``recipe.checkpoint`` is ``val`` or ``test`` (higher is better).
    """
    if len(indices) == 0:
        raise ValueError("cannot train on an empty index set")
    if observe is not None and loss_fn is not cross_entropy:
        raise ValueError("observe sees the logits of the default cross-entropy loss only")
    if recipe.checkpoint != "last" and select is None:
        raise ValueError(f"recipe.checkpoint={recipe.checkpoint!r} needs a selection score")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    order = step_order(indices.cpu(), recipe.steps, recipe.batch_size, generator).to(bank.device)
    loop = Loop(model, bank, labels, recipe, runtime, augment_seed=seed + 1, triggered=triggered, frozen=frozen)
    epoch_steps = max(1, len(indices) // order.shape[1])
    eval_every = recipe.eval_every or epoch_steps
    log = TrainLog(steps=recipe.steps, seconds=0.0)
    best_state = None

    def train_mode():
        model.train()
        for module in frozen:
            module.eval()

    def each_step(step: int) -> None:
        nonlocal best_state
        if after_step is not None:
            after_step(step)
        if select is not None and recipe.checkpoint != "last" and ((step + 1) % eval_every == 0
                                                                   or step + 1 == recipe.steps):
            score = select(model)
            train_mode()
            if log.selected_score is None or score > log.selected_score:
                log.selected_step, log.selected_score = step + 1, score
                best_state = copy.deepcopy(model.state_dict())  # a copy, never an alias of the live model

    train_mode()
    with Stopwatch(runtime) as clock:
        log.losses = loop.run(order, observing(observe) if observe is not None else loss_fn, after_step=each_step,
                              desc=desc)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.seconds = clock.seconds
    return log


@contextlib.contextmanager
def _held(params: list[nn.Parameter]):
    """``params`` without gradients for the duration (frozen modules), restored afterwards."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
