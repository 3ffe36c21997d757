"""The pre-LN transformer block of facet: CLIP's image and text towers, and the fusion.

    x = x + attn(ln_1(x))              # multi-head self-attention
    x = x + mlp(ln_2(x))               # c_fc -> GELU/QuickGELU -> c_proj, 4x wide

This is OpenAI CLIP's `ResidualAttentionBlock` with its parameter names, so official weights
load: `attn.in_proj_weight` (3C, C) stacks the query, key and value projections exactly like
`nn.MultiheadAttention`, `attn.out_proj` is a Linear. Unlike the original we keep tensors
batch-first (B, N, C) and compute the towers' attention with `F.scaled_dot_product_attention`.

The towers and the fusion (`facet.fusion`) ask different things of the attention, and one
switch of the block, `need_weights`, picks the attention module (same names, same init):
- towers (False): facet's `MultiheadAttention` (SDPA) under an (N, N) `attn_mask` shared by
  the batch (the text tower's causal mask). It returns no weights: SDPA never forms them.
- fusion (True): torch's `nn.MultiheadAttention`, which also returns the head-averaged attention
  weights (CVSA and the temporal fusion report their token's attention) and drops keys per
  sample by a (B, N) `key_mask` (missing views). Computing them ourselves instead would change
  the fusion's results in the last bits (~1e-7: another order of operations, and in eval mode
  under no_grad torch runs a fused kernel of its own), so trained fusion weights keep giving
  exactly the numbers they gave.

Masks are boolean, True = keep (the query may attend to that key), converted where needed.
A float `attn_mask` is added to the scores. A query whose keys are all masked gets NaN: keep
at least one key (e.g. itself) per query.
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


class MLP(nn.Sequential):
    """c_fc -> GELU (or QuickGELU) -> c_proj, `ratio` times wide inside (CLIP's names)."""

    def __init__(self, width: int, quick_gelu: bool, ratio: float = 4.0):
        hidden = int(width * ratio)
        super().__init__(OrderedDict(c_fc=nn.Linear(width, hidden),
                                     gelu=QuickGELU() if quick_gelu else nn.GELU(),
                                     c_proj=nn.Linear(hidden, width)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: attention then MLP, each added to the residual stream (module docstring).

    Args:
        width: C.
        heads: attention heads.
        quick_gelu: QuickGELU (OpenAI's checkpoints) instead of exact GELU.
        need_weights: torch's `nn.MultiheadAttention`, returning the attention weights and
            taking a per-sample key mask (the fusion); False: facet's SDPA attention (towers).
        mlp_ratio: hidden width of the MLP over C (4 in CLIP).
    """

    def __init__(self, width: int, heads: int, quick_gelu: bool, need_weights: bool = False,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.need_weights = need_weights
        # Registration order is parameter order, which AdamW's saved state follows, so each
        # kind keeps its own: the fusion's as its checkpoints were written, OpenAI's for the
        # towers. Either way attn is built before mlp: the order both draw their random init.
        if need_weights:
            self.ln_1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.ln_2 = nn.LayerNorm(width)
            self.mlp = MLP(width, quick_gelu, mlp_ratio)
        else:
            self.attn = MultiheadAttention(width, heads)
            self.ln_1 = nn.LayerNorm(width)
            self.mlp = MLP(width, quick_gelu, mlp_ratio)
            self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            x: (B, N, C) tokens.
            attn_mask: towers only: None or (N, N), bool True = keep, or float added to scores.
            key_mask: need_weights only: None or (B, N) bool, True = key present.
        Returns:
            (B, N, C), and the head-averaged attention weights (B, N, N), None without
            need_weights.
        """
        y = self.ln_1(x)
        if self.need_weights:
            if attn_mask is not None:
                raise ValueError("a need_weights block takes a per-sample key_mask, no attn_mask")
            # torch's key_padding_mask means True = ignore: converted once, here
            padding = None if key_mask is None else ~key_mask
            out, weights = self.attn(y, y, y, key_padding_mask=padding, need_weights=True)
        else:
            if key_mask is not None:
                raise ValueError("key_mask needs a need_weights block; pass an attn_mask")
            out, weights = self.attn(y, attn_mask), None
        x = x + out
        return x + self.mlp(self.ln_2(x)), weights


class Transformer(nn.Module):
    """A stack of `ResidualAttentionBlock`s (`resblocks.i` as in OpenAI's checkpoints): a tower.

    Args:
        width: C.
        layers: number of blocks.
        heads: attention heads per block.
        quick_gelu: QuickGELU instead of GELU in the MLPs.
    """

    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool):
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

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run all blocks.

        Args:
            x: (B, N, C) tokens.
            attn_mask: None or (N, N), bool True = keep, or float added to the scores.
        Returns:
            (B, N, C).
        """
        for block in self.resblocks:
            x, _ = block(x, attn_mask)  # a tower's blocks return no weights
        return x
