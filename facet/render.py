"""Rendering: a face mesh -> V images, through cameras, the rasterizer and shading.

The second stage of facet's pipeline: FACET-VLM looks at a 3D scan through V rendered 2D views
(the author's lineage: yaw -20 / 0 / +20). `render_views` normalises the mesh (`facet.mesh`),
places the cameras (`facet.camera`), rasterizes (`facet.raster`) and shades the fragments, with
per-corner attributes (normals, uv, colours, depths) carried to the covered pixels by
`interpolate_covered` (`interpolate` paints them into whole images):

- `shaded`: grey albedo lit by a headlight (a directional light from the camera): Lambert diffuse
  plus a weak Blinn-Phong highlight; with the light at the eye the half vector equals the light
  direction, so the highlight is (n . l)^shininess. Smooth (area-weighted) vertex normals.
  Lighting is two-sided: both sides of an open scan are drawn (`facet.raster`).
- `texture`: the scan's texture, bilinearly sampled at perspective-correct uv, unlit (scan
  textures already contain the lighting of the capture).
- `colors`: per-vertex colours, interpolated, unlit.
- `depth`: distance along the view axis, nearest = white, farthest = black, min-max per view.
- `normals`: camera-space normals as RGB, (n + 1) / 2 (x right = red, y up = green, z toward
  the viewer = blue). What the model trains on (`TRAINING_RENDER`): three channels of surface
  orientation instead of one of light.
Pixels no face covers get `background`; a view the face covers almost nowhere (zero-area
triangles, or one outlying vertex that shrank the normalised face to a dot) is refused when
`min_foreground` asks for it, so a blank image never gets an answer. `RenderSettings` names
everything that changes the
pixels (the view cache's key); `TRAINING_RENDER` and `PICTURE_RENDER` are the two defaults,
one per purpose. `save_contact_sheet` lays views out in one PNG for people to look at.

    python render_views.py MESH              # the command line of this module

Shapes: M meshes, V views, N vertices, F faces, H x W image.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as nnf

from facet.camera import DEFAULT_DISTANCE, DEFAULT_FOV, DEFAULT_VIEWS, Cameras, parse_views, \
    view_cameras
from facet.mesh import Mesh
from facet.mesh import normalize as normalize_face
from facet.raster import Fragments, rasterize

MODES = ("shaded", "texture", "colors", "depth", "normals")
ALBEDO = 0.75  # grey of the skin in `shaded`
AMBIENT = 0.12  # light that reaches surfaces facing away from the headlight
SPECULAR = 0.12  # weight of the highlight: weak, scans are matte
SHININESS = 24  # Blinn-Phong exponent, a whole number (`_whole_power`)


def interpolate_covered(fragments: Fragments, face_attrs: torch.Tensor,
                        homogeneous: bool = False) -> torch.Tensor:
    """Interpolate per-corner attributes at the covered pixels, perspective-correct.

    Args:
        fragments: output of `rasterize`.
        face_attrs: (F, 3, D) attributes per face corner (e.g. `vertex_attrs[faces]`), or
            (V, F, 3, D) with one set per view (e.g. normals in each camera's frame).
        homogeneous: return each pixel's values times a positive number of its own (the sum of
            its b_i / w_i), skipping a division: enough for directions normalised afterwards.
    Returns:
        (D, Q) float32: row d holds attribute d at the Q pixels of `fragments.covered`.
    """
    n_views = fragments.shape[0]
    per_view = face_attrs.ndim == 4
    if face_attrs.shape[-2:-1] != (3,) or face_attrs.ndim not in (3, 4) or (
            per_view and face_attrs.shape[0] != n_views):
        raise ValueError(f"interpolate: face_attrs must be (F, 3, D) or ({n_views}, F, 3, D), "
                         f"got {tuple(face_attrs.shape)}")
    return _interpolate_corner_rows(fragments, _corner_rows(face_attrs), homogeneous)


def _corner_rows(face_attrs: torch.Tensor) -> torch.Tensor:
    """(F, 3, D) or (V, F, 3, D) corner attributes as rows: (3, D, F) or (3, D, V, F) float32,
    so that each (corner, attribute) is one contiguous row to gather from (module `facet.raster`
    explains why rows)."""
    return face_attrs.float().movedim(-2, 0).movedim(-1, 1).contiguous()


def _interpolate_corner_rows(fragments: Fragments, corners: torch.Tensor,
                             homogeneous: bool) -> torch.Tensor:
    """`interpolate_covered` for (3, D, F) or (3, D, V, F) corner rows (any strides between
    rows, each row contiguous): (D, Q)."""
    # Directions, where fewer (view, face) entries than covered pixels: combine each entry's
    # corners once. (Values keep the barycentrics: a plane through attributes that differ little
    # across a face, like depth, evaluates as a small difference of large numbers.)
    if homogeneous and fragments.faces_per_view and (
            fragments.shape[0] * fragments.faces_per_view <= len(fragments.covered)):
        return _interpolate_by_planes(fragments, corners)
    return _interpolate_by_barycentrics(fragments, corners)


def _interpolate_by_barycentrics(fragments: Fragments, corners: torch.Tensor) -> torch.Tensor:
    """`interpolate_covered` pixel by pixel: sum_i beta_i attr_i with each pixel's
    barycentrics beta and its face's corners, (3, D, F) or (3, D, V, F) rows."""
    n_faces, dim = corners.shape[-1], corners.shape[1]
    covered = fragments.covered  # (Q,)
    rows = fragments.record_face.index_select(0, fragments.covered_record)  # (Q,) their faces
    if corners.ndim == 4:  # row of (view, face) in the flattened (V*F) list
        for view, span in enumerate(fragments.view_spans):
            rows[span] += view * n_faces
    table = corners.flatten(2)  # (3, D, F or V*F)
    weights = fragments.covered_bary  # (3, Q)
    values = torch.empty(dim, len(covered), device=covered.device)  # (D, Q)
    for d in range(dim):  # sum_i bary_i * corner_i
        # One row of the table at a time: each gather yields a contiguous row, so that the
        # sums run along contiguous memory.
        c0, c1, c2 = (table[i, d].index_select(0, rows) for i in range(3))
        torch.mul(weights[0], c0, out=values[d])
        values[d].addcmul_(weights[1], c1)
        values[d].addcmul_(weights[2], c2)
    return values


