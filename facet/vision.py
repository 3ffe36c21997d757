"""CLIP's image tower: a Vision Transformer (Dosovitskiy et al. 2021) as in OpenAI's CLIP.

    image (B, 3, H, W) --conv1 (stride = patch)--> N = (H/P)(W/P) patch tokens of width C
    [class_embedding; patches] + positional_embedding -> ln_pre -> transformer -> ln_post
    class token (B, C) @ proj (C, E) -> image embedding (B, E)

Parameter names follow OpenAI's `VisionTransformer` (`visual.*` in a CLIP checkpoint). Images
of another size than the one the model was built for work too: the positional embedding grid is
resized bicubically to the new patch grid (as done to fine-tune ViTs at higher resolution).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facet.transformer import Transformer


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
    """

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, quick_gelu: bool = False):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}")
        self.image_size, self.patch_size, self.output_dim = image_size, patch_size, output_dim
        grid = image_size // patch_size
        scale = width ** -0.5  # OpenAI's init scale for the class token, positions and proj
        # registration order = OpenAI's, so state_dict() lists names in the same order
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
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
        x = self.conv1(x)  # (B, C, H/P, W/P)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        cls = self.class_embedding.to(x.dtype).expand(B, 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + N, C)
        x = x + interpolate_positional_embedding(self.positional_embedding, grid).to(x.dtype)
        x = self.transformer(self.ln_pre(x))  # (B, 1 + N, C)
        pooled = self.ln_post(x[:, 0]) @ self.proj  # (B, E): the class token summarises
        return (pooled, self.ln_post(x[:, 1:])) if return_tokens else pooled
