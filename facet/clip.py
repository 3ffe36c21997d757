"""CLIP (Radford et al. 2021): an image tower and a text tower trained to agree.

The encoder stage of facet's pipeline (views -> embeddings); FACET-VLM builds on it.

    images (B, 3, H, W) -> CLIP.encode_image -> (B, E) --normalise--\
                                                                    cosine * exp(logit_scale)
    tokens (B', L)      -> CLIP.encode_text  -> (B', E) --normalise--/   -> logits (B, B')

- Image tower: a ViT (Dosovitskiy et al. 2021). Patches (conv1 with stride = patch) plus a
  class token, positional embeddings, pre-LN blocks (`facet.transformer`), ln_post; the class
  token @ proj is the image embedding. Images of another size work too: the positional grid is
  resized bicubically (as done to fine-tune ViTs at higher resolution). Optionally a
  convolutional stem (`stem_layers`, Xiao et al. 2021, "Early convolutions help transformers
  see better") runs before conv1: a few 3x3 convolutions of stride 2, so that small tokens still
  see their neighbourhood; OpenAI's presets have none.
- Text tower: a causal transformer over BPE tokens (`facet.tokenizer`), pooled at the
  end-of-text token: the causal mask lets position t see positions <= t only, so that vector
  summarises exactly the prompt and never the padding after it (GPT-2 style, CLIP sec. 2.4). We
  find the end token by its id (vocab_size - 1); OpenAI's `argmax` over ids relies on it being
  the largest id present, which the search does not need.
Parameter names and shapes are OpenAI's (`visual.*` for the image tower; the text tower's
modules belong to `CLIP` itself, at the top level, as in OpenAI's `model.py`), so OpenAI's
checkpoints load with `strict=True` (`facet.checkpoint.load_openai`) and a reader can diff this
file against OpenAI's `model.py`. Checkpoints describe themselves: `build_from_state_dict`
rebuilds the architecture from the weight shapes, as OpenAI's `build_model` does.

Shapes: B images, B' texts, L tokens, N patch tokens, C width, E joint embedding size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facet.transformer import Transformer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # RGB statistics of CLIP's training images
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 64  # OpenAI's towers use width // 64 heads; rebuilding from shapes assumes it
MAX_LOGIT_SCALE = 100.0  # CLIP sec. 2.5: the learned temperature is clipped at 100


@dataclass
class CLIPConfig:
    """Architecture of a CLIP model (defaults = the `tiny` preset)."""

    embed_dim: int = 128  # E, joint image-text embedding size
    image_size: int = 64  # input side in pixels the positional embedding is built for
    patch_size: int = 16  # P, ViT patch side in pixels (what one token covers, stem included)
    stem_layers: int = 0  # 3x3 stride-2 convolutions before conv1 (a conv stem); 0 = OpenAI's
    vision_width: int = 192  # C of the image tower
    vision_layers: int = 4  # blocks in the image tower
    vision_heads: int = 3  # attention heads in the image tower (head dim 64)
    context_length: int = 64  # L, maximum text tokens including start/end
    vocab_size: int = 1024  # BPE ids; the last one is <|endoftext|> (take it from the tokenizer)
    text_width: int = 128  # C of the text tower
    text_heads: int = 2  # attention heads in the text tower (head dim 64)
    text_layers: int = 3  # blocks in the text tower
    quick_gelu: bool = False  # QuickGELU MLPs, needed by OpenAI's weights


# The ViT presets are OpenAI's released models; `tiny` trains from scratch on 2 CPU cores.
PRESETS: dict[str, CLIPConfig] = {
    # columns: embed_dim, image_size, patch_size, stem_layers, vision width/layers/heads,
    #          context_length, vocab_size, text width/heads/layers
    "tiny":     CLIPConfig(128,  64, 16, 0,  192,  4,  3, 64,  1024, 128,  2,  3, quick_gelu=False),
    # tiny whose 4 x 4 tokens come from three 3x3 convolutions (24, 48, 96 channels), not one
    # 16-px patch: a convolutional stem
    "tiny-stem": CLIPConfig(128, 64, 16, 3,  192,  4,  3, 64,  1024, 128,  2,  3, quick_gelu=False),
    "vit-b-32": CLIPConfig(512, 224, 32, 0,  768, 12, 12, 77, 49408, 512,  8, 12, quick_gelu=True),
    "vit-b-16": CLIPConfig(512, 224, 16, 0,  768, 12, 12, 77, 49408, 512,  8, 12, quick_gelu=True),
    "vit-l-14": CLIPConfig(768, 224, 14, 0, 1024, 24, 16, 77, 49408, 768, 12, 12, quick_gelu=True),
}


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """Standardise RGB images in [0, 1] with CLIP's mean/std.

    Args:
        x: (..., 3, H, W) images in [0, 1], any float dtype.
    Returns:
        (..., 3, H, W) float tensor, the input CLIP expects.
    """
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, H, W) RGB images, got shape {tuple(x.shape)}")
    x = x.float()  # cast before normalising: fp16/bf16 inputs would lose precision
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


# --- the image tower ---------------------------------------------------------------------

def interpolate_positional_embedding(positional_embedding: torch.Tensor,
                                     grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT positional embedding to another patch grid.

    Args:
        positional_embedding: (1 + G*G, C), the class slot first, then a square G x G grid.
        grid: (gh, gw), the new number of patches per column and row.
    Returns:
        (1 + gh*gw, C); the class slot is kept as is. Unchanged when the grid already matches.
    """
    n, C = positional_embedding.shape
    side = round((n - 1) ** 0.5)
    if side * side != n - 1:
        raise ValueError(f"positional embedding of {n} rows is not 1 + a square grid")
    if (side, side) == tuple(grid):
        return positional_embedding
    cls, patches = positional_embedding[:1], positional_embedding[1:]
    patches = patches.reshape(1, side, side, C).permute(0, 3, 1, 2)  # (1, C, G, G)
    patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], C)  # (gh*gw, C)
    return torch.cat([cls, patches])