def _interpolate_by_planes(fragments: Fragments, corners: torch.Tensor) -> torch.Tensor:
    """`interpolate_covered(homogeneous=True)` entry by entry: sum_i attr_i (b_i / w_i) is affine
    in the pixel's position like each b_i / w_i (`Fragments.planes`), so each (view, face) entry
    combines its corners' attributes, (3, D, F) or (3, D, V, F) rows, with its planes once, and
    a pixel evaluates D planes, where it would read 3 barycentric planes and 3 D corner values."""
    n_views, n_faces = fragments.shape[0], fragments.faces_per_view
    dim = corners.shape[1]
    planes = fragments.planes[:, 1:].view(9, n_views, n_faces)  # column 0: no face
    table = planes.new_zeros(3 * dim, n_views * n_faces + 1)  # laid out like `planes`
    for j in range(3):  # value at pixel (0, 0), step per column, step per row
        a_0, a_1, a_2 = planes[3 * j: 3 * j + 3]  # (V, F) each: corner i's b_i / w_i term
        for d in range(dim):  # corners[i, d]: (F,) or (V, F), broadcast over the views
            out = table[j * dim + d, 1:].view(n_views, n_faces)
            torch.mul(a_0, corners[0, d], out=out)
            out.addcmul_(a_1, corners[1, d]).addcmul_(a_2, corners[2, d])
    return fragments.evaluate(table)  # (D, Q)


