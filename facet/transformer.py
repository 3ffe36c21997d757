"""Pre-LN transformer blocks of CLIP's image and text towers (their MLP also serves the fusion).

    x = x + attn(ln_1(x), mask)        # multi-head self-attention
    x = x + mlp(ln_2(x))               # c_fc -> GELU/QuickGELU -> c_proj, 4x wide

This is OpenAI CLIP's `ResidualAttentionBlock` with its parameter names, so official weights
load: `attn.in_proj_weight` (3C, C) stacks the query, key and value projections exactly like
`nn.MultiheadAttention`, `attn.out_proj` is a Linear. Unlike the original we keep tensors
batch-first (B, N, C) and compute attention with `F.scaled_dot_product_attention`.

Masks are boolean, True = keep (the query may attend to that key), converted once here.
`attn_mask` (N, N) is shared by the batch (e.g. the causal mask of the text tower); `key_mask`
(B, N) drops keys per sample (e.g. missing views). A float `attn_mask` is added to the scores.
A query whose keys are all masked gets NaN: keep at least one key (e.g. itself) per query.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MultiheadAttention(nn.Module):
    """Self-attention with `nn.MultiheadAttention`'s parameter layout, batch-first.

    Args:
        width: C, the model width.
        heads: number of heads; C must divide by it.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # [W_q; W_k; W_v]
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's defaults
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, C), attn_mask broadcastable to (B, heads, N, N) -> (B, N, C)."""
        B, N, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, N, 3C)
        q, k, v = qkv.view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, heads, N, C / heads); SDPA scales by 1/sqrt(C / heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, N, C/heads)
        y = y.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.out_proj(y)


def combine_masks(attn_mask: torch.Tensor | None, key_mask: torch.Tensor | None
                  ) -> torch.Tensor | None:
    """One SDPA mask from a shared (N, N) mask and a per-sample (B, N) key mask.

    Args:
        attn_mask: None, (N, N) bool (True = keep) or float (added to the scores).
        key_mask: None or (B, N) bool, True = this key exists.
    Returns:
        None, the attn_mask unchanged, or (B, 1, N, N) (bool, or float when attn_mask is float).
    """
    if key_mask is None:
        return attn_mask
    if key_mask.dtype != torch.bool:
        raise ValueError(f"key_mask must be bool (True = keep), got {key_mask.dtype}")
    keys = key_mask[:, None, None, :]  # (B, 1, 1, N): the same keys for every query and head
    if attn_mask is None:
        return keys
    if attn_mask.dtype == torch.bool:
        return attn_mask & keys  # (B, 1, N, N)
    return attn_mask.masked_fill(~keys, float("-inf"))  # (B, 1, N, N)


class MLP(nn.Sequential):
    """c_fc -> GELU (or QuickGELU) -> c_proj, `ratio` times wide inside (CLIP's names)."""

    def __init__(self, width: int, ratio: float = 4.0, quick_gelu: bool = False):
        hidden = int(width * ratio)
        super().__init__(OrderedDict(c_fc=nn.Linear(width, hidden),
                                     gelu=QuickGELU() if quick_gelu else nn.GELU(),
                                     c_proj=nn.Linear(hidden, width)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: attention then MLP, each added to the residual stream.

    Args:
        width: C.
        heads: attention heads.
        quick_gelu: QuickGELU (OpenAI's checkpoints) instead of exact GELU.
        mlp_ratio: hidden width of the MLP over C (4 in CLIP).
    """

    def __init__(self, width: int, heads: int, quick_gelu: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, quick_gelu)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, C), attn_mask as in `MultiheadAttention` -> (B, N, C)."""
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of `ResidualAttentionBlock`s (`resblocks.i` as in OpenAI's checkpoints).

    Args:
        width: C.
        layers: number of blocks.
        heads: attention heads per block.
        quick_gelu: QuickGELU instead of GELU in the MLPs.
    """

    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool = False):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers))
        self.init_parameters()

    def init_parameters(self) -> None:
        """CLIP's `initialize_parameters` for blocks: normal weights with width-based stds.

        The residual projections (out_proj, c_proj) get an extra 1/sqrt(2 * layers), like GPT-2,
        so the residual stream's variance does not grow with depth. OpenAI applies this to the
        text tower only (its ViT keeps PyTorch defaults); we use one rule for both towers.
        """
        proj_std = self.width ** -0.5 * (2 * self.layers) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=self.width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * self.width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run all blocks.

        Args:
            x: (B, N, C) tokens.
            attn_mask: None or (N, N), bool True = keep, or float added to the scores.
            key_mask: None or (B, N) bool, True = key present.
        Returns:
            (B, N, C).
        """
        mask = combine_masks(attn_mask, key_mask)
        for block in self.resblocks:
            x = block(x, mask)
        return x
