"""What many test modules share as plain values and functions (fixtures are in conftest.py)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from corrective_unlearning.cli import main as cli_main

from corrective_unlearning.methods import Task
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.runtime import Runtime
from corrective_unlearning.training import Recipe

# The original's recipe in the method tests: 30 steps of 32 cover every training sample of the synthetic set at
# least once, crops of one pixel, no flips.
RECIPE = Recipe(steps=30, batch_size=32, crop_padding=1, flip=False)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A snapshot of ``model``'s state dict (copies: later training does not change it)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Two state dicts with the same keys and bit-identical tensors (batch-norm statistics included)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def deletion_task(poisoned: tuple, rate: float, runtime: Runtime) -> Task:
    """The task of deleting a ``rate`` share of the manipulated samples of conftest's ``poisoned`` setting, from
    its original."""
    setting, original, _ = poisoned
    return make_task(setting, original, deletion_set(setting, rate), RECIPE, runtime)


def trained_like(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with non-trivial batch-norm statistics and affine parameters, as after training (drawn
    from the global RNG: seed it first)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return model.eval()


def trained_run(tmp_path: Path, flag: str) -> Path:
    """A ``corrective train`` run folder: the synthetic set poisoned with 40 samples, a ``flag`` share flagged, 16
    samples held out for validation (what ``corrective fix`` end-to-end tests start from)."""
    runs = tmp_path / "runs"
    assert cli_main(["train", "--dataset", "synthetic", "--manipulation", "poison", "--n", "40", "--quiet",
                     "--out", str(runs), "--flag", flag, "dataset.val_size=16"]) == 0
    return next(runs.iterdir())
