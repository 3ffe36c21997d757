"""Mixed view augmentation (AffectVLM): a different random warp for every view of a face.

The training stage between the data and the model. AffectVLM augments each rendered view of a
face independently, so the fusion cannot rely on pixel-exact agreement between views. Ours, on
tensors and batched, per (sample, view): a rotation (+-max_rotation degrees), a zoom (scale
range), a shift (+-max_shift of the image half-width) and, for photometric renders, a brightness
factor -- applied so that the result is still a render of the same kind:

- Warps act on the *standardised* image. The model subtracts the training set's mean face per
  view slot (`FacetVLM.set_input_statistics`); warping a view and then subtracting the unwarped
  mean face would leave the warp's edges as large residuals (std 0.12, where the expression
  signal is 0.03). So the residual view - mean is warped, with zero padding (outside the image
  "looks like the mean face"), and the mean added back: the model sees W(view - mean) / std.
- Normal maps (`mode="normals"`) encode surface orientation in the camera frame: rotating the
  image by an angle rolls the camera, so the normals' x, y components rotate with it (the
  background, which encodes no normal, stays). No brightness change: a normal is not light.
  Depth maps likewise get no brightness change. Shaded, texture and colour renders do.
- Frames of a 4D clip share their view's draw, so the augmentation adds no frame-to-frame
  jitter the temporal model would mistake for motion.
- Mirroring (`mirror`, optional): the face mirrored left-right, x -> -x, as a whole. A flipped
  yaw -20 view is the yaw +20 view of the mirrored face, so flipping every view alone would
  break the view-slot semantics CVSA learns; `mirror_faces` flips each view *and* moves it to
  its mirror slot (yaw -> -yaw), and negates the normals' x component: exactly the views of
  the mirrored mesh (tested against rendering it). An expression keeps its label in the
  mirror, so each training face is also a new, plausible person.
- Optional cross-sample mixing (`mix_prob`, needs labels): a view slot is replaced by the same
  slot (same viewpoint) of another sample of the same class, so one "face" combines views of
  different subjects showing the same emotion.
Every draw comes from a CPU generator seeded per sample (`seeds`, e.g. from the sample's index
and the epoch): a sample gets the same augmentation whatever batch or DDP rank it lands in, so
a 2-process run trains exactly like a 1-process run, and a resumed run exactly like an
uninterrupted one. Shapes: B batch, T frames, V views, H x W images.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

PHOTOMETRIC = ("shaded", "texture", "colors")  # modes whose pixels are light: brightness applies


def _draws(seeds: torch.Tensor, v: int, max_rotation: float, scale: tuple[float, float],
           max_shift: float, brightness: float) -> tuple[torch.Tensor, ...]:
    """Per (sample, view): angle (radians), zoom, shift (x, y), gain; each (B, V) or (B, V, 2)."""
    rows = []
    for seed in seeds.tolist():
        g = torch.Generator().manual_seed(int(seed))
        rows.append(torch.rand(v, 5, generator=g))  # (V, 5) uniforms in [0, 1)
    u = torch.stack(rows)  # (B, V, 5)
    spread = lambda x, low, high: low + (high - low) * x
    angle = spread(u[..., 0], -max_rotation, max_rotation) * math.pi / 180
    zoom = spread(u[..., 1], *scale)
    shift = spread(u[..., 2:4], -max_shift, max_shift)
    gain = spread(u[..., 4], 1 - brightness, 1 + brightness)
    return angle, zoom, shift, gain


def rotate_normals(views: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the x, y components of encoded normals ((n + 1) / 2, background 1) by `angle`.

    Args:
        views: (B, T, V, 3, H, W) normal maps in [0, 1]. angle: (B, V) radians, counter-clockwise
            on the screen (the direction the image content turns under `mix_view_augment`).
    Returns:
        (B, T, V, 3, H, W); background pixels (all channels 1: no unit normal encodes that)
        unchanged.
    """
    n = views * 2 - 1  # (B, T, V, 3, H, W) normals in the camera frame, x right, y up
    cos, sin = (f(angle)[:, None, :, None, None] for f in (torch.cos, torch.sin))  # (B,1,V,1,1)
    x = cos * n[:, :, :, 0] - sin * n[:, :, :, 1]
    y = sin * n[:, :, :, 0] + cos * n[:, :, :, 1]
    rotated = (torch.stack([x, y, n[:, :, :, 2]], dim=3) + 1) / 2
    background = (views == 1).all(dim=3, keepdim=True)
    return torch.where(background, views, rotated)


