"""Files in and out: meshes in every format facet reads, their landmarks, and atomic writes.

The I/O stage under `facet.mesh`: `load_mesh(path)` dispatches on the extension and returns a
`Mesh` with the landmarks found beside the file.
- `.wrl` (BU-3DFE, BU-4DFE): VRML 2.0 through `facet.data.vrml`, its texture image read from
  beside it.
- `.bnt` (Bosphorus), little-endian: `uint16 nrows, uint16 ncols, float64 zmin, uint16 len,
  char[len] image name, uint32 n (= nrows*ncols*5), float64[n]`: five blocks of nrows*ncols
  values (all x, all y, all z, all u, all v), each stored row by row with the rows bottom-up (as
  the Bosphorus MATLAB reader flips them; we flip on reading, so grid row 0 is the top). A pixel
  whose z equals zmin is background. Each 2x2 block of measured pixels becomes two triangles.
- `.obj .ply .off .stl .glb` through trimesh with the vertex order kept, so the frames of a
  sequence keep vertex correspondence (trimesh otherwise splits and re-orders OBJ vertices by
  texture coordinate). Text is decoded here, not by trimesh (see `_read_with_trimesh`).
- Landmarks beside a mesh (same stem): BU `.bnd` (83 rows `idx x y z`, idx = 0-based vertex of
  the mesh) -> landmarks["bnd"] (M, 3); Bosphorus `.lm3` (a few header lines, then a landmark
  name line and an `x y z` line per point; files miss some, so they are read by name) -> one
  entry per name, plus "nose_tip".
Every reader raises FileNotFoundError or a ValueError that names the file and the problem.
A mesh holds at most `max_faces()` triangles and as many vertices (1 M by default, ten times the
densest benchmark scan; `FACET_MAX_FACES=N` raises it for bigger scans): a 10 M-face file would
take a minute and 9 GB to load. PLY, OFF, STL and OBJ files are checked from what they declare
(or count) before they are parsed; the others once read.
"""
from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np

from facet.atomic import write_atomic
from facet.data.vrml import format_wrl, parse_wrl
from facet.mesh import Mesh

MESH_SUFFIXES = (".wrl", ".bnt", ".obj", ".ply", ".off", ".stl", ".glb")


# --- meshes -----------------------------------------------------------------------------------

def load_mesh(path: str | Path) -> Mesh:
    """Load a face scan and the landmarks stored beside it (see the module docstring).

    Args:
        path: the mesh file; the suffix is matched case-insensitively.
    Returns:
        Mesh with source = str(path).
    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and the problem: unsupported suffix, empty or malformed file,
            or a malformed landmark file beside it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix or '(no suffix)'!r}; "
                         f"supported: {', '.join(MESH_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    if suffix in (".ply", ".off", ".stl", ".obj"):
        _check_size(path, *_declared_size(path, suffix))  # before parsing: no 9 GB detour
    mesh = {".wrl": read_wrl, ".bnt": read_bnt}.get(suffix, _read_with_trimesh)(path)
    _check_size(path, len(mesh.verts), len(mesh.faces))
    mesh.landmarks.update(_landmarks_beside(path, mesh))
    return mesh


DEFAULT_MAX_FACES = 1_000_000  # BU-3DFE scans have ~70 k triangles, BP4D frames ~100 k


def max_faces() -> int:
    """The most triangles (and vertices) a mesh may have: FACET_MAX_FACES, else 1 M. Read from
    the environment, so that the render workers of a run see what its command line set."""
    text = os.environ.get("FACET_MAX_FACES", "")
    if text and not (text.isdigit() and int(text) > 0):
        raise ValueError(f"FACET_MAX_FACES={text!r} must be a positive whole number")
    return int(text) if text else DEFAULT_MAX_FACES


def _check_size(path: Path, vertices: int, faces: int) -> None:
    limit = max_faces()
    if vertices > limit or faces > limit:
        raise ValueError(f"{path}: {faces:,} triangles and {vertices:,} vertices, more than the "
                         f"{limit:,} allowed (set FACET_MAX_FACES to a larger number for a scan "
                         "this dense, or decimate it)")


def _declared_size(path: Path, suffix: str) -> tuple[int, int]:
    """(vertices, faces) a PLY / OFF / STL file declares, or an OBJ file's v / f line counts,
    without parsing the geometry; (0, 0) where the header cannot tell (the parser will)."""
    if suffix == ".obj":  # one line per vertex and per face: count them, parse nothing
        with open(path, "rb") as f:
            data = b"\n" + f.read()
        return data.count(b"\nv "), data.count(b"\nf ")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if suffix == ".stl":
        faces = struct.unpack_from("<I", head, 80)[0] if len(head) >= 84 else -1
        if path.stat().st_size == 84 + 50 * faces:  # binary STL: 50 bytes a triangle
            return 3 * faces, faces
        return 0, 0  # ASCII STL: ~250 bytes a triangle, parsed by trimesh
    text = head.decode("latin-1")
    if suffix == ".ply":
        counts = dict(re.findall(r"^element\s+(vertex|face)\s+(\d+)", text, re.M))
        return int(counts.get("vertex", 0)), int(counts.get("face", 0))
    # OFF: a keyword ending in "OFF" (COFF, NOFF, ...), then the vertex, face and edge counts
    tokens = [token for line in text.splitlines()[:50] if not line.lstrip().startswith("#")
              for token in line.split()]
    if len(tokens) >= 3 and tokens[0].endswith("OFF") and tokens[1].isdigit() and \
            tokens[2].isdigit():
        return int(tokens[1]), int(tokens[2])
    return 0, 0


def read_wrl(path: str | Path) -> Mesh:
    """A VRML 2.0 file as a Mesh (`facet.data.vrml.parse_wrl`) with the texture named in it.

    A missing texture image is not an error: BU releases are often copied without their bitmaps,
    and the geometry is still usable. A texture that exists but cannot be decoded is an error,
    and so is a url that leaves the scan's folder ("../x.png", an absolute path).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    mesh, urls = parse_wrl(path.read_bytes(), str(path))
    for url in urls:
        name = url.removeprefix("file://")
        parts = Path(name.replace("\\", "/")).parts
        if not parts or Path(name).is_absolute() or ".." in parts or ":" in parts[0]:
            raise ValueError(f"{path}: texture url {url!r} points outside the scan's folder "
                             "(facet reads textures from beside the scan only)")
        candidate = path.parent / name
        if candidate.is_file():
            mesh.texture = _read_image(candidate)
            break
    return mesh