def interpolate(fragments: Fragments, face_attrs: torch.Tensor) -> torch.Tensor:
    """`interpolate_covered` as an image: (V, H, W, D) float32, 0 where no face covers the
    pixel, stored channel-major like `Fragments.bary` (`facet.raster`)."""
    n_views, h, w = fragments.shape
    values = interpolate_covered(fragments, face_attrs)  # (D, Q)
    image = values.new_zeros(len(values), n_views * h * w)  # (D, V*H*W)
    image.index_copy_(1, fragments.covered, values)
    return image.view(-1, n_views, h, w).permute(1, 2, 3, 0)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Smooth unit normals (N, 3): the sum of the adjacent faces' area-weighted normals.

    Vertices no face uses get (0, 0, 1) rather than a 0/0.
    """
    return _vertex_normal_rows(verts, faces).t().contiguous()


def _vertex_normal_rows(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """`vertex_normals` as (3, N) rows x, y, z: computed and handed out row by row (module
    `facet.raster`: a cross product over rows of three numbers would run several times slower).
    """
    corners = _vertex_corner_rows(verts.t().contiguous(), faces)  # (3 corners, 3 xyz, F)
    edge_1, edge_2 = corners[1] - corners[0], corners[2] - corners[0]  # (3, F)
    face_normals = torch.stack([edge_1[1] * edge_2[2] - edge_1[2] * edge_2[1],
                                edge_1[2] * edge_2[0] - edge_1[0] * edge_2[2],
                                edge_1[0] * edge_2[1] - edge_1[1] * edge_2[0]])  # (3, F), |.| = 2A
    # each corner of a face adds the face's normal to its vertex
    corner_vertex = faces.t().reshape(-1)  # (3F,): corner 0 of every face, then 1, then 2
    summed = verts.new_zeros(3, len(verts)).index_add_(1, corner_vertex, face_normals.repeat(1, 3))
    length = _length(summed)  # (N,), clamped away from 0
    unused = length <= 1e-12
    normals = summed.div_(length)
    for axis, fallback in enumerate((0.0, 0.0, 1.0)):
        normals[axis].masked_fill_(unused, fallback)
    return normals


def _vertex_corner_rows(vertex_rows: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(D, N) per-vertex rows -> (3, D, F) per-corner rows (corner, attribute, face), each
    [corner, attribute] one contiguous row of F: one gather for all of them."""
    gathered = vertex_rows.index_select(1, faces.t().reshape(-1))  # (D, 3F), corner-major
    return gathered.view(len(vertex_rows), 3, -1).transpose(0, 1)


def _in_camera_frames(vectors: torch.Tensor, rows: torch.Tensor,
                      spans: list[slice]) -> torch.Tensor:
    """Rotate (3, Q) world-space vectors at the covered pixels into their views' camera frames,
    by the (V, R, 3) rows of the cameras' rotations: (R, Q)."""
    rotated = vectors.new_empty(rows.shape[1], vectors.shape[1])  # (R, Q)
    for view, span in enumerate(spans):  # one small matrix product per view
        rotated[:, span] = rows[view] @ vectors[:, span]
    return rotated