class VisionTransformer(nn.Module):
    """ViT image encoder with OpenAI CLIP's parameter names.

    Args:
        image_size: side of the square images the positional embedding is built for.
        patch_size: P, side of a patch (the conv stride).
        width: C.
        layers: transformer blocks.
        heads: attention heads.
        output_dim: E, the joint embedding size.
        quick_gelu: QuickGELU MLPs (OpenAI's checkpoints).
        stem_layers: 3x3 convolutions of stride 2 before conv1 (`stem.i`), each followed by a
            GELU; their channels double up to width / 2, and conv1 then patchifies their output
            with patch_size / 2**stem_layers. 0 (OpenAI's towers): conv1 alone.
    """

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, quick_gelu: bool, stem_layers: int = 0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}")
        if patch_size % 2 ** stem_layers or width % 2 ** stem_layers:
            raise ValueError(f"a stem of {stem_layers} stride-2 layers needs patch_size and width "
                             f"divisible by {2 ** stem_layers}, got {patch_size} and {width}")
        self.image_size, self.patch_size, self.output_dim = image_size, patch_size, output_dim
        grid = image_size // patch_size
        scale = width ** -0.5  # OpenAI's init scale for the class token, positions and proj
        # A conv stem (Xiao et al. 2021): width/2^k, ..., width/2 channels, each layer halving
        # the image; padding 1 keeps an even side exactly halved.
        channels = [3] + [width >> (stem_layers - i) for i in range(stem_layers)]
        self.stem = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
                                  for c_in, c_out in zip(channels, channels[1:]))
        # registration order = OpenAI's, so state_dict() lists names in the same order (an
        # empty stem has no parameters)
        patch = patch_size >> stem_layers  # conv1's patch on the stem's output
        self.conv1 = nn.Conv2d(channels[-1], width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor, return_tokens: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Encode images.

        Args:
            x: (B, 3, H, W) float, CLIP-normalised; H and W multiples of the patch size.
            return_tokens: also return the patch tokens after ln_post (for dense heads).
        Returns:
            (B, E) image embeddings, and with return_tokens (B, N, C) patch tokens.
        """
        B, _, H, W = x.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(f"image size {H}x{W} is not a multiple of patch {self.patch_size}")
        for conv in self.stem:
            x = F.gelu(conv(x))  # (B, C_i, H/2^(i+1), W/2^(i+1))
        x = self.conv1(x)  # (B, C, H/P, W/P)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        cls = self.class_embedding.to(x.dtype).expand(B, 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + N, C)
        x = x + interpolate_positional_embedding(self.positional_embedding, grid).to(x.dtype)
        x = self.transformer(self.ln_pre(x))  # (B, 1 + N, C)
        pooled = self.ln_post(x[:, 0]) @ self.proj  # (B, E): the class token summarises
        return (pooled, self.ln_post(x[:, 1:])) if return_tokens else pooled


# --- the text tower ----------------------------------------------------------------------

def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(L, L) bool mask, True = keep: query i may attend to keys j <= i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def eot_positions(tokens: torch.Tensor, eot_token: int) -> torch.Tensor:
    """Index of the first end-of-text token per row.

    Args:
        tokens: (B, L) int64 ids.
        eot_token: the end-of-text id.
    Returns:
        (B,) int64 positions.
    Raises:
        ValueError: a row has no end-of-text token (e.g. tokens from another vocabulary).
    """
    is_eot = tokens == eot_token  # (B, L)
    missing = (~is_eot.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"rows {missing[:5]} contain no end-of-text token {eot_token}; "
                         f"tokenize with the tokenizer that matches this model's vocabulary")
    return is_eot.int().argmax(dim=1)  # argmax of a 0/1 row = first True


# --- CLIP --------------------------------------------------------------------------------

class CLIP(nn.Module):
    """CLIP with OpenAI's parameter layout: the image tower is `visual`; the text tower's modules
    (`token_embedding`, `positional_embedding`, `transformer`, `ln_final`, `text_projection`)
    are CLIP's own, used by `encode_text`.

    Args:
        config: the architecture, e.g. `PRESETS["tiny"]`.
    """

    def __init__(self, config: CLIPConfig):
        super().__init__()
        c = self.config = config
        self.context_length, self.vocab_size = c.context_length, c.vocab_size
        # The text tower is built and initialised before the image tower, unlike OpenAI's: that
        # order fixes the state_dict order and the draws from the RNG of every facet checkpoint.
        self.transformer = Transformer(c.text_width, c.text_layers, c.text_heads, c.quick_gelu)
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(c.context_length, c.text_width))
        self.ln_final = nn.LayerNorm(c.text_width)
        self.text_projection = nn.Parameter(torch.empty(c.text_width, c.embed_dim))
        # CLIP's initialize_parameters (the blocks are initialised by Transformer)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=c.text_width ** -0.5)
        self.visual = VisionTransformer(c.image_size, c.patch_size, c.vision_width,
                                        c.vision_layers, c.vision_heads, c.embed_dim, c.quick_gelu,
                                        c.stem_layers)
        # logit scale = 1 / temperature of the contrastive softmax, learned in log space;
        # init 1/0.07 (CLIP sec. 2.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def eot_token(self) -> int:
        """The end-of-text id: the last one of the vocabulary."""
        return self.vocab_size - 1

    def scale(self) -> torch.Tensor:
        """The similarity scale s = exp(logit_scale), clipped at MAX_LOGIT_SCALE: the one place
        the clip happens (beyond it the parameter gets no gradient)."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images; leading dims are kept, e.g. views (B, V, 3, H, W) -> (B, V, E).

        Args:
            images: (..., 3, H, W) CLIP-normalised float images (see `normalize_images`).
        Returns:
            (..., E) image embeddings (not normalised).
        """
        lead = images.shape[:-3]
        x = self.visual(images.reshape(-1, *images.shape[-3:]))  # (prod(lead), E)
        return x.reshape(*lead, -1)  # (..., E)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed tokenised texts.

        Args:
            tokens: (B, L) int64 from `Tokenizer.tokenize`, L <= context_length, each row
                holding an end-of-text token.
        Returns:
            (B, E) text embeddings (not normalised).
        """
        B, L = tokens.shape
        if L > self.context_length:
            raise ValueError(f"{L} tokens exceed the context length {self.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # (B, L, C)
        x = self.transformer(x, attn_mask=causal_mask(L, tokens.device))  # (B, L, C)
        eot = eot_positions(tokens, self.eot_token)  # (B,)
        x = self.ln_final(x[torch.arange(B, device=tokens.device), eot])  # (B, C)
        return x @ self.text_projection  # (B, E)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled cosine similarities between every image and every text.

        Args:
            images: (B, 3, H, W) CLIP-normalised images.
            tokens: (B', L) int64 token ids.
        Returns:
            logits_per_image (B, B') and logits_per_text (B', B).
        """
        image = F.normalize(self.encode_image(images), dim=-1)  # (B, E)
        text = F.normalize(self.encode_text(tokens), dim=-1)  # (B', E)
        logits_per_image = self.scale() * image @ text.t()  # (B, B')
        return logits_per_image, logits_per_image.t()


def config_from_state_dict(state_dict: dict[str, torch.Tensor],
                           quick_gelu: bool = True) -> CLIPConfig:
    """Infer the architecture from weight shapes (heads = width // 64, as OpenAI's models).

    Args:
        state_dict: a (cleaned) CLIP state dict with OpenAI's names.
        quick_gelu: the activation is not visible in shapes; OpenAI's weights need QuickGELU.
    Returns:
        The matching CLIPConfig.
    """
    if any(k.startswith("visual.layer1") for k in state_dict):
        raise ValueError("this is a ResNet CLIP checkpoint; only ViT image towers are supported")
    needed = ("visual.conv1.weight", "visual.positional_embedding", "text_projection",
              "positional_embedding", "token_embedding.weight", "ln_final.weight")
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ValueError(f"not a CLIP ViT state dict: missing {missing}")

    def count_layers(prefix: str) -> int:
        return len({k.split(".")[len(prefix.split("."))] for k in state_dict
                    if k.startswith(prefix + ".")})

    conv = state_dict["visual.conv1.weight"]  # (C, C_stem or 3, P / 2^stem, P / 2^stem)
    stem_layers = count_layers("visual.stem")
    patch_size = conv.shape[-1] << stem_layers  # pixels per token, the stem's halvings included
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        image_size=patch_size * grid,
        patch_size=patch_size,
        stem_layers=stem_layers,
        vision_width=conv.shape[0],
        vision_layers=count_layers("visual.transformer.resblocks"),
        vision_heads=conv.shape[0] // HEAD_DIM,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_heads=text_width // HEAD_DIM,
        text_layers=count_layers("transformer.resblocks"),
        quick_gelu=quick_gelu,
    )


def build_from_state_dict(state_dict: dict[str, torch.Tensor], quick_gelu: bool = True) -> CLIP:
    """Rebuild a CLIP from its weights alone and load them (strict).

    Args:
        state_dict: OpenAI-layout weights (prefixes, extra int entries and fp16 are handled).
        quick_gelu: activation of the MLPs (True for OpenAI's weights).
    Returns:
        CLIP in fp32, eval mode.
    """
    with torch.device("meta"):  # no memory or time spent on a random init that gets replaced
        model = CLIP(config_from_state_dict(state_dict, quick_gelu))
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()
