"""Triangle meshes: the `Mesh` container, normalisation, and VRML/landmark writers.

Every 3D face in facet -- a BU-3DFE scan, a BU-4DFE frame, a Bosphorus range image, a synthetic
face -- becomes one `Mesh`: vertices (N, 3) float32 in the file's units (mm for the benchmarks),
triangles (F, 3) int64 indexing them counter-clockwise seen from the front, and optional
per-vertex colours, texture coordinates with a texture image, and landmarks.

Texture coordinates come in one of two layouts, told apart by shape:
- per vertex, (N, 2): one (u, v) per vertex (Bosphorus, synthetic faces);
- per corner, (F, 3, 2): one (u, v) per triangle corner (VRML `texCoordIndex`, where a vertex on
  a texture seam has several uv's).
u grows to the right, v grows upward (OpenGL/VRML convention: v = 0 is the image's bottom row).

File formats live beside this module: `facet.vrml` (.wrl), `facet.bnt` (Bosphorus range scans),
`facet.landmarks` (.bnd, .lm3); `load_mesh` (below) dispatches on the extension.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

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
            if self.texture.ndim != 3 or self.texture.shape[2] != 3 or self.texture.dtype != np.uint8:
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


def normalize(mesh: Mesh, align: bool = False, nose_tip: str = "nose_tip") -> tuple[Mesh, Similarity]:
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


# --- loading: dispatch on the file extension -------------------------------------------------

MESH_SUFFIXES = (".wrl", ".bnt", ".obj", ".ply", ".off", ".stl", ".glb")


def load_mesh(path: str | Path) -> Mesh:
    """Load a face scan and the landmarks stored beside it.

    `.wrl` is read by `facet.vrml.read_wrl`, `.bnt` by `facet.bnt.read_bnt`, the rest by trimesh
    with `process=False, maintain_order=True`, so vertices keep their file order and the frames
    of a sequence keep vertex correspondence (trimesh otherwise splits and re-orders OBJ vertices
    by texture coordinate). Landmarks beside the mesh (same stem, suffix case-insensitive):
    - `.bnd` (BU-3DFE `X_F3D.bnd`, BU-4DFE `NNN.bnd`) -> landmarks["bnd"] (M, 3), the file's xyz;
    - for `.bnt`, Bosphorus `.lm3` -> one entry per named point, plus "nose_tip" when a point
      is named "Nose tip".

    Args:
        path: the mesh file; the suffix is matched case-insensitively.
    Returns:
        Mesh (see the class) with source = str(path).
    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and the problem: unsupported suffix, empty or malformed file,
            or a malformed landmark file beside it.
    """
    # Imported here: the readers import `Mesh` from this module.
    from facet.bnt import read_bnt
    from facet.vrml import read_wrl

    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix or '(no suffix)'!r}; "
                         f"supported: {', '.join(MESH_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    if suffix == ".wrl":
        mesh = read_wrl(path)
    elif suffix == ".bnt":
        mesh = read_bnt(path)
    else:
        mesh = _load_with_trimesh(path)
    mesh.landmarks.update(_landmarks_beside(path, mesh))
    return mesh


def _load_with_trimesh(path: Path) -> Mesh:
    """OBJ/PLY/OFF/STL/GLB through trimesh, vertex order kept; a scene's geometries concatenated."""
    import warnings

    import trimesh

    try:
        with warnings.catch_warnings():  # library code is silent; real failures still raise
            warnings.simplefilter("ignore")
            loaded = trimesh.load(path, process=False, maintain_order=True)
            if isinstance(loaded, trimesh.Scene):
                # Node transforms applied, geometries concatenated, their vertices in scene order.
                loaded = loaded.to_geometry() if loaded.geometry else None
    except Exception as err:  # trimesh raises many exception types on malformed files
        raise ValueError(f"{path}: cannot read as {path.suffix} "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(loaded, trimesh.Trimesh):
        found = "nothing" if loaded is None else type(loaded).__name__
        raise ValueError(f"{path}: no triangle mesh in the file (found {found})")
    uv = texture = colors = None
    visual = loaded.visual
    has_uv = visual.kind == "texture" and getattr(visual, "uv", None) is not None
    if has_uv and len(visual.uv) == len(loaded.vertices):
        uv = visual.uv  # (N, 2); with maintain_order trimesh drops uv it cannot keep per vertex
        material = visual.material
        image = getattr(material, "image", None)
        image = getattr(material, "baseColorTexture", None) if image is None else image
        texture = None if image is None else np.asarray(image.convert("RGB"))
    elif visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors)[:, :3] / 255.0  # (N, 3) RGBA uint8 -> RGB [0, 1]
    return Mesh(verts=loaded.vertices, faces=loaded.faces, uv=uv, texture=texture, colors=colors,
                source=str(path))


def _beside(path: Path, suffix: str) -> Path | None:
    """The file with `path`'s stem and `suffix` (lower or upper case) in the same folder."""
    for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if candidate.is_file():
            return candidate
    return None


def _landmarks_beside(path: Path, mesh: Mesh) -> dict[str, np.ndarray]:
    """Landmarks from the `.bnd` (or, for `.bnt`, `.lm3`) file beside `path`; {} if none."""
    from facet.landmarks import read_bnd, read_lm3

    if path.suffix.lower() == ".bnt":
        lm3 = _beside(path, ".lm3")
        if lm3 is None:
            return {}
        points = read_lm3(lm3)
        for name, point in list(points.items()):
            if " ".join(name.lower().replace("_", " ").split()) == "nose tip":
                points["nose_tip"] = point
        return points
    bnd = _beside(path, ".bnd")
    if bnd is None:
        return {}
    indices, points = read_bnd(bnd)
    if indices.max() >= mesh.num_verts:
        raise ValueError(f"{bnd}: landmark vertex index {indices.max()} is out of range for the "
                         f"{mesh.num_verts} vertices of {path.name}")
    return {"bnd": points}
