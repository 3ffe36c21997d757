"""Fusion of view and frame embeddings: CVSA, MTGF and the temporal fusion for 4D.

The fusion stage of facet's pipeline (view embeddings -> face embedding); our reconstruction
of FACET-VLM's fusion (the papers' equations are not public). All modules work in the joint
CLIP space of width E, on unit-norm image embeddings z and prompt embeddings p, so fused
embeddings compare directly with the prompts.
The frame dimension is folded into the batch: N = B * T rows of V view tokens.

- `CVSA` (Cross-View Semantic Aggregation): tokens [a; z_1 + e_1; ...; z_V + e_V] -- a learned
  aggregation token a, a learned embedding e_v per view *slot* (slot v = the v-th configured
  viewpoint, e.g. yaw -20/0/+20) -- through pre-LN self-attention blocks over the V + 1 tokens
  (`facet.transformer.ResidualAttentionBlock`, the towers' block, with `need_weights`).
  Missing views are removed as attention *keys* (view_mask True = keep), so they cannot influence
  any kept token; their own output rows are zeroed. Returns refined view tokens h_v and the
  aggregate g (the a slot). Attention is permutation-equivariant, so permuting the views together
  with their slot embeddings leaves g unchanged.
- `MTGF` (Multiview Text-Guided Fusion): every view token attends to the K prompt embeddings
  (queries from views, keys/values from prompts), u_v = h_v + CrossAttn(LN(h_v), LN(P)),
  u_v <- u_v + MLP(LN(u_v)). Text-guided view weights beta_v = softmax_v(max_k cos(u_v, p_k) / tau)
  (missing views get weight 0) favour the views that look most like *some* emotion;
  m = sum_v beta_v u_v.
- MTGF, prompts as queries (`PatchMTGF`, `mtgf_queries="prompts"`; our variant): the views'
  CLS embeddings are one vector each, and attending from them to six prompts that are the same
  for every face gives the guidance nothing face-specific to act on. Here each class prompt asks
  instead, over the G patch tokens of every view (tokens t_{v,j} + e'_v, a learned viewpoint
  embedding e'_v): r_k = CrossAttn(LN(p_k), LN(t)), r_k <- r_k + MLP(LN(r_k)) -- what the face
  shows where class k looks (brows and eyes for surprise, mouth corners for happiness), pooled
  across views and places at once. Its evidence e_k = cos(r_k, p_k) gives a class posterior
  pi = softmax_k(e / tau), m = sum_k pi_k r_k, and the view weights are the posterior-weighted
  share of the classes' attention that falls on each view. The patch tokens are the image
  tower's, ln_post then proj into the joint space (`FacetVLM.encode_views`).
- The frame embedding starts where CLIP is: f_t = mean_v z_v + gamma_f * unit(LN(g + m)), the
  kept views' mean (zero-shot CLIP's face embedding, `mean_fusion`) plus the fused direction
  under a learned gate gamma_f that starts at 0. A fresh FACET-VLM therefore predicts exactly
  what its pretrained CLIP predicts zero-shot, and fine-tuning can only move away from there
  as far as the fusion earns (ReZero-style; with the fusion's LayerNorms at the output, a
  randomly initialised CVSA/MTGF replaced CLIP's embedding with noise: 25 % at step 0 on
  held-out faces where the CLIP alone is at ~60 %). unit() scales the fused vector to the
  norm of one view embedding, so gamma_f reads as "how much fusion, in views".
  The gate is a scalar (`fusion_gate="scalar"`) or a zero-initialised E x E matrix Gamma_f
  (`"matrix"`, our variant): f_t = mean_v z_v + Gamma_f unit(LN(g + m)). Both start the model
  at zero-shot CLIP, but they learn differently: the scalar's gradient is dL/df_t projected
  onto one direction that a fresh fusion chose at random, ~0 on average -- trained, it ends
  near 0 (-0.03 on the BU-3DFE-like set) and the fusion behind it gets almost no gradient. The
  matrix's gradient is the outer product dL/df_t (x) unit(LN(g + m)): it learns which fused
  features move the face towards its class, as LoRA's zero-initialised B and ControlNet's zero
  convolutions do.
- `TemporalFusion`: [c; f_1 + q_1; ...; f_T + q_T] (learned token c, temporal position
  embeddings q_t) through pre-LN blocks; the sequence embedding is mean_t f_t + gamma LN(c slot)
  with a learned gate gamma that starts at 0, so a fresh temporal fusion is the frames' mean
  and learns how much attention over time adds (ReZero / Flamingo-style gating). "T = 1
  passes through" means exactly f = f_1: the blocks are skipped. `ViewFusion` builds
  this module only when max_frames > 1, so a static model has no parameter that some step
  leaves without a gradient (DDP needs no find_unused_parameters).
- `ViewFusion` composes them per frame and over frames, with the paper's ablation switches:
  `cvsa=False` -> h = LN(z) and g = LN(mean of the kept views' z), the same final LayerNorm
  CVSA ends with, so that switching CVSA off removes the cross-view attention only (without
  it, unit-norm z would enter MTGF, whose residual adds terms of norm ~3 and buries them);
  `mtgf=False` -> m is left out, and the per-view embeddings are h. Its `view_weights` are MTGF's
  beta; without MTGF the CVSA aggregation token's attention over the views (renormalised);
  without either, uniform.

Shapes: N rows (= B * T), V views, K classes, T frames, E width (= CLIP embed_dim).
Every size and switch is a required argument here: the one place of their defaults is
`facet.model.FacetConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from facet.transformer import MLP, ResidualAttentionBlock

MTGF_QUERIES = ("views", "prompts")  # who asks in MTGF's cross-attention (`ViewFusion`)
FUSION_GATES = ("scalar", "matrix")  # how much of the fused direction enters f_t (`ViewFusion`)


def fusion_blocks(width: int, heads: int, depth: int) -> nn.ModuleList:
    """`depth` pre-LN self-attention blocks that return their head-averaged attention weights
    and take a per-sample key mask (exact GELU: the fusion has no OpenAI weights to match)."""
    return nn.ModuleList(ResidualAttentionBlock(width, heads, quick_gelu=False, need_weights=True)
                         for _ in range(depth))


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

    def __init__(self, width: int, heads: int, depth: int, max_views: int):
        super().__init__()
        self.aggregation_token = nn.Parameter(torch.randn(width) * 0.02)
        self.view_embedding = nn.Parameter(torch.randn(max_views, width) * 0.02)
        self.blocks = fusion_blocks(width, heads, depth)
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
                             f"(raise max_views)")
        check_view_mask(view_mask, n, v)
        token = self.aggregation_token.expand(n, 1, e)  # (N, 1, E)
        x = torch.cat([token, z + self.view_embedding[:v]], dim=1)  # (N, V+1, E)
        key_mask = None
        if view_mask is not None:
            key_mask = torch.cat([view_mask.new_ones(n, 1), view_mask], dim=1)  # (N, V+1)
        for block in self.blocks:
            x, attention = block(x, key_mask=key_mask)
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

    def __init__(self, width: int, heads: int, tau: float):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"MTGF temperature tau must be > 0, got {tau}")
        self.tau = tau  # fixed temperature of the view weights (cosines live in [-1, 1])
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, quick_gelu=False)

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


class PatchMTGF(nn.Module):
    """MTGF with the prompts asking: every class prompt attends over the patch tokens of all views
    (class-specific pooling; the `MTGF` above has the views ask the prompts). See the module
    docstring, "MTGF, prompts as queries"."""

    def __init__(self, width: int, heads: int, tau: float, max_views: int):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"MTGF temperature tau must be > 0, got {tau}")
        self.tau = tau  # fixed temperature of the class posterior over cosines in [-1, 1]
        # which view a patch comes from: patch tokens carry their place in the image (CLIP's
        # positions) but not their viewpoint
        self.view_embedding = nn.Parameter(torch.randn(max_views, width) * 0.02)
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, quick_gelu=False)

    def forward(self, h: torch.Tensor, prompts: torch.Tensor, view_mask: torch.Tensor | None,
                patches: torch.Tensor) -> MTGFOutput:
        """Args:
            h: (N, V, E) view tokens, passed through as the output's per-view tokens.
            prompts: (K, E) class embeddings shared by all rows, or (N, K, E) per row.
            view_mask: (N, V) bool, True = view present; None = all present.
            patches: (N, V, G, E) the image tower's G patch tokens per view, in the joint space.
        Returns:
            MTGFOutput: tokens h (N, V, E); weights (N, V), the share of the face's attention on
            each view; fused (N, E) m = sum_k pi_k r_k; attention (N, V, K), the share of class
            k's attention that falls on view v.
        """
        n, v, g, e = patches.shape
        check_view_mask(view_mask, n, v)
        if v > len(self.view_embedding):
            raise ValueError(f"MTGF got {v} views but has {len(self.view_embedding)} view slots "
                             f"(raise max_views)")
        if prompts.dim() == 2:
            prompts = prompts.expand(n, *prompts.shape)  # (N, K, E), a view, no copy
        tokens = (patches + self.view_embedding[:v, None]).reshape(n, v * g, e)  # (N, V*G, E)
        # torch's key_padding_mask means True = ignore: a missing view's patches are no keys
        padding = None if view_mask is None else ~view_mask.repeat_interleave(g, dim=1)
        kv = self.ln_kv(tokens)
        r, attention = self.cross_attn(self.ln_q(prompts), kv, kv, key_padding_mask=padding,
                                       need_weights=True)  # (N, K, E), (N, K, V*G)
        # no residual from the query: r_k is what the face shows where class k looks, and its
        # cosine to p_k must not start high just because r_k began as p_k
        r = r + self.mlp(self.ln_2(r))  # (N, K, E)
        evidence = (F.normalize(r, dim=-1) * F.normalize(prompts, dim=-1)).sum(-1)  # (N, K)
        posterior = (evidence / self.tau).softmax(dim=-1)  # pi_k, (N, K)
        fused = (posterior.unsqueeze(-1) * r).sum(dim=1)  # (N, E)
        per_view = attention.view(n, -1, v, g).sum(dim=-1)  # (N, K, V): class k's share on view v
        weights = (posterior.unsqueeze(-1) * per_view).sum(dim=1)  # (N, V), sums to 1
        return MTGFOutput(h, weights, fused, per_view.transpose(1, 2))


class TemporalFusion(nn.Module):
    """Fuses T frame embeddings into one sequence embedding (see module docstring)."""

    def __init__(self, width: int, heads: int, depth: int, max_frames: int):
        super().__init__()
        self.temporal_token = nn.Parameter(torch.randn(width) * 0.02)
        self.temporal_embedding = nn.Parameter(torch.randn(max_frames, width) * 0.02)
        self.blocks = fusion_blocks(width, heads, depth)
        self.ln_post = nn.LayerNorm(width)
        # the attention's share of the output starts at 0: a fresh temporal fusion is the mean
        # of the frames, so it cannot start below pooling them (zero-gated residual)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            f: (B, T, E) frame embeddings.
        Returns:
            (B, E) sequence embedding mean_t f_t + gate * LN(c) (= f[:, 0] exactly when T = 1)
            and frame weights (B, T):
            the share of the temporal token's last-block attention that goes to each frame
            (renormalised over frames, since the token also attends to itself).
        """
        b, t, e = f.shape
        if t == 1:
            return f[:, 0], f.new_ones(b, 1)
        if t > len(self.temporal_embedding):
            raise ValueError(f"TemporalFusion got {t} frames but has "
                             f"{len(self.temporal_embedding)} temporal positions "
                             f"(raise max_frames)")
        token = self.temporal_token.expand(b, 1, e)  # (B, 1, E)
        x = torch.cat([token, f + self.temporal_embedding[:t]], dim=1)  # (B, T+1, E)
        for block in self.blocks:
            x, attention = block(x)
        to_frames = attention[:, 0, 1:]  # (B, T)
        weights = to_frames / to_frames.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return f.mean(dim=1) + self.gate * self.ln_post(x[:, 0]), weights


