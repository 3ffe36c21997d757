"""FACET-VLM: CLIP towers + the fusion (CVSA, MTGF, temporal) + a prompt-similarity head.

The model stage of facet's pipeline, our reconstruction of FACET-VLM (the papers' equations are
not public). One forward pass, in four parts a reader can hold:

    views (B, T, V, 3, H, W) in [0, 1]
      -> encode_views: resize, standardise per view slot, CLIP image tower, centre, normalise
      -> z (B, T, V, E)                                                  one embedding per view
    prompt tokens (K, P, L) -> encode_classes: text tower, prompt ensemble -> p (K, E)
      (or precomputed embeddings, or the learned head W (K, E) of the `text_head=False` ablation)
    ViewFusion(z, p): CVSA -> MTGF -> f_t = mean_v z + gamma unit(LN(g + m)) -> temporal -> f
      (B, E), gamma = 0 at init: a fresh model predicts what its CLIP predicts zero-shot;
      MTGF with the prompts as queries also reads the views' patch tokens (B, T, V, G, E)
    logits_k = s * cos(f, p_k), s = exp(logit_scale) clamped at 100      (B, K)
    view_logits = s * cos(u_tv, p_k), image_logits = s * cos(z_tv, p_k)  (B, T, V, K), for L_cons

Choices (also in the README's design notes):
- Class embeddings are shared, (K, E) from tokens (K, P, L), or per sample, (B, K, E) from
  tokens (B, K, P, L): AffectVLM's metadata-augmented prompts ("a young female face showing
  joy") differ per sample and enter MTGF and the logits of their own sample only.
- Pixel standardisation (our addition): buffers `pixel_mean` / `pixel_std` start as CLIP's
  channel statistics (an untouched model normalises exactly like CLIP) and
  `set_input_statistics` can replace them by the training set's mean image per view slot and
  its global std (AlexNet's mean-image subtraction). Renders of faces are nearly identical
  images; subtracting the mean face leaves the expression-carrying deviations. Never with a
  pretrained CLIP, whose features expect CLIP's normalisation.
- Image-embedding centring (`center_images`, our addition): a randomly initialised ViT maps
  every rendered face to nearly the same embedding (mean pairwise cosine 0.999 at init), so a
  BatchNorm without affine parameters on the raw embeddings removes the common component; it
  uses running statistics in eval mode. Turn it off with a pretrained CLIP (zero-shot needs the
  raw embedding space).
- Freezing sets requires_grad=False (image tower = `clip.visual.*`, text tower = the other CLIP
  parameters); `logit_scale` always trains. With `text_head=False` the text tower is frozen, so
  that no parameter goes without a gradient (DDP).
- Masked views are still encoded (static shapes); the fusion ignores them.

Shapes: B batch, T frames, V views, K classes, P prompts per class, L tokens, E embed dim.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from facet.clip import CLIP, CLIP_MEAN, CLIP_STD, PRESETS, CLIPConfig
from facet.fusion import ViewFusion, check_view_mask, mean_fusion
from facet.prompts import ensemble_embeddings

@dataclass
class FacetConfig:
    """FACET-VLM's architecture; every field has a CPU-friendly default."""

    clip: str = "tiny"  # CLIP preset in facet.clip.PRESETS
    image_size: int | None = None  # CLIP input side in pixels; None = the preset's (tiny: 64)
    vocab_size: int | None = None  # text-tower vocabulary (the tokenizer's); None = the preset's
    fusion_depth: int = 1  # pre-LN blocks in CVSA
    temporal_depth: int = 1  # pre-LN blocks in the temporal fusion
    fusion_heads: int = 4  # heads in CVSA, MTGF and temporal fusion; divides embed_dim
    cvsa: bool = True  # False: mean over views (ablation)
    mtgf: bool = True  # False: no text-guided fusion, g alone (ablation)
    mtgf_queries: str = "views"  # MTGF: the views ask the prompts, or "prompts" ask the patches
    fusion_gate: str = "scalar"  # how the fused direction enters f_t: "scalar" or "matrix" gate
    text_head: bool = True  # False: learned cosine head over num_classes instead of prompts
    fusion: bool = True  # False: CLIP alone, zero-shot (`zero_shot_model`): no fusion module
    num_classes: int = 7  # K of the learned head (text_head=False only)
    tau: float = 0.2  # temperature of MTGF's view weights over cosines in [-1, 1]
    max_views: int = 9  # view slots of CVSA (slot v = the v-th configured viewpoint)
    max_frames: int = 1  # > 1 builds the temporal fusion with that many positions (4D)
    center_images: bool = True  # standardise z over the batch (BatchNorm); False for zero-shot
    freeze_image: bool = False  # keep the image tower fixed
    freeze_text: bool = False  # keep the text tower fixed

    def clip_config(self) -> CLIPConfig:
        """The CLIP architecture: the preset, with image size and vocabulary applied."""
        if self.clip not in PRESETS:
            raise ValueError(f"unknown CLIP preset {self.clip!r}; choose from {sorted(PRESETS)}")
        changes = {"image_size": self.image_size, "vocab_size": self.vocab_size}
        return replace(PRESETS[self.clip], **{k: v for k, v in changes.items() if v is not None})