def save_wrl(mesh: Mesh, path: str | Path, texture_url: str | None = None) -> None:
    """Write `mesh` as a BU-style VRML 2.0 file (`facet.data.vrml.format_wrl`), atomically."""
    write_atomic(path, format_wrl(mesh, texture_url))


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; ValueError naming it when it cannot be decoded."""
    from PIL import Image  # Pillow comes with matplotlib; only needed for textures

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:  # PIL's guard: over 2 x MAX_IMAGE_PIXELS (179 M)
        raise ValueError(f"{path}: texture image too large to decode (over "
                         f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for corrupt images
        raise ValueError(f"{path}: cannot read texture image ({err})") from None


def _read_with_trimesh(path: Path) -> Mesh:
    """OBJ/PLY/OFF/STL/GLB through trimesh, vertex order kept; a scene's geometries concatenated.

    trimesh decodes text formats itself and, for bytes that are not UTF-8, reaches for an
    optional charset detector that a fresh install does not have. So facet decodes the text (UTF-8,
    else Latin-1, which maps every byte) and blanks the free-text header of a binary STL before
    trimesh sees them; any other failure inside trimesh is reported as this file's problem.
    """
    import trimesh

    suffix, data = path.suffix.lower(), path.read_bytes()
    if suffix == ".stl" and len(data) >= 84 and \
            len(data) == 84 + 50 * struct.unpack_from("<I", data, 80)[0]:
        data = b" " * 80 + data[80:]  # binary STL: the 80-byte header is free text, unused
    elif suffix in (".obj", ".off", ".stl"):
        try:
            data = data.decode("utf-8").encode()
        except UnicodeDecodeError:
            data = data.decode("latin-1").encode()  # garbage stays garbage, but decodable
    try:
        with warnings.catch_warnings():  # library code is silent; real failures still raise
            warnings.simplefilter("ignore")
            loaded = trimesh.load(io.BytesIO(data), file_type=suffix[1:], process=False,
                                  maintain_order=True,
                                  resolver=trimesh.resolvers.FilePathResolver(path.parent))
            if isinstance(loaded, trimesh.Scene):
                # Node transforms applied, geometries concatenated, their vertices in scene order.
                loaded = loaded.to_geometry() if loaded.geometry else None
    except Exception as err:  # trimesh raises many exception types on malformed files
        raise ValueError(f"{path}: no triangle mesh could be read from this {suffix} file "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        found = "nothing" if loaded is None else f"{type(loaded).__name__} without triangles"
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


# --- Bosphorus range scans (.bnt) -------------------------------------------------------------

_HEAD = struct.Struct("<HHdH")  # nrows, ncols, zmin, name length


def save_bnt(path: str | Path, x: np.ndarray, y: np.ndarray, z: np.ndarray, u: np.ndarray,
             v: np.ndarray, zmin: float, image_name: str) -> None:
    """Write a Bosphorus `.bnt` file from (R, C) grids x, y, z, u, v with row 0 at the top (the
    reader's orientation); background pixels have z == zmin; `image_name` is ASCII."""
    grids = np.stack([np.asarray(g, dtype=np.float64) for g in (x, y, z, u, v)])  # (5, R, C)
    if grids.ndim != 3:
        raise ValueError(f"{path}: x, y, z, u, v must be (rows, cols) grids, got {grids.shape[1:]}")
    _, rows, cols = grids.shape
    name = image_name.encode("ascii")
    blocks = grids[:, ::-1, :].reshape(5, -1)  # (5, R*C): rows bottom-up, each row left to right
    payload = (_HEAD.pack(rows, cols, zmin, len(name)) + name
               + struct.pack("<I", blocks.size) + blocks.astype("<f8").tobytes())
    write_atomic(path, payload)


def grid_triangles(valid: np.ndarray) -> np.ndarray:
    """Triangles over a (R, C) grid of valid pixels, as flat pixel indices (row-major).

    Each 2x2 block a b / c d (a top-left) gives (a, c, b) and (b, c, d): counter-clockwise when
    the row index grows downward and the column rightward. A triangle is kept only if its three
    pixels are valid.

    Returns:
        (F, 3) int64 flat indices into the (R*C,) pixel array.
    """
    rows, cols = valid.shape
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]  # each (R-1, C-1)
    tris = np.stack([np.stack([a, c, b], -1), np.stack([b, c, d], -1)], -2)  # (R-1, C-1, 2, 3)
    tris = tris.reshape(-1, 3)  # (2*(R-1)*(C-1), 3): block by block, row-major
    flat_valid = valid.reshape(-1)  # (R*C,)
    return tris[flat_valid[tris].all(axis=1)]


