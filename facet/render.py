"""Multiview rendering of a face mesh: cameras + rasterizer + shading, and contact sheets.

FACET-VLM looks at a 3D scan through V rendered 2D views (the author's lineage: yaw -20 / 0 /
+20 at 224 x 224); `render_views` produces them for one mesh, `render_batch` for several.
Also importable as `facet.raster.render_views` / `facet.raster.render_batch`.

Shapes: M meshes, V views, H x W image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from facet.camera import DEFAULT_DISTANCE, DEFAULT_FOV, DEFAULT_VIEWS, parse_views, view_cameras
from facet.mesh import Mesh
from facet.mesh import normalize as normalize_face
from facet.raster import rasterize
from facet.shading import shade

__all__ = ["render_views", "render_batch", "save_contact_sheet", "parse_views"]


def render_views(mesh: Mesh, views: Sequence[tuple[float, float]] = DEFAULT_VIEWS,
                 image_size: int = 224, mode: str = "shaded",
                 background: float | tuple[float, float, float] = 1.0,
                 device: torch.device | str | None = None, normalize: bool = True,
                 distance: float = DEFAULT_DISTANCE, fov_y: float = DEFAULT_FOV,
                 cull_backfaces: bool = False) -> torch.Tensor:
    """Render a face from several (yaw, pitch) viewpoints.

    Args:
        mesh: the face; normalised first (`facet.mesh.normalize`: centred, unit size) unless
            `normalize` is False, in which case it must already be in that frame.
        views: V (yaw, pitch) pairs in degrees (`facet.camera`), or a "yaw,pitch;..." string.
        image_size: H = W of each view.
        mode: "shaded", "texture", "colors", "depth" or "normals" (`facet.shading`).
        background: colour of empty pixels, grey level or RGB in [0, 1].
        device: where to render (default: CPU); the result stays there.
        distance, fov_y: camera distance (face sizes) and vertical field of view (degrees).
        cull_backfaces: drop faces seen from behind (`facet.raster`).
    Returns:
        (V, 3, H, W) float32 in [0, 1].
    """
    if isinstance(views, str):
        views = parse_views(views)
    if normalize:
        mesh, _ = normalize_face(mesh)
    device = torch.device(device) if device is not None else torch.device("cpu")
    verts = torch.from_numpy(mesh.verts).to(device)
    faces = torch.from_numpy(mesh.faces).to(device)
    cameras = view_cameras(views, distance=distance, fov_y=fov_y).to(device)
    fragments = rasterize(cameras.transform(verts), faces, image_size, cull_backfaces)

    def as_tensor(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(np.ascontiguousarray(array)).to(device)

    rgb = shade(fragments, verts, faces, cameras, mode, uv=as_tensor(mesh.uv),
                texture=as_tensor(mesh.texture), colors=as_tensor(mesh.colors),
                background=background)  # (V, H, W, 3)
    return rgb.permute(0, 3, 1, 2).contiguous()  # (V, 3, H, W)


def render_batch(meshes: Sequence[Mesh], **kwargs) -> torch.Tensor:
    """Render several meshes with the same settings: (M, V, 3, H, W); kwargs as `render_views`."""
    if len(meshes) == 0:
        raise ValueError("render_batch: no meshes given")
    return torch.stack([render_views(mesh, **kwargs) for mesh in meshes])


def save_contact_sheet(images: torch.Tensor | np.ndarray | Sequence, path: str | Path,
                       labels: Sequence[str] | None = None, gap: int = 4) -> Path:
    """Save rows of views as one PNG: row m holds the V views of mesh m, its label at the left.

    Args:
        images: (M, V, 3, H, W) or (V, 3, H, W) floats in [0, 1], or a list of (V, 3, H, W).
        path: output PNG (folders are created).
        labels: M row labels, or None.
        gap: white pixels between tiles.
    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw  # Pillow comes with matplotlib

    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(x) for x in images])
    images = torch.as_tensor(images).detach().float().cpu()
    if images.ndim == 4:
        images = images[None]  # (1, V, 3, H, W)
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"contact sheet: images must be (M, V, 3, H, W), "
                         f"got {tuple(images.shape)}")
    n_rows, n_cols, _, h, w = images.shape
    margin = 0 if labels is None else 8 + 7 * max(len(label) for label in labels)
    sheet = np.full((n_rows * (h + gap) + gap, margin + n_cols * (w + gap) + gap, 3), 255, np.uint8)
    tiles = (images.clamp(0, 1) * 255).round().byte().permute(0, 1, 3, 4, 2).numpy()  # (M,V,H,W,3)
    for r in range(n_rows):
        for c in range(n_cols):
            top, left = gap + r * (h + gap), margin + gap + c * (w + gap)
            sheet[top: top + h, left: left + w] = tiles[r, c]
    picture = Image.fromarray(sheet)
    if labels is not None:
        draw = ImageDraw.Draw(picture)
        for r, label in enumerate(labels):
            draw.text((4, gap + r * (h + gap) + h // 2 - 5), str(label), fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def demo_main() -> str:
    """`python -m facet.raster MESH OUT.png`: render a mesh from 5 yaws, shaded and normals.

    Returns the line the command prints (library code stays silent; `__main__` prints).
    """
    import sys

    from facet.meshio import load_mesh

    if len(sys.argv) != 3:
        sys.exit("usage: python -m facet.raster MESH OUT.png")
    mesh = load_mesh(sys.argv[1])
    views = [(-40, 0), (-20, 0), (0, 0), (20, 0), (40, 0)]
    rows = [render_views(mesh, views, image_size=224, mode=mode) for mode in ("shaded", "normals")]
    path = save_contact_sheet(torch.stack(rows), sys.argv[2], labels=["shaded", "normals"])
    return f"{mesh.num_faces} triangles, {len(views)} views -> {path}"
