"""Spare capacity for REM: widen keeps the function, masks are per-index and on the fly, narrow restores the
original architecture."""
from __future__ import annotations

import pytest
import torch
from helpers import trained_like
from torch import nn

from corrective_unlearning.capacity import (
    SpareMask,
    UnsupportedModelError,
    narrow,
    spare_bits,
    widen,
    widen_conv,
)
from corrective_unlearning.models import create_model
from corrective_unlearning.models.resnet9 import Residual, conv_bn

CASES = {"small_cnn": (1, 28), "resnet9": (3, 32), "wrn28x10": (3, 32)}
KWARGS = {"wrn28x10": {"depth": 10, "widen": 1}}  # a small WideResNet: same blocks, fewer and narrower


def _trained_like(name: str, seed: int = 0) -> nn.Module:
    """A model with non-trivial batch-norm statistics and affine parameters, as after training."""
    torch.manual_seed(seed)
    in_ch, _ = CASES[name]
    model = create_model(name, 10, in_channels=in_ch, **KWARGS.get(name, {}))
    return trained_like(model)


def _x(name: str, n: int = 4) -> torch.Tensor:
    in_ch, size = CASES[name]
    return torch.randn(n, in_ch, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", list(CASES))
def test_widen_preserves_outputs_in_every_mode(name):
    model = _trained_like(name)
    x = _x(name)
    wide = widen(model, spare_fraction=0.25 if name == "resnet9" else 1.0).eval()
    assert len(wide.spare_masks) == {"resnet9": 8, "small_cnn": 4, "wrn28x10": 2 + 3 + 3 + 1}[name]  # conv1, conv2, projections, fc
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(wide(x), ref, atol=1e-5)
        with wide.masks([0, 1, 2, 3]):
            assert torch.allclose(wide(x), ref, atol=1e-5)
        with wide.spare_all():
            assert torch.allclose(wide(x), ref, atol=1e-5)
    # the original model is untouched and the wide one really is wider
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in model.parameters())


def test_widen_preserves_outputs_in_train_mode_batch_statistics():
    model = _trained_like("small_cnn").train()
    wide = widen(model).train()
    x = _x("small_cnn", 8)
    with torch.no_grad(), wide.masks(list(range(8))):
        assert torch.allclose(wide(x), model(x), atol=1e-5)


def test_masks_are_deterministic_per_index_differ_across_indices_and_are_20_percent_on():
    a = spare_bits(torch.arange(5000), layer_id=3, n_spare=64, p_on=0.2)
    b = spare_bits(torch.arange(5000), layer_id=3, n_spare=64, p_on=0.2)
    assert torch.equal(a, b)
    assert abs(a.float().mean().item() - 0.2) < 0.01
    assert len({tuple(r) for r in a.tolist()}) > 4990  # distinct per index
    assert not torch.equal(a, spare_bits(torch.arange(5000), layer_id=4, n_spare=64, p_on=0.2))  # per layer
    # order in the batch does not matter, only the index
    perm = torch.randperm(5000)
    assert torch.equal(spare_bits(perm, 3, 64, 0.2), a[perm])


def test_masks_through_the_model_and_shared_mask_for_identified_indices():
    wide = widen(_trained_like("small_cnn"), p_on=0.2)
    sm = wide.spare_masks[1]
    with wide.masks([5, 7, 5]):
        m = sm.mask(3)
    assert torch.equal(m[0], m[2]) and not torch.equal(m[0], m[1])
    wide.shared_mask_for([3, 10, 99])
    with wide.masks([3, 10, 99, 4, 5]):
        m2 = sm.mask(5)
    assert torch.equal(m2[0], m2[1]) and torch.equal(m2[1], m2[2])
    assert not torch.equal(m2[0], m2[3])
    assert torch.equal(m2[4], m[0])  # non-shared indices keep their own masks
    with pytest.raises(ValueError, match="indices"):
        with wide.masks([1, 2]):
            wide(_x("small_cnn", 3))
    with pytest.raises(RuntimeError, match="no example indices"):
        wide.state.mode = "masks"
        try:
            sm.mask(2)
        finally:
            wide.state.mode = "off"