@dataclass
class FacetOutput:
    """Everything a loss or a figure may want; fields are None when the part is switched off."""

    logits: torch.Tensor  # (B, K) scaled cosines of the face embedding to the classes
    view_logits: torch.Tensor  # (B, T, V, K) the same per fused view token u
    image_logits: torch.Tensor  # (B, T, V, K) the same per image embedding z (before fusion)
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


def encode_classes(clip: CLIP, class_tokens: torch.Tensor) -> torch.Tensor:
    """Prompt-ensemble class embeddings: tokens (K, P, L) or (B, K, P, L) int64 ->
    (K, E) or (B, K, E) unit-norm float embeddings (CLIP's ensembling, sec. 3.1.4)."""
    if class_tokens.dim() not in (3, 4):
        raise ValueError(f"class_tokens must be (K, P, L) or (B, K, P, L), "
                         f"got {tuple(class_tokens.shape)}")
    lead, length = class_tokens.shape[:-1], class_tokens.shape[-1]
    text = clip.encode_text(class_tokens.reshape(-1, length))  # (prod(lead), E)
    return ensemble_embeddings(text.view(*lead, -1))  # (..., K, E)


class FacetVLM(nn.Module):
    """FACET-VLM on facet's CLIP (see the module docstring).

    Args:
        config: FacetConfig.
        clip: the CLIP towers to build on (e.g. pretrained, `facet.checkpoint.load_openai`);
            None builds fresh ones from `config.clip_config()`. Its embed_dim sets the fusion
            width.
    """

    def __init__(self, config: FacetConfig = FacetConfig(), clip: CLIP | None = None):
        super().__init__()
        self.config = config
        self.clip = clip if clip is not None else CLIP(config.clip_config())
        width = self.clip.config.embed_dim  # fusion works in the joint space: width = E
        self.fusion = ViewFusion(width, config.fusion_heads, config.fusion_depth,
                                 config.temporal_depth, config.max_views, config.max_frames,
                                 config.tau, config.cvsa, config.mtgf,
                                 config.mtgf_queries, config.fusion_gate) if config.fusion else None
        # a from-scratch ViT maps all faces to nearly one z (module docstring): centre them
        self.image_norm = nn.BatchNorm1d(width, affine=False) if config.center_images else None
        # pixel statistics per view slot; CLIP's constants until set_input_statistics
        side = self.clip.config.image_size
        unit = torch.ones(config.max_views, 3, 1, 1)
        self.register_buffer("pixel_mean", (unit * torch.tensor(CLIP_MEAN).view(3, 1, 1)).expand(
            -1, -1, side, side).clone())  # (max_views, 3, S, S)
        self.register_buffer("pixel_std",  # (max_views, 3, 1, 1)
                             unit * torch.tensor(CLIP_STD).view(3, 1, 1))
        self.class_head = None if config.text_head else \
            nn.Parameter(torch.randn(config.num_classes, width) * width ** -0.5)
        frozen_text = config.freeze_text or not config.text_head
        for name, param in self.clip.named_parameters():
            if name != "logit_scale":
                param.requires_grad_(not (config.freeze_image if name.startswith("visual.")
                                          else frozen_text))

    def encode_views(self, views: torch.Tensor, patches: bool = False
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Args: views (B, T, V, 3, H, W) float in [0, 1]; patches: also return the patch tokens.
        Returns: unit-norm z (B, T, V, E), and with patches the image tower's G patch tokens
        (B, T, V, G, E), ln_post then proj: in the joint space, as the CLS token is."""
        if views.dim() != 6 or views.shape[3] != 3 or not views.is_floating_point():
            raise ValueError(f"views must be float (B, T, V, 3, H, W) in [0, 1] (divide uint8 "
                             f"by 255), got {views.dtype} {tuple(views.shape)}")
        b, t, v, c, h, w = views.shape
        if v > self.config.max_views:
            raise ValueError(f"{v} views but the model has {self.config.max_views} view slots")
        side = self.clip.config.image_size
        images = self.resized(views.reshape(b * t * v, c, h, w).float(), (side, side))
        images = images.view(b * t, v, c, side, side)  # (B*T, V, 3, S, S): standardise per slot
        images = (images - self.pixel_mean[:v]) / self.pixel_std[:v]
        images = images.view(b * t * v, c, side, side)
        if patches:
            z, tokens = self.clip.visual(images, return_tokens=True)  # (B*T*V, E), (B*T*V, G, C)
            tokens = (tokens @ self.clip.visual.proj).float()  # (B*T*V, G, E)
        else:
            z = self.clip.encode_image(images)  # (B*T*V, E)
        z = z.float()
        if self.image_norm is not None:
            z = self.image_norm(z)  # per-feature batch standardisation (running stats in eval)
        z = F.normalize(z, dim=-1).view(b, t, v, -1)  # (B, T, V, E)
        return (z, tokens.view(b, t, v, *tokens.shape[1:])) if patches else z

    @staticmethod
    def resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3, *size), antialiased bilinear; unchanged at that size already.
        The one resize of facet's models: views to the CLIP input side, the mean face to the
        views' side (augmentation, saliency)."""
        if images.shape[-2:] == tuple(size):
            return images
        return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False,
                             antialias=True)

    @torch.no_grad()
    def set_input_statistics(self, mean: torch.Tensor, std: float) -> None:
        """Standardise inputs with a dataset's mean image per view slot and its global std.

        Args:
            mean: (V, 3, H, W) mean rendering per view slot in [0, 1] (resized to the CLIP
                input side here); slots beyond V keep their current statistics.
            std: the global standard deviation of pixels around that mean (one scale for all
                pixels keeps their relative contrasts). See `facet.data.datasets.view_statistics`.
        """
        v = mean.shape[0]
        if v > self.config.max_views:
            raise ValueError(f"{v} view slots of statistics, the model has {self.config.max_views}")
        side = self.clip.config.image_size
        self.pixel_mean[:v] = self.resized(mean.float().to(self.pixel_mean.device), (side, side))
        self.pixel_std[:v] = max(float(std), 1e-3)

    def encode_classes(self, class_tokens: torch.Tensor) -> torch.Tensor:
        """Prompt-ensemble class embeddings (`encode_classes`)."""
        return encode_classes(self.clip, class_tokens)

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
        view_mask = torch.ones(b, v, dtype=torch.bool, device=views.device) \
            if view_mask is None else view_mask
        check_view_mask(view_mask, b, v)
        p = self._class_embeddings(class_tokens, class_embeddings, b)  # (K, E) or (B, K, E)
        patches = None  # (B, T, V, G, E) where MTGF's prompts ask the patch tokens
        if self.fusion is not None and self.fusion.needs_patches:
            z, patches = self.encode_views(views, patches=True)
        else:
            z = self.encode_views(views)  # (B, T, V, E)
        fused = mean_fusion(z, view_mask) if self.fusion is None \
            else self.fusion(z, p, view_mask, patches)
        scale = self.clip.scale()  # s = exp(logit_scale), at most 100
        f = F.normalize(fused.embedding.float(), dim=-1)  # (B, E)
        unit_views = F.normalize(fused.view_tokens.float(), dim=-1)  # (B, T, V, E)
        shared = p.dim() == 2  # (K, E) for every sample, or (B, K, E) per sample
        logits = scale * (f @ p.T if shared else torch.einsum("be,bke->bk", f, p))  # (B, K)
        view_logits = scale * (unit_views @ p.T if shared
                               else torch.einsum("btve,bke->btvk", unit_views, p))  # (B,T,V,K)
        image_logits = scale * (z @ p.T if shared
                                else torch.einsum("btve,bke->btvk", z, p))  # (B, T, V, K)
        return FacetOutput(
            logits=logits, view_logits=view_logits, image_logits=image_logits, embedding=f,
            view_embeddings=fused.view_tokens, image_embeddings=z, frame_embeddings=fused.frames,
            class_embeddings=p, view_weights=fused.view_weights, view_mask=view_mask,
            frame_weights=fused.frame_weights, view_attention=fused.view_attention,
            prompt_attention=fused.prompt_attention, logit_scale=scale)

    def _class_embeddings(self, class_tokens, class_embeddings, b: int) -> torch.Tensor:
        """Unit-norm class embeddings (K, E) or (B, K, E) from exactly one source."""
        if self.class_head is not None:
            if class_tokens is not None or class_embeddings is not None:
                raise ValueError("text_head=False uses its learned class head; pass no prompts")
            return F.normalize(self.class_head, dim=-1)  # (K, E)
        if (class_tokens is None) == (class_embeddings is None):
            raise ValueError("pass exactly one of class_tokens and class_embeddings")
        p = self.encode_classes(class_tokens) if class_tokens is not None \
            else F.normalize(class_embeddings.float(), dim=-1)
        if p.dim() == 3 and p.shape[0] != b:
            raise ValueError(f"per-sample class embeddings for {p.shape[0]} samples, batch has {b}")
        return p


