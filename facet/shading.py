"""Shading: turn `Fragments` into colours (grey shaded, texture, vertex colours, depth, normals).

Our interpretation of the papers' renders (they show grey or textured faces from several views):
- `shaded`: grey albedo lit by a headlight (a directional light from the camera): Lambert diffuse
  plus a weak Blinn-Phong highlight; with the light at the eye the half vector equals the light
  direction, so the highlight is (n . l)^shininess. Smooth (area-weighted) vertex normals.
  Lighting is two-sided: a normal facing away from the camera is flipped, since both sides of
  an open scan are drawn (`facet.raster`).
- `texture`: the scan's texture, bilinearly sampled at perspective-correct uv, unlit (scan
  textures already contain the lighting of the capture).
- `colors`: per-vertex colours, interpolated, unlit.
- `depth`: distance along the view axis, nearest = white, farthest = black, min-max per view.
- `normals`: camera-space normals as RGB, (n + 1) / 2 (x right = red, y up = green, z toward
  the viewer = blue).
Pixels no face covers get `background` (a grey level or an RGB triple).

Shapes: V views, N vertices, F faces, H x W image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf

from facet.camera import Cameras
from facet.raster import Fragments, interpolate

MODES = ("shaded", "texture", "colors", "depth", "normals")
ALBEDO = 0.75  # grey of the skin in `shaded`
AMBIENT = 0.12  # light that reaches surfaces facing away from the headlight
SPECULAR = 0.12  # weight of the highlight: weak, scans are matte
SHININESS = 24.0  # Blinn-Phong exponent


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Smooth unit normals (N, 3): the sum of the adjacent faces' area-weighted normals.

    Vertices no face uses get (0, 0, 1) rather than a 0/0.
    """
    corners = verts[faces]  # (F, 3, 3)
    face_normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0],
                                      dim=-1)  # (F, 3), length = 2 * area
    normals = torch.zeros_like(verts).index_add_(0, faces.reshape(-1),
                                                 face_normals.repeat_interleave(3, dim=0))
    length = normals.norm(dim=-1, keepdim=True)
    fallback = torch.tensor([0.0, 0.0, 1.0], device=verts.device).expand_as(normals)
    return torch.where(length > 1e-12, normals / length.clamp(min=1e-12), fallback)


def _pixel_normals(fragments: Fragments, verts: torch.Tensor,
                   faces: torch.Tensor) -> list[torch.Tensor]:
    """Interpolated smooth normals in world space, not unit length: x, y, z, each (V, H, W)."""
    return list(interpolate(fragments, vertex_normals(verts, faces)[faces]).unbind(-1))


def _camera_normals(fragments: Fragments, verts: torch.Tensor, faces: torch.Tensor,
                    cameras: Cameras) -> list[torch.Tensor]:
    """Per-pixel unit normals in each camera's frame, flipped toward the camera: x, y, z, each
    (V, H, W)."""
    world = _pixel_normals(fragments, verts, faces)
    rotation = cameras.view[:, :3, :3, None, None]  # (V, 3, 3, 1, 1)
    normal = [sum(rotation[:, i, j] * world[j] for j in range(3)) for i in range(3)]
    length = _length(normal)
    # Two-sided: the camera looks down -z, so a visible front has n_z > 0.
    sign = torch.where(normal[2] < 0, -1.0, 1.0) / length
    return [n * sign for n in normal]


def _length(vector: list[torch.Tensor]) -> torch.Tensor:
    """Euclidean length of a vector given as a list of channels, never 0 (so safe to divide by)."""
    return sum(c * c for c in vector).sqrt().clamp(min=1e-12)


def _sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> list[torch.Tensor]:
    """Bilinear lookup of texture (Ht, Wt, 3) uint8 at uv (V, H, W, 2) -> r, g, b (V, H, W) each,
    in [0, 1].

    u grows to the right and v upward (v = 0 is the image's bottom row); outside [0, 1] the
    border texel repeats.
    """
    image = texture.permute(2, 0, 1)[None].float() / 255  # (1, 3, Ht, Wt)
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1)  # grid_sample: y down
    n_views, h, w, _ = uv.shape
    sampled = nnf.grid_sample(image, grid.reshape(1, n_views * h, w, 2), mode="bilinear",
                              padding_mode="border", align_corners=False)  # (1, 3, V*H, W)
    return list(sampled[0].reshape(3, n_views, h, w))


