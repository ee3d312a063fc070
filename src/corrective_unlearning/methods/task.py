"""What an unlearning method may see, and nothing more.

A :class:`Task` carries the original model, the training images with their *given* labels, the deletion set S_f,
the retain set S_tr \\ S_f, a validation split, the recipe and the device. It carries neither the test set nor the
undiscovered part of S_m: undiscovered manipulated samples sit in the retain set like any other sample, and the
per-sample trigger flags needed to render the training images are private to :meth:`inputs` and :meth:`fit`.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..proxies.entanglement import penultimate_embeddings
from ..runtime import Runtime, Stopwatch
from ..training import ImageBank, Recipe, train
from ..training.trainer import (
    Loop,
    LossFn,
    Reference,
    TrainLog,
    cross_entropy,
    step_order,
)


@dataclass
class SharedWork:
    """What one method run did with its task's per-deletion-set cache: the work it computed (key -> synchronised
    seconds) and the keys it took from the cache, so that one complete run's cost stays known when a grid
    amortises the work over its cells."""

    paid: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Unlearned:
    """A method's result: the unlearned model and what the run says about itself (``notes``: JSON-like values,
    recorded with the cell). ``shared`` is filled in by :class:`Method` for the run it called."""

    model: nn.Module
    notes: dict[str, Any] = field(default_factory=dict)
    shared: SharedWork = field(default_factory=SharedWork)


@dataclass
class Task:
    original: nn.Module
    bank: ImageBank
    labels: torch.Tensor  # given labels of the whole training split, on the device (treat as read-only)
    forget_idx: torch.Tensor  # S_f
    retain_idx: torch.Tensor  # S_tr \ S_f
    val_idx: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    recipe: Recipe
    runtime: Runtime
    seed: int
    _triggered: torch.Tensor = field(repr=False, default=None)  # rendering detail of the images, not a label
    cache: dict = field(default_factory=dict, repr=False)  # per-deletion-set work shared by a method's grid
    # Optional capability, set by whoever builds the task: (proxy name, proxy params) -> memorization scores over
    # the whole training split (float, higher = more memorized; see corrective_unlearning.proxies) of the model the
    # task was built for (M_o: a task a meta-method derives from this one keeps it). Read it through
    # :meth:`memorization_scores`, which says how to provide it when it is missing.
    memorization: Callable[[str, dict], torch.Tensor] | None = field(default=None, repr=False)
    # The shared-work accounts of the method runs under way on this task, innermost last (a meta-method's steps
    # run methods inside its own run); never copied into a derived task.
    _runs: list[SharedWork] = field(default_factory=list, init=False, repr=False)
    # -- clean reserve (corrective_unlearning.reserve) --------------------------------------------------------------
    # Indices (into the bank, like val_idx) of never-manipulated samples a method may train on, disjoint from
    # val_idx (which is then the selection split only) and from training; None = no reserve (defences refuse).
    clean_idx: torch.Tensor | None = field(default=None, repr=False)
    # True only for a task of the 0% discovery column: S_f may be empty, and only methods that need no flagged
    # sample (Method.needs_flagged) run on it.
    allow_empty_forget: bool = field(default=False, repr=False)
    # -- end clean reserve -------------------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        # Every method loop is bounded by the sizes of these sets: an empty one is refused here, not spun on.
        if len(self.forget_idx) == 0 and not self.allow_empty_forget:
            raise ValueError("the deletion set S_f is empty: nothing to unlearn (raise the discovery rate or n)")
        if len(self.retain_idx) == 0:
            raise ValueError("the retain set is empty: every training sample is in S_f")

    @contextlib.contextmanager
    def accounting(self) -> Iterator[SharedWork]:
        """Context of one method run: the shared work it pays for or reuses (see :meth:`shared`) is accounted
        in the :class:`SharedWork` it yields."""
        work = SharedWork()
        self._runs.append(work)
        try:
            yield work
        finally:
            self._runs.pop()

    def shared(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per deletion set and ``key``; later runs reuse it. The run that pays records the
        synchronised seconds under ``paid`` of its :meth:`accounting` and a reusing run lists the key under
        ``reused``, so the cost of one complete run stays known when a grid amortises it."""
        name = "/".join(str(part) for part in key)
        work = self._runs[-1] if self._runs else SharedWork()  # outside a run there is no one to charge
        if key in self.cache:
            work.reused.append(name)
            return self.cache[key]
        with Stopwatch(self.runtime) as clock:
            self.cache[key] = compute()
        work.paid[name] = work.paid.get(name, 0.0) + clock.seconds
        return self.cache[key]

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def train_idx(self) -> torch.Tensor:
        return torch.sort(torch.cat([self.forget_idx, self.retain_idx])).values

    def copy_original(self) -> nn.Module:
        """A deep copy of M_o: methods never modify the original in place."""
        return copy.deepcopy(self.original)

    def fresh_model(self, seed: int | None = None) -> nn.Module:
        """Same architecture as M_o, every parameter and BN statistic re-initialised (seeded). Works for any
        ``nn.Module`` whose layers define ``reset_parameters``."""
        model = copy.deepcopy(self.original)
        torch.manual_seed(self.seed if seed is None else seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return model

    def inputs(self, indices: torch.Tensor, augment: bool = False, generator: torch.Generator | None = None):
        """Normalised images of ``indices`` exactly as in training (trigger included where the data has one)."""
        indices = indices.to(self.device)
        recipe = self.recipe
        return self.bank.batch(indices, self._triggered[indices], recipe.crop_padding if augment else 0,
                               recipe.flip and augment, generator)

    def memorization_scores(self, proxy: str, params: dict | None = None) -> torch.Tensor:
        """Proxy ``proxy``'s memorization scores over the training split (row ``i`` = training image ``i``, higher
        = more memorized, NaN where undefined), from the ``memorization`` capability of whoever built the task."""
        if self.memorization is None:
            raise ValueError(
                f"memorization proxy {proxy!r} was asked for, but this task carries no memorization scores: build it "
                f"with Task(memorization=...), a callable (proxy name, params) -> scores over the training split "
                f"(the grid's make_task binds corrective_unlearning.proxies.memorization_scores), or choose a "
                f"method setting that needs no proxy (e.g. rum with order=shuffle)")
        return self.memorization(proxy, dict(params or {}))

    def embeddings(self, model: nn.Module, indices: torch.Tensor) -> torch.Tensor:
        """Penultimate embeddings (the input of ``model``'s last ``nn.Linear``; float32 CPU ``[N, D]``, row ``k``
        for ``indices[k]``) of training samples rendered exactly as in training, trigger included, without
        augmentation, in eval mode (the model's mode is restored)."""

        indices = torch.as_tensor(indices, dtype=torch.long).to(self.device)
        return penultimate_embeddings(model, self.bank, indices, self.runtime, stamp=self._triggered[indices])

    @torch.no_grad()
    def accuracy(self, model: nn.Module, indices: torch.Tensor, batch_size: int | None = None) -> float:
        """Fraction of ``indices`` that ``model`` predicts as their *given* labels: eval mode, no augmentation,
        the trigger where the sample carries one; the model's mode is restored. Methods use it for their own
        stopping and selection rules (never a test metric)."""
        was_training = model.training
        model.eval()
        correct = 0
        for batch in indices.cpu().split(batch_size or self.recipe.batch_size):
            with self.runtime.autocast():
                predicted = model(self.inputs(batch)).argmax(1)
            correct += int((predicted == self.labels[batch.to(self.device)]).sum())
        model.train(was_training)
        return correct / len(indices)

    def stream(self, indices: torch.Tensor, steps: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """``steps`` batches of indices drawn epoch by epoch from seeded permutations of ``indices``."""
        generator = torch.Generator().manual_seed(seed)
        yield from step_order(indices.cpu(), steps, batch_size, generator).to(self.device)

    def fit(
        self,
        model: nn.Module,
        indices: torch.Tensor,
        recipe: Recipe | None = None,
        *,
        loss_fn: LossFn = cross_entropy,
        labels: torch.Tensor | None = None,
        frozen: Sequence[nn.Module] = (),
        after_step: Callable[[int], None] | None = None,
        desc: str = "unlearn",
        seed: int | None = None,
    ) -> TrainLog:
        """Recipe A (or ``recipe``) on ``indices`` with the given labels: the one training loop."""
        recipe = recipe or self.recipe
        if recipe.checkpoint != "last":
            recipe = recipe.replace(checkpoint="last")  # methods select by their own rules, never on test data
        return train(model, self.bank, self.labels if labels is None else labels, indices, recipe,
                     seed=self.seed if seed is None else seed, runtime=self.runtime, triggered=self._triggered,
                     frozen=frozen, loss_fn=loss_fn, after_step=after_step, desc=desc)

    def loop(self, model: nn.Module, recipe: Recipe, *, augment_seed: int | None = None,
             reference: Reference | None = None, compile: bool = True) -> Loop:
        """The training loop over this task's images and given labels, for a method that takes its steps in
        runs of its own (batches, loss, stopping rule): augmentation as in training (``recipe``'s), drawn from a
        generator seeded ``augment_seed`` (default ``seed + 1``, as :meth:`fit` draws it)."""
        return Loop(model, self.bank, self.labels, recipe, self.runtime,
                    augment_seed=self.seed + 1 if augment_seed is None else augment_seed,
                    triggered=self._triggered, reference=reference, compile=compile)
