"""REM's spare capacity on ResNet-18 and PreAct-ResNet18: every basic block's inner channels are widened; the
widened model computes the same function (within 1e-5 absolute in float32, bit-identical where the extra zero
terms do not change the summation order), narrowing restores the original shapes, and REM runs end to end."""
from __future__ import annotations

import pytest
import torch
from helpers import trained_like
from torch import nn

from corrective_unlearning.capacity import SpareMask, narrow, widen
from corrective_unlearning.experiment import train_original
from corrective_unlearning.methods import METHODS
from corrective_unlearning.models import create_model
from corrective_unlearning.runner import deletion_set, make_task
from corrective_unlearning.training import Recipe

NAMES = ["resnet18", "preact_resnet18"]
ATOL = 1e-5  # float32: the wide convolutions sum extra zero terms, which may reorder the accumulation


def _trained_like(name: str, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters, as after training."""
    torch.manual_seed(seed)
    model = create_model(name, 10)
    return trained_like(model)


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_widen_keeps_the_function_in_every_mode_and_adds_a_mask_per_block(name):
    model = _trained_like(name)
    wide = widen(model, spare_fraction=0.25).eval()
    assert len(wide.spare_masks) == 8
    assert [m.n_orig for m in wide.spare_masks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [m.n_spare for m in wide.spare_masks] == [16, 16, 32, 32, 64, 64, 128, 128]
    x = _x()
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(wide(x), ref, atol=ATOL, rtol=0)
        with wide.masks([0, 1, 2, 3]):
            assert torch.allclose(wide(x), ref, atol=ATOL, rtol=0)
        with wide.spare_all():
            assert torch.allclose(wide(x), ref, atol=ATOL, rtol=0)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_spare_off_hides_every_spare_channel_and_masks_switch_some_on(name):
    wide = widen(_trained_like(name), spare_fraction=0.25).eval()
    seen: list[tuple[int, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda mod, i, o: seen.append((mod.n_orig, o)))
               for m in wide.modules() if isinstance(m, SpareMask)]
    with torch.no_grad():
        wide(_x())
        assert len(seen) == 8 and all(o[:, n:].abs().max() == 0 for n, o in seen)
        seen.clear()
        with wide.masks([0, 1, 2, 3]):
            wide(_x())
    assert all(0.0 < (o[:, n:] != 0).float().mean().item() < 0.6 for n, o in seen)
    for h in handles:
        h.remove()


@pytest.mark.parametrize("name", NAMES)
def test_narrow_restores_the_shapes_loads_into_a_fresh_model_and_equals_spare_off(name):
    model = _trained_like(name)
    wide = widen(model, spare_fraction=0.25)
    back = narrow(wide)
    assert {k: v.shape for k, v in back.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    fresh = create_model(name, 10)
    fresh.load_state_dict(back.state_dict(), strict=True)
    fresh.eval()
    x = _x()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))  # narrowing an untrained widening gives the original back
        for p in wide.parameters():  # "training" moves every weight, spare ones included
            p.add_(0.05 * torch.randn_like(p))
        wide.eval()
        assert torch.allclose(narrow(wide).eval()(x), wide(x), atol=ATOL, rtol=0)  # spare off = deployed model
        with wide.masks([0, 1, 2, 3]):
            assert not torch.allclose(narrow(wide).eval()(x), wide(x), atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_rem_runs_end_to_end(name, poisoned_setting, runtime):
    recipe = Recipe(steps=2, batch_size=32, crop_padding=1, flip=False)
    original, _ = train_original(poisoned_setting, name, recipe, runtime)
    task = make_task(poisoned_setting, original, deletion_set(poisoned_setting, 0.25), recipe, runtime)
    result = METHODS.get("rem")(task, {"steps": 2, "max_flush_passes": 1, "retain_eval": 64})
    fresh = create_model(name, task.num_classes, 3)
    fresh.load_state_dict(result.model.state_dict(), strict=True)
    assert result.notes["steps"] == 2
    x = task.inputs(task.train_idx[:8])
    with torch.no_grad():
        assert torch.isfinite(result.model.eval()(x)).all()