def shade(fragments: Fragments, verts: torch.Tensor, faces: torch.Tensor, cameras: Cameras,
          mode: str = "shaded", uv: torch.Tensor | None = None,
          texture: torch.Tensor | None = None, colors: torch.Tensor | None = None,
          background: float | tuple[float, float, float] = 1.0) -> torch.Tensor:
    """Colour every pixel of every view.

    Per-pixel quantities are handled as lists of (V, H, W) channels: the rasterizer stores them
    channel-major (`facet.raster.interpolate`), and a sum over a channel list runs over long
    contiguous rows, where a reduction over a last dimension of size 3 would not vectorise.

    Args:
        fragments: `rasterize` output for these cameras.
        verts: (N, 3) float32 world positions; faces: (F, 3) int64.
        cameras: the V cameras the fragments were rasterized with.
        mode: one of MODES (module docstring).
        uv: (N, 2) per-vertex or (F, 3, 2) per-corner texture coordinates (mode "texture").
        texture: (Ht, Wt, 3) uint8 image (mode "texture").
        colors: (N, 3) float32 vertex colours in [0, 1] (mode "colors").
        background: colour of pixels no face covers, a grey level or RGB in [0, 1].
    Returns:
        (V, H, W, 3) float32 in [0, 1], stored channel-major ((3, V, H, W) memory); for grey
        images the three channels share memory (`.contiguous()` before writing in place).
    """
    if mode not in MODES:
        raise ValueError(f"unknown render mode {mode!r}; choose one of {MODES}")
    covered = fragments.pix_to_face >= 0  # (V, H, W)
    if mode == "shaded":
        # n . l with the headlight along the camera's +z axis (third row of its rotation);
        # only this component of the camera-space normal is needed. Two-sided: |n . l|.
        normal = _pixel_normals(fragments, verts, faces)
        toward_camera = cameras.view[:, 2, :3, None, None]  # (V, 3, 1, 1)
        n_dot_l = sum(toward_camera[:, j] * normal[j] for j in range(3))  # (V, H, W)
        facing = n_dot_l.abs() / _length(normal)
        grey = ALBEDO * (AMBIENT + (1 - AMBIENT) * facing) + SPECULAR * facing ** SHININESS
        rgb = [grey] * 3
    elif mode == "normals":
        rgb = [(n + 1) / 2 for n in _camera_normals(fragments, verts, faces, cameras)]
    elif mode == "depth":
        depth = -cameras.to_camera(verts)[..., 2]  # (V, N) distance along each view axis
        pixel_depth = interpolate(fragments, depth[:, faces, None])[..., 0]  # (V, H, W)
        # Nearest and farthest covered depth per view (0 for a view where nothing is drawn).
        near = torch.where(covered, pixel_depth, float("inf")).amin(dim=(1, 2))
        far = torch.where(covered, pixel_depth, -float("inf")).amax(dim=(1, 2))
        near, far = near.nan_to_num(posinf=0.0), far.nan_to_num(neginf=0.0)  # (V,) each
        span = (far - near).clamp(min=1e-6)[:, None, None]
        rgb = [1 - (pixel_depth - near[:, None, None]) / span] * 3  # nearest = white
    elif mode == "texture":
        if uv is None or texture is None:
            raise ValueError("render mode 'texture' needs a mesh with uv and a texture image")
        corner_uv = uv[faces] if uv.ndim == 2 else uv  # (F, 3, 2)
        rgb = _sample_texture(texture, interpolate(fragments, corner_uv))
    else:
        if colors is None:
            raise ValueError("render mode 'colors' needs a mesh with vertex colours")
        rgb = interpolate(fragments, colors[faces]).unbind(-1)
    fill = torch.as_tensor(background, dtype=torch.float32).expand(3).tolist()
    if rgb[0] is rgb[1] is rgb[2] and fill[0] == fill[1] == fill[2]:  # grey: compose it once
        image = torch.where(covered, rgb[0].clamp(0, 1), fill[0]).expand(3, -1, -1, -1)
    else:
        image = torch.stack([torch.where(covered, c.clamp(0, 1), f) for c, f in zip(rgb, fill)])
    return image.permute(1, 2, 3, 0)  # (V, H, W, 3) view of (3, V, H, W)