def read_bnt(path: str | Path) -> Mesh:
    """A Bosphorus `.bnt` range scan as a Mesh: verts (N, 3) mm, faces (F, 3), uv (N, 2) as
    stored. ValueError naming the file: truncated, size field not nrows*ncols*5, trailing bytes,
    no measured pixel, or no triangle. Pixels no triangle uses are dropped."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    data = path.read_bytes()
    if len(data) < _HEAD.size:
        raise ValueError(f"{where}: truncated .bnt header ({len(data)} bytes)")
    rows, cols, zmin, name_len = _HEAD.unpack_from(data)
    count_at = _HEAD.size + name_len
    if len(data) < count_at + 4:
        raise ValueError(f"{where}: truncated or not a .bnt file ({len(data)} bytes, but the "
                         f"header's image name alone is {name_len} bytes)")
    (count,) = struct.unpack_from("<I", data, count_at)
    if count != rows * cols * 5:
        raise ValueError(f"{where}: not a .bnt file: data size {count} != 5 * {rows} rows * "
                         f"{cols} columns")
    expected = count_at + 4 + 8 * count
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise ValueError(f"{where}: {problem}: {len(data)} bytes, the header implies {expected}")
    blocks = np.frombuffer(data, dtype="<f8", offset=count_at + 4).reshape(5, rows, cols)
    grids = blocks[:, ::-1, :]  # (5, R, C): stored bottom-up, flipped so row 0 is the top
    x, y, z, u, v = grids
    valid = z != zmin
    if not valid.any():
        raise ValueError(f"{where}: no measured pixel (every z equals zmin = {zmin})")
    faces = grid_triangles(valid)
    if len(faces) == 0:
        raise ValueError(f"{where}: no 2x2 block of measured pixels to triangulate")
    used = np.zeros(rows * cols, bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1  # (R*C,) pixel -> vertex index, valid where used
    verts = np.stack([x, y, z], -1).reshape(-1, 3)[used]  # (N, 3)
    uv = np.stack([u, v], -1).reshape(-1, 2)[used]  # (N, 2)
    return Mesh(verts=verts, faces=new_index[faces], uv=uv, source=where)

def check_mesh_file(path: Path) -> str | None:
    """Cheap sanity check of a mesh file from its size and first bytes.

    Returns:
        None if the file looks usable, else the reason it is not (empty, not VRML, a truncated
        `.bnt`); full parsing happens when the mesh is loaded.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    suffix = path.suffix.lower()
    if suffix == ".wrl" and not head.lstrip().startswith(b"#VRML"):
        return "not a VRML file (no '#VRML' header)"
    if suffix == ".bnt":  # header: uint16 rows, cols, f64 zmin, uint16 len, name, uint32 n
        if len(head) < _HEAD.size:
            return f"truncated .bnt header ({size} bytes)"
        rows, cols, _, name_len = _HEAD.unpack_from(head)
        start = _HEAD.size + name_len
        if len(head) < start + 4:
            return "truncated .bnt header"
        (count,) = struct.unpack_from("<I", head, start)
        if count != rows * cols * 5:
            return f"corrupt .bnt header: {count} values for a {rows}x{cols} grid (expected x5)"
        if size < start + 4 + 8 * count:
            return f"truncated .bnt: {size} bytes, header implies {start + 4 + 8 * count}"
    return None