def mix_view_augment(views: torch.Tensor, seeds: torch.Tensor, mode: str = "shaded",
                     mean: torch.Tensor | None = None, max_rotation: float = 10.0,
                     scale: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.05,
                     brightness: float = 0.1, labels: torch.Tensor | None = None,
                     view_mask: torch.Tensor | None = None, mix_prob: float = 0.0,
                     mirror: Sequence[int] | None = None) -> torch.Tensor:
    """Independent random rotation / zoom / shift (/ brightness) per view (module docstring).

    Args:
        views: (B, T, V, 3, H, W) float images in [0, 1].
        seeds: (B,) int64, one seed per sample; all randomness comes from them.
        mode: the render mode ("normals", "depth", or a photometric one).
        mean: (V, 3, H, W) the mean face per view slot that the model subtracts, or None
            (then the image itself is warped, with its border repeated outside).
        max_rotation: degrees. scale: zoom range, > 1 zooms in. max_shift: translation as a
            fraction of the half image size, per axis. brightness: factor drawn in
            [1 - brightness, 1 + brightness] (photometric modes only).
        labels: (B,) int64, needed when mix_prob > 0. view_mask: (B, V) bool, True = present.
        mix_prob: probability that a view slot is taken from another sample of the same class.
        mirror: the views' mirror slots (`mirror_slots`) to mirror each face with probability
            1/2, or None for no mirroring.
    Returns:
        (B, T, V, 3, H, W) augmented views in [0, 1], same dtype and device.
    """
    if views.dim() != 6 or views.shape[3] != 3:
        raise ValueError(f"mix_view_augment wants views (B, T, V, 3, H, W), "
                         f"got {tuple(views.shape)}")
    b, t, v, c, h, w = views.shape
    if seeds.shape != (b,):
        raise ValueError(f"mix_view_augment wants one seed per sample, got {tuple(seeds.shape)}")
    angle, zoom, shift, gain = _draws(seeds.cpu(), v, max_rotation, scale, max_shift, brightness)
    if mirror is not None:
        # a stream of its own (seed + 2): the warp's draws stay what they were without it
        flip = torch.tensor([bool(torch.rand(1, generator=torch.Generator().manual_seed(
            int(seed) + 2)) < 0.5) for seed in seeds.tolist()], device=views.device)  # (B,)
        views = torch.where(flip[:, None, None, None, None, None],
                            mirror_faces(views, mirror, mode), views)
    if mix_prob > 0:
        if labels is None:
            raise ValueError("mix_prob > 0 needs the labels of the batch")
        mask = torch.ones(b, v, dtype=torch.bool) if view_mask is None else view_mask
        views = _mix_across_samples(views, labels, mask, mix_prob, seeds)
    return warp_views(views, angle, zoom, shift, gain, mode, mean)


def mirror_slots(views: Sequence[tuple[float, float]]) -> tuple[int, ...]:
    """For each view slot j, the slot whose view, flipped, is slot j's view of the mirrored face:
    the slot of (-yaw, pitch). An involution: mirror_slots(v)[mirror_slots(v)[j]] == j.

    Args:
        views: V (yaw, pitch) pairs in degrees (`facet.camera.parse_views`).
    Raises:
        ValueError: a view whose mirror (-yaw, pitch) is not among the views.
    """
    slots = []
    for yaw, pitch in views:
        twins = [j for j, (y, p) in enumerate(views)
                 if math.isclose(y, -yaw, abs_tol=1e-6) and math.isclose(p, pitch, abs_tol=1e-6)]
        if not twins:
            raise ValueError(f"views {views}: the view {yaw:g},{pitch:g} has no mirror "
                             f"{-yaw:g},{pitch:g} among them; mirroring needs a left-right "
                             "symmetric set of views")
        slots.append(twins[0])
    return tuple(slots)


