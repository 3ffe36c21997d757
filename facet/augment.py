"""Mixed view augmentation (AffectVLM): a different random warp for every view of a face.

AffectVLM augments each rendered view of a face independently, so the fusion cannot rely on
pixel-exact agreement between views. Our implementation, on tensors and batched:

- per (sample, view): a random rotation (+-max_rotation degrees), zoom (scale range), shift
  (+-max_shift of the image half-width) and brightness factor, applied with one
  `affine_grid` + `grid_sample` call over all B * V views. Frames of a 4D clip share their
  view's draw, so the augmentation does not add frame-to-frame jitter the temporal model would
  mistake for motion. Out-of-image samples repeat the border ("border" padding), which is the
  uniform render background, instead of inventing black corners.
- no horizontal flip: a flipped yaw -20 view looks like a yaw +20 view of the mirrored face, so
  flipping single views breaks the view-slot semantics CVSA's slot embeddings learn (and a
  consistent flip of the whole face would also have to reverse the view order and view mask).
- optional cross-sample mixing (`mix_prob`, needs `labels`): with that probability a view slot of
  a sample is replaced by the same slot (same viewpoint) of another sample of the same class, so
  one "face" combines views of different subjects showing the same emotion. Views are only taken
  from donors whose view is present (`view_mask`).

Everything random is drawn from the given torch.Generator on the CPU: same seed, same output,
on any device. Shapes: B batch, T frames, V views, H x W images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _mix_across_samples(views: torch.Tensor, labels: torch.Tensor, view_mask: torch.Tensor,
                        mix_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Replace view slots by the same slot of a random same-class sample (module docstring)."""
    b, _, v = views.shape[:3]
    labels, view_mask = labels.cpu(), view_mask.cpu()
    donor = torch.arange(b).repeat(v, 1).T.clone()  # (B, V) sample each slot is taken from
    draw = torch.rand(b, v, generator=generator) < mix_prob  # (B, V)
    ranks = torch.rand(b, v, b, generator=generator)  # random order of candidate donors
    for i in range(b):
        for j in range(v):
            if not (draw[i, j] and view_mask[i, j]):
                continue
            candidates = (labels == labels[i]) & view_mask[:, j]
            candidates[i] = False
            if candidates.any():
                donor[i, j] = torch.where(candidates, ranks[i, j], -1.0).argmax()
    slot = torch.arange(v).expand(b, v)  # (B, V)
    # advanced indices on dims 0 and 2, split by a slice, come first: (B, V, T, 3, H, W)
    mixed = views[donor.to(views.device), :, slot.to(views.device)]
    return mixed.transpose(1, 2)  # (B, T, V, 3, H, W)


def mix_view_augment(views: torch.Tensor, generator: torch.Generator,
                     max_rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
                     max_shift: float = 0.05, brightness: float = 0.1,
                     labels: torch.Tensor | None = None, view_mask: torch.Tensor | None = None,
                     mix_prob: float = 0.0) -> torch.Tensor:
    """Independent random rotation / zoom / shift / brightness per view, optional view mixing.

    Args:
        views: (B, T, V, 3, H, W) float images in [0, 1].
        generator: CPU torch.Generator; all randomness comes from it.
        max_rotation: degrees, rotation drawn in [-max_rotation, max_rotation].
        scale: zoom range; > 1 zooms in.
        max_shift: translation as a fraction of the half image size, per axis.
        brightness: factor drawn in [1 - brightness, 1 + brightness]; result clamped to [0, 1].
        labels: (B,) int64, needed when mix_prob > 0.
        view_mask: (B, V) bool, True = view present; None = all present.
        mix_prob: probability that a view slot is taken from another sample of the same class.
    Returns:
        (B, T, V, 3, H, W) augmented views, same dtype and device.
    """
    if views.dim() != 6 or views.shape[3] != 3:
        raise ValueError(f"mix_view_augment wants views (B, T, V, 3, H, W), "
                         f"got {tuple(views.shape)}")
    b, t, v, c, h, w = views.shape
    if mix_prob > 0:
        if labels is None:
            raise ValueError("mix_prob > 0 needs the labels of the batch")
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool)
        views = _mix_across_samples(views, labels, view_mask, mix_prob, generator)

    n = b * v  # one draw per (sample, view)
    angle = _uniform(n, -max_rotation, max_rotation, generator) * math.pi / 180
    zoom = _uniform(n, scale[0], scale[1], generator)
    shift = _uniform(2 * n, -max_shift, max_shift, generator).view(n, 2)
    gain = _uniform(n, 1 - brightness, 1 + brightness, generator)

    # theta maps output to input coordinates in [-1, 1]: rotate by angle, then shrink by zoom
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], dim=1),
                         torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1)  # (B*V, 2, 3)
    theta = theta.view(b, 1, v, 2, 3).expand(b, t, v, 2, 3).reshape(b * t * v, 2, 3)
    theta = theta.to(device=views.device, dtype=torch.float32)

    flat = views.reshape(b * t * v, c, h, w).float()  # (B*T*V, 3, H, W)
    grid = F.affine_grid(theta, [b * t * v, c, h, w], align_corners=False)
    warped = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    gain = gain.view(b, 1, v).expand(b, t, v).reshape(-1, 1, 1, 1).to(views.device)
    out = (warped * gain).clamp(0, 1)
    return out.view(b, t, v, c, h, w).to(views.dtype)  # (B, T, V, 3, H, W)