def _pixel_normals(fragments: Fragments, verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(3, Q) interpolated smooth normals at the covered pixels, world space, not unit length."""
    corners = _vertex_corner_rows(_vertex_normal_rows(verts, faces), faces)  # (3, 3, F)
    return _interpolate_corner_rows(fragments, corners, homogeneous=True)


def _camera_normals(fragments: Fragments, verts: torch.Tensor, faces: torch.Tensor,
                    cameras: Cameras, spans: list[slice]) -> torch.Tensor:
    """(3, Q) unit normals at the covered pixels in each camera's frame, flipped toward the
    camera."""
    normal = _in_camera_frames(_pixel_normals(fragments, verts, faces), cameras.view[:, :3, :3],
                               spans)  # (3, Q)
    # Two-sided: the camera looks down -z, so a visible front has n_z > 0.
    sign = torch.where(normal[2] < 0, -1.0, 1.0) / _length(normal)  # (Q,)
    return normal * sign


def _length(vector: torch.Tensor) -> torch.Tensor:
    """(Q,) Euclidean length of (3, Q) vectors, never 0 (so safe to divide by); summed row by
    row, since a reduction over a short outer dimension would not vectorise."""
    squared = torch.addcmul(torch.addcmul(vector[0] * vector[0], vector[1], vector[1]),
                            vector[2], vector[2])  # fused multiply-adds: fewer passes
    return squared.sqrt_().clamp_(min=1e-12)


def _whole_power(x: torch.Tensor, n: int) -> torch.Tensor:
    """x ** n for a whole n >= 1 by repeated squaring: a handful of multiplications, where
    torch's pow with a non-trivial exponent calls the general power function per element."""
    result = None
    while n:
        if n & 1:
            result = x if result is None else result * x
        n >>= 1
        if n:
            x = x * x
    return result


def _sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of texture (Ht, Wt, 3) uint8 at (2, Q) uv -> (3, Q) rgb in [0, 1].

    u grows to the right and v upward (v = 0 is the image's bottom row); outside [0, 1] the
    border texel repeats.
    """
    image = texture.permute(2, 0, 1)[None].float() / 255  # (1, 3, Ht, Wt)
    grid = torch.stack([uv[0] * 2 - 1, 1 - uv[1] * 2], dim=-1)  # (Q, 2); grid_sample: y down
    sampled = nnf.grid_sample(image, grid[None, None], mode="bilinear", padding_mode="border",
                              align_corners=False)  # (1, 3, 1, Q)
    return sampled[0, :, 0]


def shade(fragments: Fragments, verts: torch.Tensor, faces: torch.Tensor, cameras: Cameras,
          mode: str = "shaded", uv: torch.Tensor | None = None,
          texture: torch.Tensor | None = None, colors: torch.Tensor | None = None,
          background: float | tuple[float, float, float] = 1.0) -> torch.Tensor:
    """Colour every pixel of every view.

    Only the covered pixels are shaded (`Fragments.covered`), as (C, Q) rows of channels: a
    sum over rows runs along long contiguous memory, where a reduction over a last dimension
    of size 3 would not vectorise. They are then written into an image of the background.

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
        (V, H, W, 3) float32 in [0, 1]: a view of a channel-major (3, V, H, W) array (a grey
        picture: of one plane, shown three times).
    """
    if mode not in MODES:
        raise ValueError(f"unknown render mode {mode!r}; choose one of {MODES}")
    spans = fragments.view_spans
    if mode == "shaded":
        # n . l with the headlight along the camera's +z axis (third row of its rotation);
        # only this component of the camera-space normal is needed. Two-sided: |n . l|.
        normal = _pixel_normals(fragments, verts, faces)  # (3, Q)
        n_dot_l = _in_camera_frames(normal, cameras.view[:, 2:3, :3], spans)[0]  # (Q,)
        facing = n_dot_l.abs_().div_(_length(normal))
        # ALBEDO (AMBIENT + (1 - AMBIENT) facing) + SPECULAR facing^SHININESS, in two passes
        grey = torch.add(ALBEDO * AMBIENT, facing, alpha=ALBEDO * (1 - AMBIENT))
        grey.add_(_whole_power(facing, SHININESS), alpha=SPECULAR)
        rgb = grey[None]  # (1, Q): grey
    elif mode == "normals":
        rgb = (_camera_normals(fragments, verts, faces, cameras, spans) + 1) / 2
    elif mode == "depth":
        depth = -cameras.to_camera(verts)[..., 2]  # (V, N) distance along each view axis
        pixel_depth = interpolate_covered(fragments, depth[:, faces, None])[0]  # (Q,)
        grey = torch.empty_like(pixel_depth)
        for span in spans:  # nearest = white, farthest = black, per view
            if span.stop > span.start:
                d = pixel_depth[span]
                near, far = d.min(), d.max()
                grey[span] = 1 - (d - near) / (far - near).clamp(min=1e-6)
        rgb = grey[None]  # (1, Q): grey
    elif mode == "texture":
        if uv is None or texture is None:
            raise ValueError("render mode 'texture' needs a mesh with uv and a texture image")
        corner_uv = uv[faces] if uv.ndim == 2 else uv  # (F, 3, 2)
        rgb = _sample_texture(texture, interpolate_covered(fragments, corner_uv))
    else:
        if colors is None:
            raise ValueError("render mode 'colors' needs a mesh with vertex colours")
        rgb = interpolate_covered(fragments, colors[faces])
    return _compose(fragments, rgb.clamp(0, 1), background)


def _compose(fragments: Fragments, rgb: torch.Tensor,
             background: float | tuple[float, float, float]) -> torch.Tensor:
    """(3, Q) colours, or (1, Q) grey levels, of the covered pixels on a background:
    (V, H, W, 3), a view of a (3, V, H, W) array, channel-major."""
    n_views, h, w = fragments.shape
    fill = torch.as_tensor(background, dtype=torch.float32).expand(3).tolist()  # r, g, b
    # A grey picture on a grey background: one plane drawn and shown three times (a stride-0
    # view; whoever needs the channels apart copies them, once).
    drawn = 1 if len(rgb) == 1 and fill[0] == fill[1] == fill[2] else 3
    planes = rgb.new_empty(drawn, n_views * h * w)  # (C, V*H*W)
    for channel, plane in enumerate(planes):  # every view's pixels in one scatter per plane
        plane.fill_(fill[channel]).scatter_(0, fragments.covered, rgb[channel % len(rgb)])
    return planes.expand(3, -1).view(3, n_views, h, w).permute(1, 2, 3, 0)


@dataclass(frozen=True)
class RenderSettings:
    """How views are rendered: every field changes the pixels (and is the view cache's key)."""

    views: tuple[tuple[float, float], ...] = DEFAULT_VIEWS  # (yaw, pitch) in degrees
    image_size: int = 224  # H = W in pixels
    mode: str = "shaded"  # one of MODES
    distance: float = DEFAULT_DISTANCE  # camera distance in face sizes (facet.camera)
    fov_y: float = DEFAULT_FOV  # vertical field of view in degrees
    # sequences only (facet.data.view_cache.render_frames): > 0 renders every frame with the
    # face's motion since the first frame scaled so that the most moved frame moves this many
    # percent of the face's size (mean over vertices); 0 = the motion as scanned
    apex_motion: float = 0.0
    # sequences only: False renders every frame where the scanner saw the head, its rigid motion
    # since the first frame kept (the alignment's ablation); True aligns it to the first frame
    align_frames: bool = True

    def __post_init__(self) -> None:
        # canonical form, so that [[0, 0]] and ((0.0, 0.0),) are the same settings
        views = tuple((float(yaw), float(pitch)) for yaw, pitch in self.views)
        if not views or int(self.image_size) < 1 or self.mode not in MODES:
            raise ValueError(f"render settings need >= 1 view, image_size >= 1 and a mode in "
                             f"{MODES}; got {len(views)} views, image_size={self.image_size}, "
                             f"mode={self.mode!r}")
        object.__setattr__(self, "views", views)  # frozen dataclass: set once, here
        object.__setattr__(self, "image_size", int(self.image_size))
        if not self.apex_motion >= 0:
            raise ValueError(f"render settings need apex_motion >= 0, got {self.apex_motion}")
        if self.apex_motion and not self.align_frames:  # it would magnify the head's turn too
            raise ValueError("render settings: apex_motion magnifies the motion of frames "
                             "aligned to the first, so it needs align_frames")


# What the model sees: normal maps at 64 px (the `tiny` CLIP's input) from the three default
# views; and what people look at: grey shading at 224 px.
TRAINING_RENDER = RenderSettings(image_size=64, mode="normals")
PICTURE_RENDER = RenderSettings(image_size=224, mode="shaded")


@functools.lru_cache(maxsize=16)
def _view_cameras(views: tuple[tuple[float, float], ...], distance: float,
                  fov_y: float) -> Cameras:
    """`view_cameras`, cached: a dataset's renders ask for the same few cameras (read only),
    and making them costs more than a small render's rasterization of a view."""
    return view_cameras(views, distance=distance, fov_y=fov_y)


def render_views(mesh: Mesh, views: Sequence[tuple[float, float]] | str = DEFAULT_VIEWS,
                 image_size: int = PICTURE_RENDER.image_size, mode: str = PICTURE_RENDER.mode,
                 background: float | tuple[float, float, float] = 1.0,
                 device: torch.device | str | None = None, normalize: bool = True,
                 distance: float = DEFAULT_DISTANCE, fov_y: float = DEFAULT_FOV,
                 cull_backfaces: bool = False, min_foreground: float = 0.0) -> torch.Tensor:
    """Render a face from several (yaw, pitch) viewpoints.

    Args:
        mesh: the face; normalised first (`facet.mesh.normalize`: centred, unit size) unless
            `normalize` is False, in which case it must already be in that frame.
        views: V (yaw, pitch) pairs in degrees (`facet.camera`), or a "yaw,pitch;..." string.
        image_size: H = W of each view.
        mode: one of MODES (module docstring).
        background: colour of empty pixels, grey level or RGB in [0, 1].
        device: where to render (default: CPU); the result stays there.
        distance, fov_y: camera distance (face sizes) and vertical field of view (degrees).
        cull_backfaces: drop faces seen from behind (`facet.raster`).
        min_foreground: the fraction of its pixels the face must cover in every view (the
            pipeline asks for `MIN_FOREGROUND`); 0 renders anything.
    Returns:
        (V, 3, H, W) float32 in [0, 1].
    Raises:
        ValueError: a view below `min_foreground`, naming the mesh and the likely cause.
    """
    if isinstance(views, str):
        views = parse_views(views)
    if normalize:
        mesh, _ = normalize_face(mesh)
    device = torch.device(device) if device is not None else torch.device("cpu")
    verts = torch.from_numpy(mesh.verts).to(device)
    faces = torch.from_numpy(mesh.faces).to(device)
    cameras = _view_cameras(tuple(map(tuple, views)), distance, fov_y).to(device)
    # Rendering needs no gradients (snapped corners and pixel coverage have none), so it runs in
    # inference mode, which skips autograd's bookkeeping on each of its ~1,500 tensor operations
    # (views included): 6-8 % of a render (demo face, 5k dome; 112, 224 px; one thread). The pixels
    # are copied out at the end, an ordinary tensor that training may use.
    with torch.inference_mode():
        fragments = rasterize(cameras.transform(verts), faces, image_size, cull_backfaces)
        _check_foreground(mesh, views, fragments, min_foreground)

        def as_tensor(array: np.ndarray | None) -> torch.Tensor | None:
            return None if array is None else torch.from_numpy(
                np.require(array, requirements="CW")).to(device)

        rgb = shade(fragments, verts, faces, cameras, mode, uv=as_tensor(mesh.uv),
                    texture=as_tensor(mesh.texture), colors=as_tensor(mesh.colors),
                    background=background)  # (V, H, W, 3)
    return rgb.permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)  # (V, 3, H, W)


def _check_foreground(mesh: Mesh, views: Sequence[tuple[float, float]], fragments: Fragments,
                      min_foreground: float) -> None:
    """Refuse a render in which the face covers less than `min_foreground` of some view."""
    _, h, w = fragments.shape
    covered = torch.tensor([span.stop - span.start for span in fragments.view_spans]) / (
        h * w)  # (V,) foreground fraction
    if covered.min() < min_foreground:
        view = int(covered.argmin())
        raise ValueError(f"{mesh.source or 'mesh'}: renders to an (almost) empty image: the face "
                         f"covers {100 * float(covered[view]):.2f} % of view "
                         f"{views[view][0]:g},{views[view][1]:g} (at least "
                         f"{100 * min_foreground:g} % expected): {blank_render_cause(mesh)}")


# A normalised face fills 27-66 % of every view from yaw -90..90 and behind (the demo face,
# 16 and 64 px); 1 % is far below any real face, and far above a blank render (0 %).
MIN_FOREGROUND = 0.01


def blank_render_cause(mesh: Mesh) -> str:
    """Why a mesh renders to (almost) nothing, as far as its geometry tells."""
    corners = mesh.verts[mesh.faces].astype(np.float64)  # (F, 3 corners, 3)
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0],
                                    corners[:, 2] - corners[:, 0]), axis=1)
    if mesh.faces.shape[0] == 0 or not (areas > 0).any():
        return "its triangles all have zero area"
    full = np.ptp(mesh.verts, axis=0).max()
    core = (np.percentile(mesh.verts, 99, axis=0) - np.percentile(mesh.verts, 1, axis=0)).max()
    if core == 0 or full > 10 * core:
        return (f"a few vertices lie far outside the face (its bounding box is "
                f"{full / max(core, 1e-300):.3g} times the size of 98 % of its vertices)")
    return "most of it lies outside the cameras' view"