def mirror_faces(views: torch.Tensor, slots: Sequence[int], mode: str) -> torch.Tensor:
    """The views of the mirrored faces (x -> -x): every view flipped left-right and moved to its
    mirror slot; in normal maps the x component negated (the background kept).

    Negating x is `1 - channel 0` in the encoding (n + 1) / 2. It holds as well for the onset
    inputs (`facet.data.datasets.model_input`), which are affine in the encoded frames with
    weights that sum to 1 (x_0 + a (x_t - x_0)) or to 0 around a grey 0.5 (0.5 + a (x_t - x_0)).

    Args:
        views: (B, T, V, 3, H, W) in [0, 1]. slots: `mirror_slots` of the V views.
        mode: the render mode (only normal maps change their values).
    Returns:
        (B, T, V, 3, H, W), the same dtype.
    """
    mirrored = views[:, :, list(slots)].flip(-1)  # (B, T, V, 3, H, W): slot j <- slots[j]
    if mode != "normals":  # shading under a headlight, depth, colour: symmetric
        return mirrored
    x = 1 - mirrored[:, :, :, :1]  # (B, T, V, 1, H, W)
    background = (mirrored == 1).all(dim=3, keepdim=True)  # no unit normal encodes (1, 1, 1)
    return torch.where(background, mirrored, torch.cat([x, mirrored[:, :, :, 1:]], dim=3))


def warp_views(views: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor,
               shift: torch.Tensor, gain: torch.Tensor, mode: str = "shaded",
               mean: torch.Tensor | None = None) -> torch.Tensor:
    """The deterministic part of `mix_view_augment`: one warp per (sample, view).

    Args:
        views: (B, T, V, 3, H, W) in [0, 1]. angle: (B, V) radians, counter-clockwise on the
            screen. zoom: (B, V), > 1 zooms in. shift: (B, V, 2) in half-image units.
        gain: (B, V) brightness factors (photometric modes only). mode, mean: as there.
    Returns:
        (B, T, V, 3, H, W) in [0, 1].
    """
    b, t, v, c, h, w = views.shape
    out = views.float()
    if mode == "normals":
        out = rotate_normals(out, angle.to(out.device))
    elif mode in PHOTOMETRIC:
        out = out * gain.to(out.device)[:, None, :, None, None, None]
    if mean is not None:
        out = out - mean.to(out)  # the residual the model sees, up to its std
    # theta maps output to input coordinates in [-1, 1] (y down): turning by -angle there turns
    # the content by +angle on the screen (y up); then shrink by zoom
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # (B, V) each
    theta = torch.stack([torch.stack([cos, -sin, shift[..., 0]], dim=-1),
                         torch.stack([sin, cos, shift[..., 1]], dim=-1)], dim=-2)  # (B, V, 2, 3)
    theta = theta[:, None].expand(b, t, v, 2, 3).reshape(b * t * v, 2, 3).to(out)
    flat = out.reshape(b * t * v, c, h, w)  # (B*T*V, 3, H, W)
    grid = F.affine_grid(theta, [b * t * v, c, h, w], align_corners=False)
    warped = F.grid_sample(flat, grid, mode="bilinear", align_corners=False,
                           padding_mode="zeros" if mean is not None else "border")
    warped = warped.view(b, t, v, c, h, w)  # (B, T, V, 3, H, W)
    if mean is not None:
        warped = warped + mean.to(warped)
    return warped.clamp(0, 1).to(views.dtype)


def _mix_across_samples(views: torch.Tensor, labels: torch.Tensor, view_mask: torch.Tensor,
                        mix_prob: float, seeds: torch.Tensor) -> torch.Tensor:
    """Replace view slots by the same slot of a random same-class sample (module docstring)."""
    b, _, v = views.shape[:3]
    labels, view_mask = labels.cpu(), view_mask.cpu()
    donor = torch.arange(b).repeat(v, 1).T.clone()  # (B, V) sample each slot is taken from
    for i in range(b):
        g = torch.Generator().manual_seed(int(seeds[i]) + 1)  # not the warp's stream
        draw, ranks = torch.rand(v, generator=g) < mix_prob, torch.rand(v, b, generator=g)
        for j in range(v):
            if not (draw[j] and view_mask[i, j]):
                continue
            candidates = (labels == labels[i]) & view_mask[:, j]
            candidates[i] = False
            if candidates.any():
                donor[i, j] = torch.where(candidates, ranks[j], -1.0).argmax()
    slot = torch.arange(v).expand(b, v)  # (B, V)
    # advanced indices on dims 0 and 2, split by a slice, come first: (B, V, T, 3, H, W)
    mixed = views[donor.to(views.device), :, slot.to(views.device)]
    return mixed.transpose(1, 2)  # (B, T, V, 3, H, W)
