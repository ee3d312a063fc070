"""Widening machinery shared by every model family: the per-type handler table, the widening context, layer
helpers, :class:`WideModel` and :func:`narrow`.

Conventions every handler keeps (they are what make :func:`narrow` generic):

* spare channels/units are *appended* after the original ones along every widened dimension;
* a widened module keeps its original parameter and buffer names (extra modules, such as :class:`SpareMask`, hold
  no state), so narrowing is slicing each original tensor back to its original shape;
* weights that read spare channels into *original* outputs start at exactly zero, and spare batch-norm channels
  are neutral (running mean 0, var 1, weight 1, bias 0), so the widened model computes the same function;
* every spare activation passes through a :class:`SpareMask`, so with the spare capacity off the original
  channels never see spare values and the narrowed model equals the wide model in ``"off"`` mode exactly;
* fresh weights are drawn from the context's generator (``ctx.generator``, seeded by :func:`widen`'s ``seed``), on
  the CPU in float32 and then moved to the layer's device and dtype, never from the global RNG: the same model and
  seed give the same widened model on every call, whatever ran before, and the same draws on every device.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Callable, Protocol, runtime_checkable

import torch
from torch import nn

from ..checks import Param, check_value
from ..runtime import seeded_generator
from .masks import P_ON, MaskState, SpareMask

# The parameters of widen(), declared once: REM declares its own spare_fraction and p_on with these.
WIDEN_PARAMS = {
    "spare_fraction": Param(float, 1.0, low=0, closed="neither", doc="spare channels per original channel"),
    "p_on": P_ON,
}


class UnsupportedModelError(TypeError):
    """A model (or one of its blocks) cannot be given spare capacity."""


@runtime_checkable
class SpareCapable(Protocol):
    """The protocol a user block implements to take part in :func:`widen`.

    ``widen_spare(extra_in, ctx)`` receives the number of spare channels appended to the block's input and returns
    ``(widened_block, extra_out)``: a block accepting ``c_in + extra_in`` channels and producing ``c_out +
    extra_out``. It must keep the conventions in this module's docstring (append spare channels last, keep the
    original parameter names, zero weights from spare inputs to original outputs, neutral spare batch norms, a
    :class:`SpareMask` from ``ctx.new_mask(n_orig, n_spare)`` after each spare activation). ``ctx`` offers
    ``ctx.spare_for(n)``, ``ctx.widen(child, extra_in, name)`` to recurse into children, ``ctx.generator`` (the
    seeded generator every fresh weight is drawn from: pass it on, e.g. ``widen_conv(conv, extra_in, s,
    ctx.generator)``) and the layer helpers :func:`widen_conv`, :func:`widen_bn`, :func:`widen_linear` here.
    """

    def widen_spare(self, extra_in: int, ctx: "WidenContext") -> tuple[nn.Module, int]: ...


Handler = Callable[[nn.Module, int, "WidenContext"], "tuple[nn.Module, int]"]
HANDLERS: list[tuple[type, Handler]] = []  # an exact type match wins, else the first isinstance match


def register(module_type: type) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS.insert(0, (module_type, fn))
        return fn
    return deco


def init_generator(seed: int) -> torch.Generator:
    """The CPU generator fresh spare weights are drawn from: a stream of its own per ``seed`` (not the masks'
    hash, not the global RNG)."""
    return seeded_generator(seed, 0x5EED_CA9)


class WidenContext:
    def __init__(self, spare_fraction: float, state: MaskState, generator: torch.Generator | None = None) -> None:
        check_value(spare_fraction, WIDEN_PARAMS["spare_fraction"], "spare_fraction")
        self.spare_fraction = spare_fraction
        self.state = state
        self.generator = generator if generator is not None else init_generator(state.seed)
        self.masks: list[SpareMask] = []
        self.path: list[str] = []
        self.pooled_to_one = False  # spatial size known to be 1x1 (Flatten keeps channels in order)

    def spare_for(self, n: int) -> int:
        return max(1, math.ceil(self.spare_fraction * n))

    def new_mask(self, n_orig: int, n_spare: int) -> SpareMask:
        m = SpareMask(len(self.masks), n_orig, n_spare, self.state)
        self.masks.append(m)
        return m

    def where(self) -> str:
        return ".".join(self.path) or "<model>"

    def widen(self, module: nn.Module, extra_in: int, name: str = "") -> tuple[nn.Module, int]:
        if name:
            self.path.append(name)
        try:
            if isinstance(module, SpareCapable):
                return module.widen_spare(extra_in, self)
            for t, fn in HANDLERS:
                if type(module) is t:
                    return fn(module, extra_in, self)
            for t, fn in HANDLERS:
                if isinstance(module, t):
                    return fn(module, extra_in, self)
            raise UnsupportedModelError(
                f"capacity.widen: cannot add spare capacity to {self.where()} ({type(module).__name__}): it is "
                f"neither a supported layer ({', '.join(sorted({t.__name__ for t, _ in HANDLERS}))}) nor a block "
                f"implementing the SpareCapable protocol (a method widen_spare(extra_in, ctx) -> (module, "
                f"extra_out)); see corrective_unlearning.capacity.SpareCapable")
        finally:
            if name:
                self.path.pop()


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    p = next(old.parameters(), None)
    return new.to(device=p.device, dtype=p.dtype) if p is not None else new


@torch.no_grad()
def _fresh(module: nn.Module, generator: torch.Generator | None) -> nn.Module:
    """``module`` (a Conv2d or Linear built without initialisation, on the CPU) initialised as torch's own
    ``reset_parameters`` does (weight and bias uniform in +-1/sqrt(fan_in), which is kaiming_uniform_ with
    a = sqrt(5)), drawn from ``generator`` (None: the global RNG)."""
    fan_in = module.weight[0].numel()
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    module.weight.uniform_(-bound, bound, generator=generator)
    if module.bias is not None:
        module.bias.uniform_(-bound, bound, generator=generator)
    return module


@torch.no_grad()
def widen_conv(conv: nn.Conv2d, extra_in: int, extra_out: int,
               generator: torch.Generator | None = None) -> nn.Conv2d:
    """``conv`` reading ``extra_in`` more input channels (zero weights into original outputs) and producing
    ``extra_out`` more (fresh filters over all inputs, drawn from ``generator``: pass ``ctx.generator``; None
    draws from the global RNG, which makes the result depend on whatever ran before)."""
    if conv.groups != 1:
        raise UnsupportedModelError(f"capacity.widen: grouped convolutions are not supported ({conv})")
    c_out, c_in = conv.out_channels, conv.in_channels
    new = _like(_fresh(nn.utils.skip_init(nn.Conv2d, c_in + extra_in, c_out + extra_out, conv.kernel_size,
                                          stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                          bias=conv.bias is not None, padding_mode=conv.padding_mode,
                                          device="cpu", dtype=torch.float32), generator), conv)
    new.weight[:c_out, :c_in] = conv.weight
    new.weight[:c_out, c_in:] = 0
    if conv.bias is not None:
        new.bias[:c_out] = conv.bias
    return new


@torch.no_grad()
def widen_bn(bn: nn.BatchNorm2d | nn.BatchNorm1d, extra: int) -> nn.Module:
    """``bn`` with ``extra`` neutral channels appended (running mean 0, var 1, weight 1, bias 0)."""
    new = type(bn)(bn.num_features + extra, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    ref = next(iter(list(bn.parameters()) + list(bn.buffers())), None)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
    n = bn.num_features
    if bn.affine:
        new.weight[:n], new.bias[:n] = bn.weight, bn.bias
    if bn.track_running_stats:
        new.running_mean[:n], new.running_var[:n] = bn.running_mean, bn.running_var
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


@torch.no_grad()
def widen_linear(lin: nn.Linear, extra_in: int, extra_out: int = 0,
                 generator: torch.Generator | None = None) -> nn.Linear:
    """``lin`` reading ``extra_in`` more inputs (zero weights into original outputs), with ``extra_out`` fresh
    output units (drawn from ``generator``, as in :func:`widen_conv`)."""
    n_out, n_in = lin.out_features, lin.in_features
    new = _like(_fresh(nn.utils.skip_init(nn.Linear, n_in + extra_in, n_out + extra_out, bias=lin.bias is not None,
                                          device="cpu", dtype=torch.float32), generator), lin)
    new.weight[:n_out, :n_in] = lin.weight
    new.weight[:n_out, n_in:] = 0
    if lin.bias is not None:
        new.bias[:n_out] = lin.bias
    return new


class WideModel(nn.Module):
    """A widened network plus its mask state. Runs with the spare capacity off unless inside :meth:`masks`
    or :meth:`spare_all`."""

    def __init__(self, net: nn.Module, template: nn.Module, state: MaskState, spare_masks: list[SpareMask]) -> None:
        super().__init__()
        self.net = net
        object.__setattr__(self, "template", template)  # original architecture (not a submodule)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "spare_masks", spare_masks)

    def forward(self, x):
        return self.net(x)

    @contextmanager
    def _mode(self, mode: str, indices=None):
        st = self.state
        saved = (st.mode, st.indices)
        st.mode = mode
        st.indices = None if indices is None else torch.as_tensor(indices)
        try:
            yield self
        finally:
            st.mode, st.indices = saved

    def masks(self, indices):
        """Context: forward passes use each example's own spare mask (the shared one for shared indices);
        ``indices`` are the batch's example indices, in batch order."""
        return self._mode("masks", indices)

    def spare_off(self):
        """Context: all spare channels zero (the default mode, as at inference)."""
        return self._mode("off")

    def spare_all(self):
        """Context: all spare channels on."""
        return self._mode("all")

    def shared_mask_for(self, indices) -> None:
        """Every index in ``indices`` uses one shared mask (the redirection channel for identified samples)."""
        self.state.share(indices)