def render_batch(meshes: Sequence[Mesh], **kwargs) -> torch.Tensor:
    """Render several meshes with the same settings: (M, V, 3, H, W); kwargs as `render_views`."""
    if len(meshes) == 0:
        raise ValueError("render_batch: no meshes given")
    return torch.stack([render_views(mesh, **kwargs) for mesh in meshes])


def save_contact_sheet(images: torch.Tensor | np.ndarray | Sequence, path: str | Path,
                       labels: Sequence[str] | None = None, gap: int = 4,
                       column_labels: Sequence[str] | None = None) -> Path:
    """Save rows of views as one PNG: row m holds the V views of mesh m, its label at the left.

    Args:
        images: (M, V, 3, H, W) or (V, 3, H, W) floats in [0, 1], or a list of (V, 3, H, W).
        path: output PNG (folders are created).
        labels: M row labels, or None.
        gap: white pixels between tiles.
        column_labels: V labels above the columns (e.g. the views' yaw, a sequence's frames),
            or None.
    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw, ImageFont  # Pillow comes with matplotlib

    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(x) for x in images])
    images = torch.as_tensor(images).detach().float().cpu()
    if images.ndim == 4:
        images = images[None]  # (1, V, 3, H, W)
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"contact sheet: images must be (M, V, 3, H, W), "
                         f"got {tuple(images.shape)}")
    n_rows, n_cols, _, h, w = images.shape
    for name, given, count in (("labels", labels, n_rows), ("column_labels", column_labels,
                                                            n_cols)):
        if given is not None and len(given) != count:
            raise ValueError(f"contact sheet: {len(given)} {name} for {count} "
                             f"{'rows' if name == 'labels' else 'columns'}")
    font = ImageFont.load_default(size=max(11, min(h, w) // 12))  # readable at any tile size
    text_width = lambda text: int(font.getlength(str(text)))
    margin = 0 if labels is None else 12 + max(text_width(label) for label in labels)
    top = 0 if column_labels is None else int(getattr(font, "size", 11) * 1.6)
    sheet = np.full((top + n_rows * (h + gap) + gap, margin + n_cols * (w + gap) + gap, 3), 255,
                    np.uint8)
    tiles = (images.clamp(0, 1) * 255).round().byte().permute(0, 1, 3, 4, 2).numpy()  # (M,V,H,W,3)
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = top + gap + r * (h + gap), margin + gap + c * (w + gap)
            sheet[y: y + h, x: x + w] = tiles[r, c]
    picture = Image.fromarray(sheet)
    draw = ImageDraw.Draw(picture)
    for r, label in enumerate(labels or ()):
        draw.text((6, top + gap + r * (h + gap) + h // 2), str(label), fill=(0, 0, 0), font=font,
                  anchor="lm")
    for c, label in enumerate(column_labels or ()):
        draw.text((margin + gap + c * (w + gap) + w // 2, top // 2 + gap // 2), str(label),
                  fill=(0, 0, 0), font=font, anchor="mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
