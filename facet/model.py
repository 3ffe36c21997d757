"""FACET-VLM: CLIP image/text towers + CVSA + MTGF (+ temporal fusion) + prompt-similarity head.

Our reconstruction of FACET-VLM (DESIGN.md "Model"; the papers' equations are not public):

    views (B, T, V, 3, H, W) in [0, 1] --resize, CLIP-normalise--> CLIP.encode_image
      -> z (B, T, V, E), unit norm                                  (one embedding per view)
    prompt tokens (K, P, L) --CLIP.encode_text--> ensemble -> p (K, E), unit norm
    CVSA(z + e_v, mask)              -> view tokens h (B*T, V, E), aggregate g (B*T, E)
    MTGF(h, p, mask)                 -> u (B*T, V, E), view weights beta, m = sum_v beta_v u_v
    f_t = LN(g + m)                  -> frame embeddings (B, T, E)
    TemporalFusion (only if max_frames > 1) -> f (B, E); T = 1 gives f = f_1
    logits_k = exp(logit_scale).clamp(max=100) * cos(f, p_k)        (B, K)
    view_logits = same scale * cos(u_tv, p_k)                        (B, T, V, K), for L_cons

Interpretations and choices (also in the README's design notes):
- Class embeddings may be shared, (K, E) from tokens (K, P, L), or per sample, (B, K, E) from
  tokens (B, K, P, L) -- AffectVLM's metadata-augmented prompts ("a young female face showing
  joy") differ per sample. Per-sample prompts enter MTGF's cross-attention and the logits of
  their own sample only.
- Ablations: `cvsa=False` -> h = z and g = mean of the kept views' z; `mtgf=False` -> f = LN(g)
  and the per-view embeddings are h; `text_head=False` -> the prompts are replaced by a learned
  (K, E) matrix W, logits = s * cos(f, W_k) (a cosine linear head), which MTGF attends to in place
  of the prompts; the text tower is then frozen so that no parameter goes without a gradient.
- `view_weights` in the output: MTGF's beta; without MTGF the CVSA aggregation token's attention
  over the views (renormalised); without either, uniform over the kept views.
- Freezing sets requires_grad=False (image tower = `clip.visual.*`, text tower = the other CLIP
  parameters); `logit_scale` always trains. With a frozen text tower, encode the classes once
  (`encode_classes`) and pass `class_embeddings=` to skip the text tower every step.
- Masked views are still encoded (static shapes); the fusion ignores them.
- Image-embedding centring (`center_images`, our addition, not in the papers): a randomly
  initialised ViT maps every rendered face to nearly the same embedding (measured on the
  synthetic BU-3DFE renders: mean pairwise cos 0.999 at init), the common component swamps the
  expression and training from scratch stays at chance. A BatchNorm without affine parameters
  on the raw image embeddings (before the L2 normalisation) removes the common component; with
  it the default CPU run leaves chance within tens of steps. It uses running statistics in eval
  mode, and masked (padding) views enter the batch statistics. Turn it off with a pretrained
  CLIP, whose image embeddings must stay in the space of its text embeddings (zero-shot).
- Pixel standardisation (our addition): images are standardised with `pixel_mean` / `pixel_std`,
  buffers that start as CLIP's channel mean/std (so an untouched model normalises exactly like
  CLIP) and that `set_input_statistics` can replace by the training set's mean image per view
  slot and its global std -- AlexNet's mean-image subtraction. Renders of faces are nearly
  identical images; subtracting the mean face leaves the expression-carrying deviations, so a
  from-scratch ViT's class token no longer starts as the average of near-identical patches
  (measured: faster rise of held-out accuracy in the first 100 steps). Never with pretrained
  CLIP, whose features expect CLIP's normalisation.

Shapes: B batch, T frames, V views, K classes, P prompts per class, L tokens, E embed dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from facet import prompts as prompt_lib
from facet.checkpoint import load_openai
from facet.clip import CLIP, CLIP_MEAN, CLIP_STD, PRESETS, CLIPConfig
from facet.fusion import CVSA, MTGF, TemporalFusion, check_view_mask


@dataclass
class FacetConfig:
    """FACET-VLM architecture; every field has a CPU-friendly default."""

    clip: str = "tiny"  # CLIP preset in facet.clip.PRESETS
    image_size: int | None = None  # CLIP input side in pixels; None = the preset's (tiny: 64)
    fusion_depth: int = 1  # pre-LN blocks in CVSA
    fusion_heads: int = 4  # heads in CVSA, MTGF and temporal fusion; divides embed_dim
    temporal_depth: int = 1  # pre-LN blocks in TemporalFusion
    cvsa: bool = True  # False: mean over views (ablation)
    mtgf: bool = True  # False: f = LN(g), no text guidance (ablation)
    text_head: bool = True  # False: learned cosine head over num_classes instead of prompts
    num_classes: int = 7  # K of the learned head (text_head=False only)
    tau: float = 0.2  # temperature of MTGF's view weights over cosines in [-1, 1]
    max_views: int = 9  # view slots of CVSA (slot v = the v-th configured viewpoint)
    max_frames: int = 1  # > 1 builds TemporalFusion with that many positions (4D)
    center_images: bool = True  # standardise z over the batch (BatchNorm); False for zero-shot
    freeze_image: bool = False  # keep the image tower fixed (e.g. pretrained CLIP)
    freeze_text: bool = False  # keep the text tower fixed
    dropout: float = 0.0  # attention dropout in the fusion modules


@dataclass
class FacetOutput:
    """Everything a loss or a figure may want; fields are None when the part is switched off."""

    logits: torch.Tensor  # (B, K) scaled cosines of the face embedding to the classes
    view_logits: torch.Tensor  # (B, T, V, K) the same per view, for the consistency loss
    embedding: torch.Tensor  # (B, E) unit-norm face/sequence embedding f
    view_embeddings: torch.Tensor  # (B, T, V, E) per-view tokens that are fused (u, or h)
    image_embeddings: torch.Tensor  # (B, T, V, E) unit-norm CLIP image embeddings z
    frame_embeddings: torch.Tensor  # (B, T, E) f_t
    class_embeddings: torch.Tensor  # (K, E) or (B, K, E) unit-norm prompt embeddings p
    view_weights: torch.Tensor  # (B, T, V) how much each view counts, sums to 1
    view_mask: torch.Tensor  # (B, V) bool, True = view present
    frame_weights: torch.Tensor | None  # (B, T) temporal token's attention; None if no temporal
    view_attention: torch.Tensor | None  # (B, T, V+1, V+1) CVSA last block, slot 0 = aggregate
    prompt_attention: torch.Tensor | None  # (B, T, V, K) MTGF cross-attention over classes
    logit_scale: torch.Tensor  # scalar s = exp(logit_scale) clamped at 100


class FacetVLM(nn.Module):
    """FACET-VLM on facet's CLIP (see module docstring).

    Args:
        config: FacetConfig.
        tokenizer: facet.tokenizer.Tokenizer; its vocab_size sets the text tower's vocabulary.
            None keeps the preset's vocabulary (then pass token ids built elsewhere).
    """

    def __init__(self, config: FacetConfig = FacetConfig(), tokenizer=None):
        super().__init__()
        if config.clip not in PRESETS:
            raise ValueError(f"unknown CLIP preset {config.clip!r}; choose from {sorted(PRESETS)}")
        self.config, self.tokenizer = config, tokenizer
        self.clip = CLIP(self.clip_config())
        width = self.clip.config.embed_dim  # fusion works in the joint space: width = E
        if width % config.fusion_heads:
            raise ValueError(f"fusion_heads={config.fusion_heads} must divide embed_dim={width}")
        heads, drop = config.fusion_heads, config.dropout
        self.cvsa = CVSA(width, heads, config.fusion_depth, config.max_views, drop) \
            if config.cvsa else None
        self.mtgf = MTGF(width, heads, config.tau, drop) if config.mtgf else None
        # a from-scratch ViT maps all faces to nearly one z (module docstring): centre them
        self.image_norm = nn.BatchNorm1d(width, affine=False) if config.center_images else None
        self.ln_frame = nn.LayerNorm(width)  # f_t = LN(g_t + m_t)
        # pixel statistics per view slot; CLIP's constants until set_input_statistics
        side = self.clip.config.image_size
        unit = torch.ones(config.max_views, 3, 1, 1)
        self.register_buffer("pixel_mean", (unit * torch.tensor(CLIP_MEAN).view(3, 1, 1)).expand(
            -1, -1, side, side).clone())  # (max_views, 3, S, S)
        self.register_buffer("pixel_std", unit * torch.tensor(CLIP_STD).view(3, 1, 1))  # (max_views, 3, 1, 1)
        self.temporal = TemporalFusion(width, heads, config.temporal_depth, config.max_frames,
                                       drop) if config.max_frames > 1 else None
        self.class_head = None if config.text_head else \
            nn.Parameter(torch.randn(config.num_classes, width) * width ** -0.5)
        self._apply_freezing()

    def clip_config(self) -> CLIPConfig:
        """The CLIP architecture: the preset, with image size and tokenizer vocabulary applied."""
        base = PRESETS[self.config.clip]
        changes = {}
        if self.config.image_size is not None:
            changes["image_size"] = self.config.image_size
        if self.tokenizer is not None:
            changes["vocab_size"] = self.tokenizer.vocab_size
        return CLIPConfig(**{**base.__dict__, **changes})

    def _apply_freezing(self) -> None:
        frozen_text = self.config.freeze_text or not self.config.text_head
        for name, param in self.clip.named_parameters():
            if name == "logit_scale":
                continue
            param.requires_grad_(not (self.config.freeze_image if name.startswith("visual.")
                                      else frozen_text))

    def load_pretrained(self, path: str | Path) -> FacetVLM:
        """Replace the CLIP towers by an OpenAI checkpoint (facet.clip.load_openai).

        Build the optimizer after this call. The checkpoint's embed_dim must match the fusion
        width, and its vocabulary the tokenizer's (use Tokenizer.from_clip_vocab).
        Returns: self.
        """
        loaded = load_openai(path)
        if loaded.config.embed_dim != self.clip.config.embed_dim:
            raise ValueError(f"{path}: embed_dim {loaded.config.embed_dim} != this model's "
                             f"{self.clip.config.embed_dim}; set FacetConfig.clip to its preset")
        if self.tokenizer is not None and loaded.config.vocab_size != self.tokenizer.vocab_size:
            raise ValueError(f"{path}: vocabulary of {loaded.config.vocab_size} ids but the "
                             f"tokenizer has {self.tokenizer.vocab_size}; use CLIP's BPE vocab")
        self.clip = loaded.to(self.ln_frame.weight.device).train(self.training)
        self._apply_freezing()
        return self

    def prompt_tokens(self, classes: list[str], metadata=None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Token ids of the class prompts (facet.prompts), ready for `forward`.

        Args:
            classes: K class names. metadata: None, one dict, or B dicts (per-sample prompts).
            generator: None -> every prompt (the inference ensemble); a generator -> one random
                prompt per class (and sample), the training-time draw.
        Returns:
            LongTensor (K, P, L) or (B, K, P, L); P = 1 with a generator.
        """
        if self.tokenizer is None:
            raise ValueError("prompt_tokens needs the model to be built with a tokenizer")
        grid = prompt_lib.build_prompts(classes, metadata)
        if generator is not None:  # keep the grid layout with P = 1: (K, 1) or (B, K, 1)
            def draw(g):
                return [[text] for text in prompt_lib.sample_prompts(g, generator)]
            grid = draw(grid) if isinstance(grid[0][0], str) else [draw(g) for g in grid]
        tokens = prompt_lib.tokenize_grid(self.tokenizer, grid, self.clip.config.context_length)
        return tokens.to(self.ln_frame.weight.device)

    def encode_views(self, views: torch.Tensor) -> torch.Tensor:
        """Args: views (B, T, V, 3, H, W) in [0, 1]. Returns: unit-norm z (B, T, V, E)."""
        if views.dim() != 6 or views.shape[3] != 3:
            raise ValueError(f"views must be (B, T, V, 3, H, W), got {tuple(views.shape)}")
        if not views.is_floating_point():
            raise ValueError(f"views must be float images in [0, 1], got {views.dtype} "
                             f"(divide uint8 images by 255)")
        b, t, v, c, h, w = views.shape
        if v > self.config.max_views:
            raise ValueError(f"{v} views but the model has {self.config.max_views} view slots")
        images = self._resize(views.reshape(b * t * v, c, h, w).float())  # (B*T*V, 3, S, S)
        side = images.shape[-1]
        images = images.view(b * t, v, c, side, side)  # (B*T, V, 3, S, S): standardise per slot
        images = (images - self.pixel_mean[:v]) / self.pixel_std[:v]
        z = self.clip.encode_image(images.view(b * t * v, c, side, side)).float()  # (B*T*V, E)
        if self.image_norm is not None:
            z = self.image_norm(z)  # per-feature batch standardisation (running stats in eval)
        return F.normalize(z, dim=-1).view(b, t, v, -1)  # (B, T, V, E)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, S, S) at the CLIP input side S (antialiased bilinear)."""
        side = self.clip.config.image_size
        if images.shape[-2:] == (side, side):
            return images
        return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False,
                             antialias=True)

    @torch.no_grad()
    def set_input_statistics(self, mean: torch.Tensor, std: float) -> None:
        """Standardise inputs with a dataset's mean image per view slot and its global std.

        Args:
            mean: (V, 3, H, W) mean rendering per view slot in [0, 1] (resized to the CLIP
                input side here); slots beyond V keep their current statistics.
            std: the global standard deviation of pixels around that mean (one scale for all
                pixels keeps their relative contrasts). See `facet.torch_dataset.view_statistics`.
        """
        v = mean.shape[0]
        if v > self.config.max_views:
            raise ValueError(f"{v} view slots of statistics, the model has {self.config.max_views}")
        self.pixel_mean[:v] = self._resize(mean.float().to(self.pixel_mean.device))
        self.pixel_std[:v] = max(float(std), 1e-3)

    def encode_classes(self, class_tokens: torch.Tensor) -> torch.Tensor:
        """Prompt-ensemble class embeddings.

        Args:
            class_tokens: (K, P, L) or (B, K, P, L) int64.
        Returns:
            (K, E) or (B, K, E) unit-norm float embeddings.
        """
        if class_tokens.dim() not in (3, 4):
            raise ValueError(f"class_tokens must be (K, P, L) or (B, K, P, L), "
                             f"got {tuple(class_tokens.shape)}")
        lead, length = class_tokens.shape[:-1], class_tokens.shape[-1]
        text = self.clip.encode_text(class_tokens.reshape(-1, length))  # (prod(lead), E)
        return prompt_lib.ensemble_embeddings(text.view(*lead, -1))  # (..., K, E)

    def forward(self, views: torch.Tensor, class_tokens: torch.Tensor | None = None,
                class_embeddings: torch.Tensor | None = None,
                view_mask: torch.Tensor | None = None) -> FacetOutput:
        """Classify faces.

        Args:
            views: (B, T, V, 3, H, W) float in [0, 1]; T = 1 for a static scan.
            class_tokens: (K, P, L) or (B, K, P, L) int64 prompt tokens, or
            class_embeddings: (K, E) or (B, K, E) precomputed (e.g. with a frozen text tower).
                Exactly one of the two with text_head=True; neither with text_head=False.
            view_mask: (B, V) bool, True = view present; None = all present.
        Returns:
            FacetOutput.
        """
        b, t, v = views.shape[:3]
        p = self._class_embeddings(class_tokens, class_embeddings, b)  # (K, E) or (B, K, E)
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool, device=views.device)
        check_view_mask(view_mask, b, v)
        z = self.encode_views(views)  # (B, T, V, E)
        e = z.shape[-1]

        n = b * t  # frames fold into the batch for the per-frame fusion
        rows = z.reshape(n, v, e)  # (B*T, V, E)
        mask = view_mask.unsqueeze(1).expand(b, t, v).reshape(n, v)  # (B*T, V)
        row_p = p if p.dim() == 2 else p.repeat_interleave(t, dim=0)  # (K, E) or (B*T, K, E)
        tokens, frames, weights, view_attention, prompt_attention = \
            self._fuse_views(rows, row_p, mask)
        frames = frames.view(b, t, e)  # (B, T, E)

        frame_weights = None
        if self.temporal is not None:
            f, frame_weights = self.temporal(frames)  # (B, E), (B, T)
        elif t == 1:
            f = frames[:, 0]  # (B, E)
        else:
            raise ValueError(f"got T={t} frames but the model has no temporal fusion "
                             f"(FacetConfig.max_frames={self.config.max_frames})")

        scale = self.clip.logit_scale.exp().clamp(max=100)  # CLIP sec. 2.5, clamped at 100
        f = F.normalize(f.float(), dim=-1)
        view_embeddings = tokens.reshape(b, t, v, e)  # (B, T, V, E)
        unit_views = F.normalize(view_embeddings.float(), dim=-1)
        if p.dim() == 2:
            logits = scale * f @ p.T  # (B, K)
            view_logits = scale * unit_views @ p.T  # (B, T, V, K)
        else:
            logits = scale * torch.einsum("be,bke->bk", f, p)  # (B, K)
            view_logits = scale * torch.einsum("btve,bke->btvk", unit_views, p)  # (B, T, V, K)
        if view_attention is not None:
            view_attention = view_attention.view(b, t, v + 1, v + 1)  # (B, T, V+1, V+1)
        if prompt_attention is not None:
            prompt_attention = prompt_attention.view(b, t, v, -1)  # (B, T, V, K)
        return FacetOutput(
            logits=logits, view_logits=view_logits, embedding=f,
            view_embeddings=view_embeddings, image_embeddings=z, frame_embeddings=frames,
            class_embeddings=p, view_weights=weights.reshape(b, t, v), view_mask=view_mask,
            frame_weights=frame_weights, view_attention=view_attention,
            prompt_attention=prompt_attention, logit_scale=scale)

    def _fuse_views(self, rows: torch.Tensor, p: torch.Tensor, mask: torch.Tensor):
        """CVSA + MTGF (or their ablations) on N = B*T rows of V view embeddings.

        Returns: view tokens (N, V, E), frame embeddings f_t (N, E), view weights (N, V),
        CVSA attention (N, V+1, V+1) or None, MTGF prompt attention (N, V, K) or None.
        """
        view_attention = prompt_attention = None
        if self.cvsa is not None:
            out = self.cvsa(rows, mask)
            h, g, view_attention = out.tokens, out.aggregate, out.attention
            to_views = view_attention[:, 0, 1:]  # aggregation token -> views, (N, V)
            weights = to_views / to_views.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        else:  # ablation: g = mean of the kept views
            kept = mask.unsqueeze(-1).float()  # (N, V, 1)
            weights = (kept / kept.sum(dim=1, keepdim=True)).squeeze(-1)  # (N, V)
            h, g = rows, (weights.unsqueeze(-1) * rows).sum(dim=1)  # (N, V, E), (N, E)
        if self.mtgf is None:  # ablation: aggregate only
            return h, self.ln_frame(g), weights, view_attention, prompt_attention
        out = self.mtgf(h, p, mask)
        frames = self.ln_frame(g + out.fused)  # f_t = LN(g_t + m_t), (N, E)
        return out.tokens, frames, out.weights, view_attention, out.attention

    def _class_embeddings(self, class_tokens, class_embeddings, b: int) -> torch.Tensor:
        """Unit-norm class embeddings (K, E) or (B, K, E) from exactly one source."""
        if self.class_head is not None:
            if class_tokens is not None or class_embeddings is not None:
                raise ValueError("text_head=False uses its learned class head; pass no prompts")
            return F.normalize(self.class_head, dim=-1)  # (K, E)
        if (class_tokens is None) == (class_embeddings is None):
            raise ValueError("pass exactly one of class_tokens and class_embeddings")
        if class_tokens is not None:
            p = self.encode_classes(class_tokens)
        else:
            p = F.normalize(class_embeddings.float(), dim=-1)
        if p.dim() == 3 and p.shape[0] != b:
            raise ValueError(f"per-sample class embeddings for {p.shape[0]} samples, batch has {b}")
        return p
