"""CLIP (Radford et al. 2021): an image tower and a text tower trained to agree.

    images (B, 3, H, W) -> VisionTransformer -> (B, E) --normalise--\
                                                                     cosine * exp(logit_scale)
    tokens (B', L)      -> TextTransformer   -> (B', E) --normalise--/   -> logits (B, B')

The parameter names and shapes are OpenAI's (`visual.*` for the image tower, the text tower at
the top level), so official checkpoints load with `strict=True` and our `state_dict()` has the
layout of `../shared/data/clip_vit_*_state_dict.txt`. Checkpoints describe themselves: the
architecture is rebuilt from the weight shapes (`build_from_state_dict`), as OpenAI does.
"""
from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facet.text import TextTransformer
from facet.vision import VisionTransformer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # RGB statistics of CLIP's training images
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EXTRA_ENTRIES = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI's archives
HEAD_DIM = 64  # OpenAI's towers use width // 64 heads; rebuilding from shapes assumes it


@dataclass
class CLIPConfig:
    """Architecture of a CLIP model (defaults = the `tiny` preset)."""

    embed_dim: int = 128  # E, joint image-text embedding size
    image_size: int = 64  # input side in pixels the positional embedding is built for
    patch_size: int = 16  # P, ViT patch side in pixels
    vision_width: int = 192  # C of the image tower
    vision_layers: int = 4  # blocks in the image tower
    vision_heads: int = 3  # attention heads in the image tower (head dim 64)
    context_length: int = 32  # L, maximum text tokens including start/end
    vocab_size: int = 1024  # BPE ids; the last one is <|endoftext|> (take it from the tokenizer)
    text_width: int = 128  # C of the text tower
    text_heads: int = 2  # attention heads in the text tower (head dim 64)
    text_layers: int = 3  # blocks in the text tower
    quick_gelu: bool = False  # QuickGELU MLPs, needed by OpenAI's weights


# The ViT presets are OpenAI's released models; `tiny` trains from scratch on 2 CPU cores.
PRESETS: dict[str, CLIPConfig] = {
    # columns: embed_dim, image_size, patch_size, vision width/layers/heads,
    #          context_length, vocab_size, text width/heads/layers
    "tiny":     CLIPConfig(128,  64, 16,  192,  4,  3, 32,  1024, 128,  2,  3, quick_gelu=False),
    "vit-b-32": CLIPConfig(512, 224, 32,  768, 12, 12, 77, 49408, 512,  8, 12, quick_gelu=True),
    "vit-b-16": CLIPConfig(512, 224, 16,  768, 12, 12, 77, 49408, 512,  8, 12, quick_gelu=True),
    "vit-l-14": CLIPConfig(768, 224, 14, 1024, 24, 16, 77, 49408, 768, 12, 12, quick_gelu=True),
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
    x = x.float()  # cast before normalising (STYLE: numerics)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


class CLIP(TextTransformer):
    """CLIP with OpenAI's parameter layout.

    The text tower's parameters (`token_embedding`, `positional_embedding`, `transformer`,
    `ln_final`, `text_projection`) live at the top level, inherited from `TextTransformer`;
    the image tower is `visual`.

    Args:
        config: the architecture, e.g. `PRESETS["tiny"]`.
    """

    def __init__(self, config: CLIPConfig):
        c = config
        super().__init__(c.context_length, c.vocab_size, c.text_width, c.text_layers,
                         c.text_heads, c.embed_dim, c.quick_gelu)
        self.config = config
        self.visual = VisionTransformer(c.image_size, c.patch_size, c.vision_width,
                                        c.vision_layers, c.vision_heads, c.embed_dim, c.quick_gelu)
        # logit scale = 1 / temperature of the contrastive softmax, learned in log space;
        # init 1/0.07 (CLIP sec. 2.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

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
        scale = self.logit_scale.exp().clamp(max=100)  # CLIP caps the scale at 100 (sec. 2.5)
        logits_per_image = scale * image @ text.t()  # (B, B')
        return logits_per_image, logits_per_image.t()


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip `module.`/`_orig_mod.` prefixes, drop OpenAI's int entries, floats -> fp32.

    Tensors are copied, so a model built from the result never shares memory with the input.
    """
    out = {}
    for name, value in state_dict.items():
        name = re.sub(r"^((module|_orig_mod)\.)+", "", name)
        if name in EXTRA_ENTRIES:
            continue
        dtype = torch.float32 if value.is_floating_point() else value.dtype
        out[name] = value.to(dtype, copy=True)
    return out


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

    conv = state_dict["visual.conv1.weight"]  # (C, 3, P, P)
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        image_size=conv.shape[-1] * grid,
        patch_size=conv.shape[-1],
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
    state_dict = clean_state_dict(state_dict)
    with torch.device("meta"):  # no memory or time spent on a random init that gets replaced
        model = CLIP(config_from_state_dict(state_dict, quick_gelu))
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding `<name>/code/`; plain torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_openai(path: str | Path, quick_gelu: bool = True) -> CLIP:
    """Load an OpenAI CLIP checkpoint: the TorchScript archive (`ViT-B-16.pt`) or a state dict.

    Args:
        path: the file; a state dict may be wrapped as {"state_dict": ...} or {"model": ...}.
        quick_gelu: MLP activation (OpenAI's weights were trained with QuickGELU).
    Returns:
        CLIP in fp32, eval mode, architecture rebuilt from the weight shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CLIP checkpoint not found")
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # jit is deprecated but the only reader of these
                warnings.simplefilter("ignore", DeprecationWarning)
                state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: cannot read as a TorchScript archive or state dict: "
                         f"{err}") from err
    for key in ("state_dict", "model"):  # wrapped in a training checkpoint
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state_dict).__name__}")
    try:
        return build_from_state_dict(state_dict, quick_gelu)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a loadable CLIP ViT checkpoint: {err}") from err
