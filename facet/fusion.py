"""Fusion of view and frame embeddings: CVSA, MTGF and the temporal fusion for 4D.

Our reconstruction of FACET-VLM's fusion (the papers' equations are not public; DESIGN.md
"Model"). All three modules work in the joint CLIP space of width E, on unit-norm image
embeddings z and prompt embeddings p, so fused embeddings compare directly with the prompts.
The frame dimension is folded into the batch: N = B * T rows of V view tokens.

- `CVSA` (Cross-View Semantic Aggregation): tokens [a; z_1 + e_1; ...; z_V + e_V] -- a learned
  aggregation token a, a learned embedding e_v per view *slot* (slot v = the v-th configured
  viewpoint, e.g. yaw -20/0/+20) -- through pre-LN self-attention blocks over the V + 1 tokens.
  Missing views are removed as attention *keys* (view_mask True = keep), so they cannot influence
  any kept token; their own output rows are zeroed. Returns refined view tokens h_v and the
  aggregate g (the a slot). Attention is permutation-equivariant, so permuting the views together
  with their slot embeddings leaves g unchanged.
- `MTGF` (Multiview Text-Guided Fusion): every view token attends to the K prompt embeddings
  (queries from views, keys/values from prompts), u_v = h_v + CrossAttn(LN(h_v), LN(P)),
  u_v <- u_v + MLP(LN(u_v)). Text-guided view weights beta_v = softmax_v(max_k cos(u_v, p_k) / tau)
  (missing views get weight 0) favour the views that look most like *some* emotion;
  m = sum_v beta_v u_v. The frame embedding f = LN(g + m) is formed in facet/model.py, which
  also needs LN(g) alone for the `mtgf=False` ablation.
- `TemporalFusion`: [c; f_1 + q_1; ...; f_T + q_T] (learned token c, temporal position
  embeddings q_t) through pre-LN blocks; the c slot, layer-normed, is the sequence embedding.
  "T = 1 passes through" means exactly f = f_1 (DESIGN.md): the blocks are skipped. FacetVLM
  builds this module only when config.max_frames > 1, so a static model has no parameter that
  some step leaves without a gradient (DDP needs no find_unused_parameters).

Shapes: N rows (= B * T), V views, K classes, T frames, E width (= CLIP embed_dim).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Sequential):
    """Two-layer GELU MLP (CLIP's c_fc / c_proj naming)."""

    def __init__(self, width: int, ratio: float = 4.0):
        hidden = int(width * ratio)
        super().__init__(OrderedDict(c_fc=nn.Linear(width, hidden), gelu=nn.GELU(),
                                     c_proj=nn.Linear(hidden, width)))


class FusionBlock(nn.Module):
    """Pre-LN transformer block: x + SelfAttn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (N, S, E); key_mask (N, S) bool, True = keep, or None.
        Returns: x (N, S, E) and the head-averaged attention weights (N, S, S)."""
        y = self.ln_1(x)
        # nn.MultiheadAttention's key_padding_mask means True = ignore: convert once, here.
        padding = None if key_mask is None else ~key_mask
        out, weights = self.attn(y, y, y, key_padding_mask=padding, need_weights=True)
        x = x + out
        x = x + self.mlp(self.ln_2(x))
        return x, weights


def check_view_mask(view_mask: torch.Tensor | None, n: int, v: int) -> None:
    """ValueError unless view_mask is None or a (n, v) bool tensor keeping >= 1 view per row."""
    if view_mask is None:
        return
    if view_mask.shape != (n, v) or view_mask.dtype != torch.bool:
        raise ValueError(f"view_mask must be a bool tensor of shape {(n, v)}, "
                         f"got {view_mask.dtype} {tuple(view_mask.shape)}")
    if not view_mask.any(dim=1).all():
        raise ValueError("view_mask masks every view of some sample; keep at least one view")


@dataclass
class CVSAOutput:
    tokens: torch.Tensor  # (N, V, E) refined view tokens h_v (zero for masked views)
    aggregate: torch.Tensor  # (N, E) the aggregation slot g
    attention: torch.Tensor  # (N, V+1, V+1) last block's attention, slot 0 = aggregation token


class CVSA(nn.Module):
    """Cross-View Semantic Aggregation over V view embeddings (see module docstring)."""

    def __init__(self, width: int, heads: int = 4, depth: int = 1, max_views: int = 9,
                 dropout: float = 0.0):
        super().__init__()
        self.aggregation_token = nn.Parameter(torch.randn(width) * 0.02)
        self.view_embedding = nn.Parameter(torch.randn(max_views, width) * 0.02)
        self.blocks = nn.ModuleList(FusionBlock(width, heads, dropout) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor, view_mask: torch.Tensor | None = None) -> CVSAOutput:
        """Args:
            z: (N, V, E) view embeddings.
            view_mask: (N, V) bool, True = view present; None = all present.
        Returns:
            CVSAOutput (tokens (N, V, E), aggregate (N, E), attention (N, V+1, V+1)).
        """
        n, v, e = z.shape
        if v > len(self.view_embedding):
            raise ValueError(f"CVSA got {v} views but has {len(self.view_embedding)} view slots "
                             f"(raise FacetConfig.max_views)")
        check_view_mask(view_mask, n, v)
        token = self.aggregation_token.expand(n, 1, e)  # (N, 1, E)
        x = torch.cat([token, z + self.view_embedding[:v]], dim=1)  # (N, V+1, E)
        key_mask = None
        if view_mask is not None:
            key_mask = torch.cat([view_mask.new_ones(n, 1), view_mask], dim=1)  # (N, V+1)
        for block in self.blocks:
            x, attention = block(x, key_mask)
        x = self.ln_post(x)
        tokens = x[:, 1:]  # (N, V, E)
        if view_mask is not None:
            tokens = tokens * view_mask.unsqueeze(-1)  # masked rows -> 0, (N, V, E)
        return CVSAOutput(tokens, x[:, 0], attention)


@dataclass
class MTGFOutput:
    tokens: torch.Tensor  # (N, V, E) text-refined view tokens u_v
    weights: torch.Tensor  # (N, V) text-guided view weights beta_v, sum 1 over kept views
    fused: torch.Tensor  # (N, E) m = sum_v beta_v u_v
    attention: torch.Tensor  # (N, V, K) cross-attention of each view over the prompts


class MTGF(nn.Module):
    """Multiview Text-Guided Fusion of view tokens under K prompt embeddings."""

    def __init__(self, width: int, heads: int = 4, tau: float = 0.2, dropout: float = 0.0):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"MTGF temperature tau must be > 0, got {tau}")
        self.tau = tau  # fixed temperature of the view weights (cosines live in [-1, 1])
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, h: torch.Tensor, prompts: torch.Tensor,
                view_mask: torch.Tensor | None = None) -> MTGFOutput:
        """Args:
            h: (N, V, E) view tokens (from CVSA, or raw embeddings when CVSA is off).
            prompts: (K, E) class embeddings shared by all rows, or (N, K, E) per row.
            view_mask: (N, V) bool, True = view present; None = all present.
        Returns:
            MTGFOutput (tokens (N, V, E), weights (N, V), fused (N, E), attention (N, V, K)).
        """
        n, v, e = h.shape
        check_view_mask(view_mask, n, v)
        if prompts.dim() == 2:
            prompts = prompts.expand(n, *prompts.shape)  # (N, K, E), a view, no copy
        kv = self.ln_kv(prompts)
        attended, attention = self.cross_attn(self.ln_q(h), kv, kv, need_weights=True)
        u = h + attended  # (N, V, E)
        u = u + self.mlp(self.ln_2(u))
        # beta_v = softmax_v(max_k cos(u_v, p_k) / tau): trust views that match some emotion
        cos = F.normalize(u, dim=-1) @ F.normalize(prompts, dim=-1).transpose(1, 2)  # (N, V, K)
        score = cos.amax(dim=-1) / self.tau  # (N, V)
        if view_mask is not None:
            score = score.masked_fill(~view_mask, float("-inf"))
        weights = score.softmax(dim=-1)  # (N, V)
        fused = (weights.unsqueeze(-1) * u).sum(dim=1)  # (N, E)
        return MTGFOutput(u, weights, fused, attention)