@dataclass
class FusionOutput:
    view_tokens: torch.Tensor  # (B, T, V, E) per-view tokens that are fused (u, or h)
    frames: torch.Tensor  # (B, T, E) frame embeddings f_t
    embedding: torch.Tensor  # (B, E) the face / sequence embedding f (not normalised)
    view_weights: torch.Tensor  # (B, T, V) how much each view counts, sums to 1
    frame_weights: torch.Tensor | None  # (B, T) temporal token's attention; None if static
    view_attention: torch.Tensor | None  # (B, T, V+1, V+1) CVSA last block, slot 0 = aggregate
    prompt_attention: torch.Tensor | None  # (B, T, V, K) MTGF cross-attention over classes


class ViewFusion(nn.Module):
    """CVSA and MTGF on the views of each frame, then temporal fusion over the frames.

    Args:
        width: E. heads: attention heads. depth, temporal_depth: blocks of CVSA / temporal.
        max_views: CVSA view slots. max_frames: > 1 builds the temporal fusion (4D).
        tau: MTGF temperature. cvsa, mtgf: the ablation switches (module docstring).
        mtgf_queries: "views" (`MTGF`: the views ask the prompts) or "prompts" (`PatchMTGF`: the
            prompts ask every view's patches; forward then needs `patches`).
        fusion_gate: "scalar" gamma_f or "matrix" Gamma_f (E, E), both zero at init.
    """

    def __init__(self, width: int, heads: int, depth: int, temporal_depth: int, max_views: int,
                 max_frames: int, tau: float, cvsa: bool, mtgf: bool, mtgf_queries: str,
                 fusion_gate: str):
        super().__init__()
        if width % heads:
            raise ValueError(f"fusion heads={heads} must divide the embedding width {width}")
        self.cvsa = CVSA(width, heads, depth, max_views) if cvsa else None
        self.ln_views = None if cvsa else nn.LayerNorm(width)  # the ablation's CVSA-like end
        if mtgf_queries not in MTGF_QUERIES:
            raise ValueError(f"mtgf_queries must be one of {MTGF_QUERIES}, got {mtgf_queries!r}")
        self.needs_patches = mtgf and mtgf_queries == "prompts"
        if not mtgf:
            self.mtgf = None
        elif self.needs_patches:
            self.mtgf = PatchMTGF(width, heads, tau, max_views)
        else:
            self.mtgf = MTGF(width, heads, tau)
        self.ln_frame = nn.LayerNorm(width)  # LN(g_t + m_t)
        if fusion_gate not in FUSION_GATES:
            raise ValueError(f"fusion_gate must be one of {FUSION_GATES}, got {fusion_gate!r}")
        # gamma_f () or Gamma_f (E, E): f_t = mean_v z + gamma_f unit(LN(g + m))
        self.gate = nn.Parameter(torch.zeros(() if fusion_gate == "scalar" else (width, width)))
        self.temporal = TemporalFusion(width, heads, temporal_depth, max_frames) \
            if max_frames > 1 else None

    def forward(self, z: torch.Tensor, prompts: torch.Tensor, view_mask: torch.Tensor,
                patches: torch.Tensor | None = None) -> FusionOutput:
        """Args:
            z: (B, T, V, E) view embeddings. prompts: (K, E) or (B, K, E) class embeddings.
            view_mask: (B, V) bool, True = view present.
            patches: (B, T, V, G, E) patch tokens in the joint space; needed exactly when
                `needs_patches` (MTGF with the prompts as queries).
        Returns:
            FusionOutput.
        """
        b, t, v, e = z.shape
        n = b * t  # frames fold into the batch for the per-frame fusion
        rows = z.reshape(n, v, e)  # (B*T, V, E)
        mask = view_mask.unsqueeze(1).expand(b, t, v).reshape(n, v)  # (B*T, V)
        prompts = prompts if prompts.dim() == 2 else prompts.repeat_interleave(t, dim=0)
        view_attention = prompt_attention = None
        kept = mask.unsqueeze(-1).to(rows.dtype)  # (B*T, V, 1)
        mean_view = (rows * kept).sum(dim=1) / kept.sum(dim=1)  # (B*T, E) zero-shot CLIP's
        if self.cvsa is not None:
            cvsa = self.cvsa(rows, mask)
            h, g, view_attention = cvsa.tokens, cvsa.aggregate, cvsa.attention
            to_views = view_attention[:, 0, 1:]  # aggregation token -> views, (B*T, V)
            weights = to_views / to_views.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        else:  # ablation: g = LN(mean of the kept views), h = LN(z)
            weights = (kept / kept.sum(dim=1, keepdim=True)).squeeze(-1)  # (B*T, V)
            g = self.ln_views(mean_view)  # (B*T, E)
            h = self.ln_views(rows) * mask.unsqueeze(-1)  # (B*T, V, E), masked rows -> 0
        if (patches is not None) != self.needs_patches:
            raise ValueError("patch tokens are needed by MTGF with the prompts as queries, "
                             "and by nothing else")
        if self.mtgf is not None:
            mtgf = self.mtgf(h, prompts, mask, patches.reshape(n, v, *patches.shape[-2:])) \
                if self.needs_patches else self.mtgf(h, prompts, mask)
            h, weights, prompt_attention = mtgf.tokens, mtgf.weights, mtgf.attention
            g = g + mtgf.fused  # g_t + m_t
        fused = F.normalize(self.ln_frame(g), dim=-1)  # (B*T, E) unit: the size of one view
        gated = self.gate * fused if self.gate.dim() == 0 else fused @ self.gate.T  # (B*T, E)
        frames = (mean_view + gated).view(b, t, e)  # (B, T, E)

        frame_weights = None
        if self.temporal is not None:
            f, frame_weights = self.temporal(frames)  # (B, E), (B, T)
        elif t == 1:
            f = frames[:, 0]  # (B, E)
        else:
            raise ValueError(f"got T={t} frames but the model has no temporal fusion "
                             "(build it with max_frames > 1)")
        return FusionOutput(
            view_tokens=h.reshape(b, t, v, e), frames=frames, embedding=f,
            view_weights=weights.reshape(b, t, v), frame_weights=frame_weights,
            view_attention=None if view_attention is None else view_attention.view(b, t, v + 1,
                                                                                 v + 1),
            prompt_attention=None if prompt_attention is None else prompt_attention.view(
                b, t, v, -1))


def mean_fusion(z: torch.Tensor, view_mask: torch.Tensor) -> FusionOutput:
    """No fusion at all, CLIP's own way to pool: each frame is the mean of its kept views' z, the
    face the mean of its frames (zero-shot CLIP, `FacetConfig(fusion=False)`; no parameters).

    Args: z (B, T, V, E) unit-norm view embeddings; view_mask (B, V) bool, True = present.
    """
    b, t, v, e = z.shape
    kept = view_mask[:, None, :, None].to(z.dtype)  # (B, 1, V, 1)
    frames = (z * kept).sum(dim=2) / kept.sum(dim=2)  # (B, T, E)
    weights = (kept / kept.sum(dim=2, keepdim=True)).squeeze(-1).expand(b, t, v)  # (B, T, V)
    return FusionOutput(view_tokens=z, frames=frames, embedding=frames.mean(dim=1),
                        view_weights=weights, frame_weights=None, view_attention=None,
                        prompt_attention=None)
