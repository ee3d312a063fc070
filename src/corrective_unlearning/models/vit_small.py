"""REM's small ViT (REFERENCE-NOTES 3.1; the "ViT for small-size datasets" of Lee, Lee and Song 2021):
shifted-patch tokenisation (SPT), locality self-attention (LSA: a learned temperature and the diagonal of the
attention logits masked), class-token pooling, a LayerNorm + ``nn.Linear`` head.

Reference sizes (the defaults): patch 8 on 32 px images (a 4 x 4 grid, 16 patches + the class token), dim 512,
depth 4, 8 heads of 64, MLP hidden 1536, no dropout. The patch is ``image_size // 4`` unless given, so the grid
stays 4 x 4 on other sizes: 7 on 28 px Fashion-MNIST (also 16 patches), 4 on the 16 px synthetic set.
``image_size`` is passed by :func:`create_model` from the dataset (32 when nothing passes it).

The model is an ``nn.Sequential`` of ``[embed, block_1, ..., block_depth, head]``; its last module is the head's
``nn.Linear`` (the suspects rankings hook that layer's input: the class token after the final LayerNorm).

``last_k`` numbering (see :func:`corrective_unlearning.models.split_last_k`): the head counts 1 layer (its Linear),
every transformer block 4 (the attention's qkv and output projections, the MLP's two Linears), the SPT embedding 1.
With depth 4: ``last_k = 1`` trains the head, 5 the last block + head, 9, 13, 17 the last 2, 3, 4 blocks + head,
18 (or ``"all"``) everything.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import MODELS


class ShiftedPatchEmbed(nn.Module):
    """SPT: the image and its four copies shifted by one pixel (left, right, up, down; zero padded) stacked on the
    channel axis, cut into ``patch x patch`` patches, LayerNorm over each flattened patch, a Linear to ``dim``; then
    the class token is prepended and the learned position embedding added. Output [B, 1 + patches, dim]."""

    SHIFTS = ((1, -1, 0, 0), (-1, 1, 0, 0), (0, 0, 1, -1), (0, 0, -1, 1))

    def __init__(self, in_channels: int, image_size: int, patch: int, dim: int) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"vit_small: image size {image_size} is not a multiple of the patch size {patch}")
        self.patch = patch
        patch_dim = 5 * in_channels * patch * patch
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, *(F.pad(x, shift) for shift in self.SHIFTS)], dim=1)
        b, c, h, w = x.shape
        p = self.patch
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)
        x = self.proj(self.norm(x))
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        return x + self.pos_embedding[:, : x.shape[1]]


class LocalitySelfAttention(nn.Module):
    """Pre-norm multi-head attention with LSA: logits scaled by a learned temperature (initialised at
    1/sqrt(head_dim)), each token's logit for itself masked out."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.temperature = nn.Parameter(torch.log(torch.tensor(head_dim ** -0.5)))
        self.out = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)) * self.temperature.exp()
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        logits = logits.masked_fill(eye, torch.finfo(logits.dtype).min)
        y = logits.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear(dim, hidden), GELU, Linear(hidden, dim). ``act`` is the slot that REM's
    spare capacity (:mod:`corrective_unlearning.capacity.vit`) extends with a hidden-unit mask."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.attn = LocalitySelfAttention(dim, heads, head_dim)
        self.ff = FeedForward(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ff(x)


class ClassTokenHead(nn.Module):
    """LayerNorm, the class token's features, a Linear to the classes (the model's last nn.Linear)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x[:, 0]))


class ViT(nn.Sequential):
    """``[embed, blocks..., head]``; see the module docstring."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, patch: int, dim: int, depth: int,
                 heads: int, head_dim: int, mlp_dim: int) -> None:
        super().__init__(ShiftedPatchEmbed(in_channels, image_size, patch, dim),
                         *(TransformerBlock(dim, heads, head_dim, mlp_dim) for _ in range(depth)),
                         ClassTokenHead(dim, num_classes))


@MODELS.register("vit_small")
def vit_small(num_classes: int, in_channels: int = 3, image_size: int = 32, patch_size: int | None = None,
              dim: int = 512, depth: int = 4, heads: int = 8, head_dim: int = 64, mlp_dim: int = 1536) -> ViT:
    """REM's ViT (defaults: the reference's sizes); ``patch_size`` defaults to ``image_size // 4``."""
    patch = patch_size or max(1, image_size // 4)
    return ViT(num_classes, in_channels, image_size, patch, dim, depth, heads, head_dim, mlp_dim)


@MODELS.register("vit_tiny")
def vit_tiny(num_classes: int, in_channels: int = 3, image_size: int = 32, patch_size: int | None = None) -> ViT:
    """``vit_small`` at a quarter of its width for CPU measurements: dim 128, depth 4, 4 heads of 32, MLP 384
    (about 0.8 M parameters instead of 11 M); same tokenisation, attention, pooling and ``last_k`` numbering."""
    return vit_small(num_classes, in_channels, image_size, patch_size, dim=128, depth=4, heads=4, head_dim=32,
                     mlp_dim=384)