def widen(model: nn.Module, spare_fraction: float = 1.0, p_on: float = 0.2, seed: int = 0) -> WideModel:
    """A :class:`WideModel` computing the same function as ``model`` (which is left untouched), with
    ``ceil(spare_fraction * c)`` spare channels after every widened layer of ``c`` channels. The default 1.0
    doubles each block, as the reference's capacity-restricted network (50% of channels used) does; masks turn
    each spare channel on with probability ``p_on``. ``seed`` fixes both the masks and the fresh spare weights
    (drawn from :func:`init_generator`, never from the global RNG), so equal inputs give bit-identical models."""
    state = MaskState(p_on=p_on, seed=seed)
    ctx = WidenContext(spare_fraction, state)
    net, extra_out = ctx.widen(copy.deepcopy(model), 0)
    if extra_out:
        raise UnsupportedModelError(f"capacity.widen: the model's output has {extra_out} spare units; its last "
                                    f"layer must map spare inputs to the original outputs only")
    return WideModel(net, copy.deepcopy(model), state, ctx.masks)


@torch.no_grad()
def narrow(wide: WideModel) -> nn.Module:
    """The original architecture with the spare channels dropped: each original tensor is the leading block of
    its widened counterpart. Equals ``wide`` with the spare capacity off; loads into a fresh ``create_model``."""
    out = copy.deepcopy(wide.template)
    wide_sd = wide.net.state_dict()
    new_sd = {}
    for name, t in out.state_dict().items():
        w = wide_sd[name]
        if w.dim() != t.dim():
            raise RuntimeError(f"narrow: {name} has {w.dim()} dims in the wide model, {t.dim()} in the original")
        new_sd[name] = w[tuple(slice(0, n) for n in t.shape)].clone()
    out.load_state_dict(new_sd, strict=True)
    out.train(wide.training)
    return out