# --- landmark files (.bnd, .lm3) -----------------------------------------------------------

def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text landmark file ({err.reason})") from None


def _xyz(fields: list[str]) -> np.ndarray | None:
    """(3,) float64 if `fields` are exactly three finite numbers, else None."""
    if len(fields) != 3:
        return None
    try:
        point = np.array([float(f) for f in fields])
    except ValueError:
        return None
    return point if np.isfinite(point).all() else None


def read_bnd(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """BU-3DFE/BU-4DFE landmarks: (vertex indices (M,) int64, points (M, 3) float32).

    Rows `idx x y z`, blank lines ignored; ValueError naming the file and line for a row that is
    not a non-negative integer index and three finite numbers, or a file without rows.
    """
    indices, points = [], []
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        point = _xyz(fields[1:])
        if len(fields) != 4 or point is None or not fields[0].isdecimal():
            raise ValueError(f"{path}: line {number}: expected 'index x y z' with a non-negative "
                             f"integer index and finite numbers, got {line.strip()[:60]!r}")
        indices.append(int(fields[0]))
        points.append(point)
    if not points:
        raise ValueError(f"{path}: no landmark rows")
    return np.array(indices, dtype=np.int64), np.array(points, dtype=np.float32)


def save_bnd(indices: np.ndarray, points: np.ndarray, path: str | Path) -> None:
    """Write BU-3DFE landmarks: one line `idx x y z` per point (idx = vertex index)."""
    indices, points = np.asarray(indices), np.asarray(points, dtype=np.float64)
    text = "".join(f"{int(i)}\t{x:.6f}\t{y:.6f}\t{z:.6f}\n"
                   for i, (x, y, z) in zip(indices, points))
    write_atomic(path, text)


def read_lm3(path: str | Path) -> dict[str, np.ndarray]:
    """Bosphorus named 3D landmarks: name as written ("Nose tip") -> (3,) float32 point.

    The header is every line before the first name that is followed by a coordinate line; then
    names and `x y z` lines alternate (blank lines ignored). ValueError naming the file and line:
    no landmark, a name without coordinates, a malformed coordinate line, or a name given twice.
    """
    rows = [(n, line.strip()) for n, line in enumerate(_read_lines(path), start=1) if line.strip()]
    first = next((i for i in range(len(rows) - 1)
                  if _xyz(rows[i][1].split()) is None and _xyz(rows[i + 1][1].split()) is not None),
                 None)
    if first is None:
        raise ValueError(f"{path}: no landmark (a name line followed by an 'x y z' line)")
    points: dict[str, np.ndarray] = {}
    for i in range(first, len(rows), 2):
        name_line, name = rows[i]
        point = _xyz(rows[i + 1][1].split()) if i + 1 < len(rows) else None
        if point is None:
            raise ValueError(f"{path}: line {name_line}: landmark {name!r} is not followed by an "
                             f"'x y z' line of three finite numbers")
        if name in points:
            raise ValueError(f"{path}: line {name_line}: landmark {name!r} appears twice")
        points[name] = point.astype(np.float32)
    return points


def save_lm3(points: dict[str, np.ndarray], path: str | Path) -> None:
    """Write Bosphorus-style named landmarks: a 3-line header, then name / `x y z` pairs."""
    lines = ["#Landmark3D File", f"{len(points)} landmarks:", "labels and coordinates:"]
    for name, point in points.items():
        x, y, z = np.asarray(point, dtype=np.float64).reshape(3)
        lines += [name, f"{x:.6f} {y:.6f} {z:.6f}"]
    write_atomic(path, "\n".join(lines) + "\n")
