"""Per-example masks over spare channels, computed on the fly from the batch's example indices.

A mask bit is a pure function of (seed, layer id, mask key, channel): a 32-bit integer hash, so nothing is stored
per example and the masks are the same on every device. The mask key of an example is its index, or one shared
key for every index registered with :meth:`MaskState.share` (the single redirection mask for identified samples).
"""
from __future__ import annotations

import torch
from torch import nn

from ..checks import Param, check_value

P_ON = Param(float, 0.2, low=0, high=1, doc="the chance that a spare channel is on in an example's mask")

_M32 = 0xFFFFFFFF
SHARED_KEY = 0xFFFFFFFE  # the mask key every shared index maps to


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors holding values in [0, 2**32); products stay below 2**63."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def spare_bits(keys: torch.Tensor, layer_id: int, n_spare: int, p_on: float, seed: int = 0) -> torch.Tensor:
    """A [len(keys), n_spare] bool tensor: bit c of key k is on with probability ``p_on``, seeded by (seed, layer
    id, k, c)."""
    keys = keys.detach().to("cpu", torch.int64).reshape(-1, 1)
    base = _hash32(torch.tensor(seed, dtype=torch.int64) * 0x1000193 + layer_id)
    per_key = _hash32(base ^ _hash32(keys + 0x9E3779B))
    channels = torch.arange(n_spare, dtype=torch.int64).reshape(1, -1)
    u = _hash32(per_key ^ _hash32(channels * 0x27D4EB2 + 0x165667B1))
    return u < int(p_on * 2 ** 32)


class MaskState:
    """Shared by every :class:`SpareMask` of one wide model: the mode, the current batch's example indices and the
    set of indices that share one mask.

    Modes: ``"off"`` (inference: every spare channel zero; the default), ``"masks"`` (each example's own mask, or
    the shared one), ``"all"`` (every spare channel on)."""

    def __init__(self, p_on: float = 0.2, seed: int = 0) -> None:
        self.reset(p_on, seed)

    def reset(self, p_on: float, seed: int) -> None:
        """New mask parameters: spare capacity off, no shared indices."""
        check_value(p_on, P_ON, "p_on")
        self.p_on, self.seed = p_on, seed
        self.mode = "off"
        self.indices: torch.Tensor | None = None
        self.shared = torch.empty(0, dtype=torch.int64)

    def share(self, indices) -> None:
        """Map every index in ``indices`` to one shared mask (replaces any earlier shared set)."""
        self.shared = torch.as_tensor(indices).detach().to("cpu", torch.int64).reshape(-1).unique()

    def keys(self) -> torch.Tensor:
        if self.indices is None:
            raise RuntimeError("spare masks are on but no example indices are set: run the model inside "
                               "`with wide.masks(indices): ...`")
        idx = self.indices.detach().to("cpu", torch.int64).reshape(-1)
        if self.shared.numel():
            idx = torch.where(torch.isin(idx, self.shared), torch.full_like(idx, SHARED_KEY), idx)
        return idx


class SpareMask(nn.Module):
    """Placed after a widened activation: channels [n_orig:] of dim 1 are spare and get multiplied by a 0/1 mask
    (broadcast over any spatial dims); the first n_orig channels pass unchanged. Holds no parameters or buffers,
    so a widened model's state dict has the original names."""

    def __init__(self, layer_id: int, n_orig: int, n_spare: int, state: MaskState) -> None:
        super().__init__()
        self.layer_id, self.n_orig, self.n_spare = layer_id, n_orig, n_spare
        object.__setattr__(self, "state", state)  # not a submodule; shared across masks

    def extra_repr(self) -> str:
        return f"layer_id={self.layer_id}, n_orig={self.n_orig}, n_spare={self.n_spare}"

    def mask(self, batch: int) -> torch.Tensor:
        """The [batch, n_spare] float mask for the current mode."""
        st = self.state
        if st.mode == "off":
            return torch.zeros(batch, self.n_spare)
        if st.mode == "all":
            return torch.ones(batch, self.n_spare)
        if st.mode != "masks":
            raise ValueError(f"unknown spare mode {st.mode!r}")
        keys = st.keys()
        if keys.numel() != batch:
            raise ValueError(f"{keys.numel()} example indices set for a batch of {batch}")
        return spare_bits(keys, self.layer_id, self.n_spare, st.p_on, st.seed).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.n_orig + self.n_spare:
            raise ValueError(f"SpareMask expects {self.n_orig}+{self.n_spare} channels, got {x.shape[1]}")
        m = self.mask(x.shape[0]).to(device=x.device, dtype=x.dtype)
        full = torch.cat([torch.ones(x.shape[0], self.n_orig, device=x.device, dtype=x.dtype), m], dim=1)
        return x * full.reshape(*full.shape, *([1] * (x.dim() - 2)))