def zero_shot_model(clip: CLIP, max_views: int) -> FacetVLM:
    """A CLIP alone as an expression classifier -- what pretraining alone can do: no fusion (the
    face embedding is the normalised mean of its views' image embeddings), CLIP's own pixel
    normalisation, no centring; the logits are its scaled cosines to the class prompts.

    Args: clip: the towers (e.g. `facet.checkpoint.load_openai`); max_views: view slots.
    """
    # the towers bring their own architecture: FacetConfig's CLIP fields are not read
    return FacetVLM(FacetConfig(fusion=False, center_images=False, max_views=max_views), clip)


class CentredCLIP(nn.Module):
    """A CLIP wrapped for pretraining from scratch on renders of faces, with FacetVLM's two
    from-scratch aids -- and `folded()`, a plain CLIP that computes the same thing.

    Renders of faces are nearly identical images, and a fresh ViT maps them all to nearly one
    embedding, so InfoNCE has almost nothing to pull apart (measured: the loss stalled near
    ln B). As in FacetVLM, images are standardised by the pretraining set's mean image and std,
    and the image embeddings are centred by a BatchNorm without affine parameters. Both are
    affine maps next to linear layers, so `folded()` moves them into the weights: the result
    reads CLIP-normalised images (`normalize_images`) like any OpenAI CLIP and can be saved in
    OpenAI's layout, with nothing extra to carry.

    Args:
        clip: the towers to train.
        pixel_mean: (3, S, S) mean image in [0, 1] of the pretraining set, S the CLIP input side.
        pixel_std: (3, 1, 1) or scalar std of its pixels.
    """

    def __init__(self, clip: CLIP, pixel_mean: torch.Tensor, pixel_std: torch.Tensor | float):
        super().__init__()
        self.clip, self.config = clip, clip.config
        self.register_buffer("pixel_mean", pixel_mean.float().reshape(3, *pixel_mean.shape[-2:]))
        self.register_buffer("pixel_std", torch.as_tensor(pixel_std, dtype=torch.float32)
                             .reshape(-1, 1, 1).expand(3, 1, 1).clone())
        self.centre = nn.BatchNorm1d(clip.config.embed_dim, affine=False)

    @classmethod
    def identity(cls, clip: CLIP) -> CentredCLIP:
        """The wrapper that changes nothing yet (CLIP's own statistics): continued pretraining."""
        side = clip.config.image_size
        mean = torch.tensor(CLIP_MEAN).view(3, 1, 1).expand(3, side, side)
        return cls(clip, mean, torch.tensor(CLIP_STD))

    @classmethod
    def for_tower(cls, clip: CLIP, pixel_mean: torch.Tensor, pixel_std: torch.Tensor | float
                  ) -> CentredCLIP:
        """The wrapper for fresh towers: the pretraining set's statistics, or CLIP's own where
        a convolutional stem stands before conv1 (`folded`'s docstring says why); the
        embedding centring either way."""
        if len(clip.visual.stem):
            return cls.identity(clip)
        return cls(clip, pixel_mean, pixel_std)

    def scale(self) -> torch.Tensor:
        return self.clip.scale()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1] -> (B, E) centred image embeddings."""
        return self.centre(self.clip.encode_image((images - self.pixel_mean) / self.pixel_std))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `CLIP.forward`, for images in [0, 1]: (logits_per_image, logits_per_text)."""
        image = F.normalize(self.encode_image(images), dim=-1)  # (B, E)
        text = F.normalize(self.clip.encode_text(tokens), dim=-1)  # (B', E)
        logits = self.scale() * (image @ text.t())  # (B, B')
        return logits, logits.t()

    @torch.no_grad()
    def folded(self) -> CLIP:
        """A copy of the CLIP whose image tower, on CLIP-normalised images, gives this wrapper's
        eval-mode embeddings (up to float rounding; tests/test_captions.py checks it).

        Pixels: the tower should see (x - M) / s where it is given x_c = (x - m_c) / s_c, and
        (x - M) / s = x_c * (s_c / s) + (m_c - M) / s: scale conv1's input channels by s_c / s and
        add conv1((m_c - M) / s) -- one vector per patch position -- to the patch positions.
        Embeddings: BN(y) = (y - mu) / sigma with y = LN_post(cls) @ P = (g n + b) @ P; divide
        P's columns by sigma and move b by the delta with delta @ P' = -mu / sigma (P' has full
        column rank, E <= C, so least squares solves it exactly). Changing ln_post's bias also
        shifts the patch tokens of `return_tokens` (unused by facet's models).

        A tower with a convolutional stem has a non-linearity before conv1, so a mean image
        cannot be folded into it: such a wrapper must keep CLIP's own statistics
        (`for_tower`), and only the embedding centring is folded.
        """
        clip = copy.deepcopy(self.clip).eval()
        visual = clip.visual
        clip_mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        clip_std = torch.tensor(CLIP_STD).view(3, 1, 1)
        if len(visual.stem):  # only CLIP's own statistics, whose fold changes nothing
            if not (torch.equal(self.pixel_mean, clip_mean.expand_as(self.pixel_mean))
                    and torch.equal(self.pixel_std, clip_std)):
                raise ValueError("a tower with a convolutional stem cannot fold pixel "
                                 "statistics into conv1: build its CentredCLIP with for_tower")
        else:
            weight = visual.conv1.weight  # (C, 3, P, P)
            offset = F.conv2d(((clip_mean - self.pixel_mean) / self.pixel_std)[None], weight,
                              stride=visual.patch_size)  # (1, C, G, G)
            visual.conv1.weight.mul_((clip_std / self.pixel_std).view(1, 3, 1, 1))
            visual.positional_embedding[1:] += offset.flatten(2)[0].T  # (G*G, C)
        sigma = (self.centre.running_var + self.centre.eps).sqrt()  # (E,)
        visual.proj.div_(sigma)  # (C, E) / (E,)
        target = -(self.centre.running_mean / sigma)[:, None]  # (E, 1)
        delta = torch.linalg.lstsq(visual.proj.T.double(), target.double()).solution  # (C, 1)
        visual.ln_post.bias += delta[:, 0].float()
        return clip