class TemporalFusion(nn.Module):
    """Fuses T frame embeddings into one sequence embedding (see module docstring)."""

    def __init__(self, width: int, heads: int = 4, depth: int = 1, max_frames: int = 16,
                 dropout: float = 0.0):
        super().__init__()
        self.temporal_token = nn.Parameter(torch.randn(width) * 0.02)
        self.temporal_embedding = nn.Parameter(torch.randn(max_frames, width) * 0.02)
        self.blocks = nn.ModuleList(FusionBlock(width, heads, dropout) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            f: (B, T, E) frame embeddings.
        Returns:
            (B, E) sequence embedding (= f[:, 0] exactly when T = 1) and frame weights (B, T):
            the share of the temporal token's last-block attention that goes to each frame
            (renormalised over frames, since the token also attends to itself).
        """
        b, t, e = f.shape
        if t == 1:
            return f[:, 0], f.new_ones(b, 1)
        if t > len(self.temporal_embedding):
            raise ValueError(f"TemporalFusion got {t} frames but has "
                             f"{len(self.temporal_embedding)} temporal positions "
                             f"(raise FacetConfig.max_frames)")
        token = self.temporal_token.expand(b, 1, e)  # (B, 1, E)
        x = torch.cat([token, f + self.temporal_embedding[:t]], dim=1)  # (B, T+1, E)
        for block in self.blocks:
            x, attention = block(x)
        to_frames = attention[:, 0, 1:]  # (B, T)
        weights = to_frames / to_frames.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return self.ln_post(x[:, 0]), weights
