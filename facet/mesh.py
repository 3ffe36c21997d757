"""Triangle meshes: the `Mesh` container and the normalisation every face goes through.

The first stage of facet's pipeline (mesh -> views -> embeddings -> fusion -> prediction).
Every 3D face in facet -- a BU-3DFE scan, a BU-4DFE frame, a Bosphorus range image, a synthetic
face -- becomes one `Mesh`: vertices (N, 3) float32 in the file's units (mm for the benchmarks),
triangles (F, 3) int64 indexing them counter-clockwise seen from the front, and optional
per-vertex colours, texture coordinates with a texture image, and landmarks.

Texture coordinates come in one of two layouts, told apart by shape:
- per vertex, (N, 2): one (u, v) per vertex (Bosphorus, synthetic faces);
- per corner, (F, 3, 2): one (u, v) per triangle corner (VRML `texCoordIndex`, where a vertex on
  a texture seam has several uv's).
u grows to the right, v grows upward (OpenGL/VRML convention: v = 0 is the image's bottom row).

Files become meshes in `facet.data.meshio` (`load_mesh` dispatches on the extension); this module
knows no file format.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Mesh:
    """A triangle mesh with optional appearance and landmarks.

    Attributes:
        verts: (N, 3) float32 vertex positions.
        faces: (F, 3) int64 vertex indices per triangle, counter-clockwise = front.
        uv: None, (N, 2) per-vertex or (F, 3, 2) per-corner float32 texture coordinates.
        texture: None or (H, W, 3) uint8 texture image, row 0 at the top.
        colors: None or (N, 3) float32 per-vertex RGB in [0, 1].
        landmarks: name -> (3,) point or (M, 3) points, in the same frame as `verts`.
        source: the file the mesh came from, for error messages (None if made in memory).
    """

    verts: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    colors: np.ndarray | None = None
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self.verts = np.ascontiguousarray(self.verts, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        self.validate()

    @property
    def num_verts(self) -> int:
        return len(self.verts)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def validate(self) -> None:
        """Raise ValueError naming `source` if the arrays are inconsistent or non-finite."""
        where = self.source or "mesh"
        if self.verts.ndim != 2 or self.verts.shape[1] != 3:
            raise ValueError(f"{where}: verts must be (N, 3), got {self.verts.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"{where}: faces must be (F, 3), got {self.faces.shape}")
        if len(self.verts) == 0 or len(self.faces) == 0:
            raise ValueError(f"{where}: empty mesh ({len(self.verts)} vertices, "
                             f"{len(self.faces)} triangles)")
        if not np.isfinite(self.verts).all():
            bad = int((~np.isfinite(self.verts)).any(axis=1).sum())
            raise ValueError(f"{where}: {bad} vertices have NaN or infinite coordinates")
        lo, hi = int(self.faces.min()), int(self.faces.max())
        if lo < 0 or hi >= len(self.verts):
            raise ValueError(f"{where}: face index out of range [{lo}, {hi}] "
                             f"for {len(self.verts)} vertices")
        if self.uv is not None:
            self.uv = np.ascontiguousarray(self.uv, dtype=np.float32)
            if self.uv.shape not in ((len(self.verts), 2), (len(self.faces), 3, 2)):
                raise ValueError(f"{where}: uv must be (N, 2) or (F, 3, 2), got {self.uv.shape}")
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, dtype=np.float32)
            if self.colors.shape != (len(self.verts), 3):
                raise ValueError(f"{where}: colors must be (N, 3), got {self.colors.shape}")
        if self.texture is not None:
            texture = self.texture
            if texture.ndim != 3 or texture.shape[2] != 3 or texture.dtype != np.uint8:
                raise ValueError(f"{where}: texture must be (H, W, 3) uint8, got "
                                 f"{self.texture.shape} {self.texture.dtype}")


@dataclass(frozen=True)
class Similarity:
    """x_normalised = scale * (x - centre) @ rotation.T; `undo` maps back."""

    centre: np.ndarray  # (3,) point moved to the origin, in the input's units
    scale: float  # multiplies lengths: 1 / (largest bounding-box side after rotation)
    rotation: np.ndarray  # (3, 3) proper rotation applied after centring

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) points into the normalised frame."""
        return (self.scale * (points - self.centre) @ self.rotation.T).astype(np.float32)

    def undo(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) normalised points back to the input frame."""
        return (points / self.scale @ self.rotation + self.centre).astype(np.float32)


def _rotation_taking(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) with R @ a = b for unit vectors a, b (Rodrigues' formula)."""
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(np.dot(a, b))
    if sin < 1e-12:  # parallel or opposite: identity, or a half turn about any axis normal to a
        if cos > 0:
            return np.eye(3)
        normal = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        normal /= np.linalg.norm(normal)
        return 2 * np.outer(normal, normal) - np.eye(3)
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * cross + (1 - cos) * cross @ cross


def facing_rotation(verts: np.ndarray) -> np.ndarray:
    """A rotation (3, 3) that turns a face scan to look down +z.

    A face is a shallow surface: its least-variance principal axis is the viewing direction. The
    sign is chosen so that the central region (nose, lips) lies on the +z side of the boundary.
    The rotation is the smallest one taking that axis to +z, so the scan keeps its roll (up stays
    roughly up) -- PCA cannot tell width from height reliably on cropped faces, so we do not try.
    """
    centred = verts - verts.mean(axis=0)
    _, _, axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    depth_axis = axes[2]
    depth = centred @ depth_axis
    radius = np.linalg.norm(centred - np.outer(depth, depth_axis), axis=1)
    inner = radius < np.quantile(radius, 0.2)
    if depth[inner].mean() < depth[~inner].mean():
        depth_axis = -depth_axis
    return _rotation_taking(depth_axis, np.array([0.0, 0.0, 1.0]))


def normalize(mesh: Mesh, align: bool = False, nose_tip: str = "nose_tip"
              ) -> tuple[Mesh, Similarity]:
    """Centre a face and scale it to unit size, optionally turning it to look down +z.

    The centre is the landmark named `nose_tip` when the mesh has one, else the bounding-box
    centre. After centring (and rotating, if `align`), lengths are divided by the largest side of
    the bounding box, so the face fits a unit cube. Landmarks are transformed with the vertices.

    Args:
        mesh: the input mesh (not modified).
        align: also rotate so the face looks down +z (see `facing_rotation`).
        nose_tip: landmark name used as the centre when present.
    Returns:
        (normalised mesh, the `Similarity` that produced it; `.undo` maps points back).
    """
    verts = mesh.verts.astype(np.float64)
    rotation = facing_rotation(verts) if align else np.eye(3)
    if nose_tip in mesh.landmarks:
        centre = np.asarray(mesh.landmarks[nose_tip], dtype=np.float64).reshape(3)
    else:
        centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    rotated = (verts - centre) @ rotation.T
    extent = float((rotated.max(axis=0) - rotated.min(axis=0)).max())
    if extent <= 0:
        raise ValueError(f"{mesh.source or 'mesh'}: all vertices coincide; cannot normalise")
    transform = Similarity(centre=centre, scale=1.0 / extent, rotation=rotation)
    landmarks = {name: transform.apply(np.asarray(p, dtype=np.float64))
                 for name, p in mesh.landmarks.items()}
    return replace(mesh, verts=transform.apply(verts), landmarks=landmarks), transform