@pytest.mark.parametrize("name", list(CASES))
def test_spare_off_zeroes_every_spare_channel_and_masks_switch_them_on(name):
    wide = widen(_trained_like(name), spare_fraction=0.25).eval()
    seen: list[tuple[int, torch.Tensor]] = []

    def hook(mod, inp, out):
        seen.append((mod.n_orig, out))

    handles = [m.register_forward_hook(hook) for m in wide.modules() if isinstance(m, SpareMask)]
    residual_out: list[torch.Tensor] = []
    handles += [m.register_forward_hook(lambda mod, i, o: residual_out.append(o))
                for m in wide.modules() if isinstance(m, Residual)]
    x = _x(name)
    with torch.no_grad():
        wide(x)  # default mode is off
        with wide.spare_off():
            wide(x)
    assert len(seen) == 2 * len(wide.spare_masks)
    assert all(out[:, n:].abs().max() == 0 for n, out in seen)
    assert all(o[:, o.shape[1] * 4 // 5:].abs().max() == 0 for o in residual_out)  # spare tail of the trunk
    seen.clear()
    with torch.no_grad(), wide.masks([0, 1, 2, 3]):
        wide(x)
    on = [(out[:, n:] != 0).float().mean().item() for n, out in seen]
    assert all(0.0 < f < 0.6 for f in on)
    for h in handles:
        h.remove()


@pytest.mark.parametrize("name", list(CASES))
def test_narrow_loads_into_a_fresh_model_and_matches(name):
    model = _trained_like(name)
    x = _x(name)
    wide = widen(model, spare_fraction=0.25)
    back = narrow(wide).eval()
    fresh = create_model(name, 10, in_channels=CASES[name][0], **KWARGS.get(name, {}))
    fresh.load_state_dict(back.state_dict(), strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x)) or torch.allclose(fresh(x), model(x), atol=1e-6)
        # after "training" every weight, spare ones included, narrow equals the wide model with spare off
        for p in wide.parameters():
            p.add_(0.05 * torch.randn_like(p))
        wide.eval()
        assert torch.equal(narrow(wide).eval()(x), wide(x))  # spare off is bit-identical to the deployed model
        with wide.masks([0, 1, 2, 3]):
            assert not torch.allclose(narrow(wide).eval()(x), wide(x), atol=1e-5)


class Weird(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)


def test_a_model_outside_the_protocol_gets_a_clear_error():
    with pytest.raises(UnsupportedModelError, match=r"1 \(Weird\).*widen_spare"):
        widen(nn.Sequential(nn.Linear(4, 4), Weird()))
    with pytest.raises(UnsupportedModelError, match=r"0 \(Weird\)"):
        widen(nn.Sequential(Weird()))


class UserBlock(nn.Module):
    """A user block taking part through the SpareCapable protocol: a conv_bn followed by a 1x1 conv."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.inner = conv_bn(c_in, c_out)
        self.proj = nn.Conv2d(c_out, c_out, 1)

    def forward(self, x):
        return self.proj(self.inner(x))

    def widen_spare(self, extra_in, ctx):
        self.inner, extra = ctx.widen(self.inner, extra_in, "inner")
        self.proj = widen_conv(self.proj, extra, 0)
        return self, 0


def test_a_user_block_implementing_the_protocol_is_widened():
    torch.manual_seed(0)
    model = nn.Sequential(UserBlock(1, 6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x = torch.randn(2, 1, 8, 8)
    wide = widen(model).eval()
    with torch.no_grad(), wide.masks([0, 1]):
        assert torch.allclose(wide(x), model(x), atol=1e-5)
    back = narrow(wide)
    assert all(a.shape == b.shape for a, b in zip(back.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("name", list(CASES))
def test_widening_is_seeded_by_its_seed_and_leaves_the_global_rng_alone(name):
    model = _trained_like(name)

    def widened(seed: int, noise: int):
        torch.manual_seed(noise)
        torch.rand(7)  # whatever ran before
        state = torch.get_rng_state()
        wide = widen(model, seed=seed)
        assert torch.equal(torch.get_rng_state(), state)  # no draw from the global RNG
        return wide.net.state_dict()

    a, b, c = widened(0, 1), widened(0, 2), widened(1, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed: same spare weights, whatever ran before
    assert any(not torch.equal(a[k], c[k]) for k in a)  # another seed: other spare weights
    # fresh weights are torch's default initialisation: uniform within +-1/sqrt(fan_in)
    orig = model.state_dict()
    for k, w in a.items():
        if k.endswith("weight") and w.dim() == 4 and orig[k].shape[0] < w.shape[0]:
            fresh = w[orig[k].shape[0]:]
            bound = 1 / fresh[0].numel() ** 0.5
            assert fresh.abs().max() <= bound and fresh.std() > bound / 4
