"""VRML 2.0 (`.wrl`) meshes as BU-3DFE and BU-4DFE ship them: reading and writing.

Reads every `IndexedFaceSet` of a file (see FORMATS.md): `coord Coordinate { point [...] }`,
`coordIndex [...]` with -1 terminators (n-gons fan-triangulated), optional `texCoord` /
`texCoordIndex` (per-corner uv, (F, 3, 2)) or `texCoord` alone (per-vertex uv, (N, 2)), optional
per-vertex `color Color { color [...] }`, and an `ImageTexture { url "..." }` resolved next to the
file. Several IndexedFaceSets are concatenated into one mesh, indices offset.

The syntax (comments, DEF/USE, number lists converted by numpy) lives in `facet.vrml_syntax`;
this module turns its IndexedFaceSet nodes into a `Mesh`. Deliberate limits (BU files need none):
`Transform` fields are not applied, `PROTO`/`EXTERNPROTO`/`ROUTE` are skipped, per-face or indexed
colours are dropped, and a mesh has one texture (the first `ImageTexture` found).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facet.fileio import write_atomic
from facet.mesh import Mesh
from facet.vrml_syntax import Node, face_sets, parse_vrml, to_array

HEADER = "#VRML V2.0"  # the first line of every VRML 2.0 file


def fan_triangulate(index: np.ndarray) -> np.ndarray:
    """Split -1-terminated polygons into triangle fans, in polygon order, without a Python loop.

    A polygon (i0, i1, ..., ik) becomes (i0, i1, i2), (i0, i2, i3), ... (i0, ik-1, ik); polygons
    with fewer than 3 corners have no area and are skipped (VRML requires 3; viewers skip them).

    Args:
        index: (I,) int64 `coordIndex`-style list; the final -1 may be missing.
    Returns:
        (F, 3) int64 positions into `index` (not vertex ids), so the same split can be applied
        to a parallel `texCoordIndex`.
    """
    ends = np.flatnonzero(index == -1)
    if len(index) and index[-1] != -1:
        ends = np.append(ends, len(index))  # last polygon without its terminator
    starts = np.concatenate([[0], ends[:-1] + 1])
    sizes = ends - starts
    keep = sizes >= 3
    starts, sizes = starts[keep], sizes[keep]
    tris_per_poly = sizes - 2
    poly = np.repeat(np.arange(len(starts)), tris_per_poly)  # (F,) polygon of each triangle
    first_tri = np.cumsum(tris_per_poly) - tris_per_poly  # (P,) index of a polygon's 1st triangle
    step = np.arange(len(poly)) - first_tri[poly]  # (F,) 0, 1, ... within each fan
    base = starts[poly]
    return np.stack([base, base + step + 1, base + step + 2], axis=1)  # (F, 3)


def _face_set(node: Node, where: str) -> dict:
    """Arrays of one IndexedFaceSet: verts, faces, and uv / colors when present."""
    f = node.fields
    sub = lambda name: getattr(f.get(name), "fields", {})  # fields of an SFNode, {} if absent
    if "coord" not in f:
        raise ValueError(f"{where}: an IndexedFaceSet has no coord")
    points = to_array(sub("coord").get("point", []), np.float32, "Coordinate point", where)
    if len(points) % 3:
        raise ValueError(f"{where}: Coordinate point has {len(points)} numbers, not x y z triples")
    verts = points.reshape(-1, 3)  # (N, 3)
    index = to_array(f.get("coordIndex", []), np.int64, "coordIndex", where)
    if len(index) and (index.min() < -1 or index.max() >= len(verts)):
        raise ValueError(f"{where}: coordIndex values span [{index.min()}, {index.max()}] but "
                         f"there are {len(verts)} points (valid: 0..{len(verts) - 1}, -1)")
    corners = fan_triangulate(index)  # (F, 3) positions into coordIndex
    out = {"verts": verts, "faces": index[corners]}

    if "texCoord" in f:
        tex = to_array(sub("texCoord").get("point", []), np.float32, "TextureCoordinate point",
                       where)
        if len(tex) % 2:
            raise ValueError(f"{where}: TextureCoordinate point has {len(tex)} numbers, not pairs")
        tex = tex.reshape(-1, 2)  # (U, 2)
        tex_index = to_array(f.get("texCoordIndex", []), np.int64, "texCoordIndex", where)
        by_vertex = len(tex_index) == 0 or np.array_equal(tex_index, index)
        if by_vertex and len(tex) >= len(verts):
            # No texCoordIndex (or a copy of coordIndex): the spec indexes texCoord by vertex.
            out["uv"] = tex[:len(verts)]  # (N, 2)
        elif len(tex_index) == 0:
            raise ValueError(f"{where}: {len(tex)} texture coordinates for {len(verts)} "
                             f"vertices and no texCoordIndex")
        else:
            terminated = lambda a: a if len(a) and a[-1] == -1 else np.append(a, -1)
            if not np.array_equal(terminated(tex_index) == -1, terminated(index) == -1):
                raise ValueError(f"{where}: texCoordIndex ({len(tex_index)} entries) does not "
                                 f"follow the polygons of coordIndex ({len(index)} entries)")
            if tex_index.min() < -1 or tex_index.max() >= len(tex):
                raise ValueError(f"{where}: texCoordIndex values span [{tex_index.min()}, "
                                 f"{tex_index.max()}] but there are {len(tex)} texture coordinates")
            out["uv"] = tex[tex_index[corners]]  # (F, 3, 2): same fan split as the faces

    per_vertex = f.get("colorPerVertex", ("TRUE",)) == ("TRUE",) and not f.get("colorIndex")
    if "color" in f and per_vertex:  # per-face or indexed colours are dropped (module docstring)
        colors = to_array(sub("color").get("color", []), np.float32, "Color color", where)
        if len(colors) != 3 * len(verts):
            raise ValueError(f"{where}: {len(colors) // 3} colours for {len(verts)} vertices")
        out["colors"] = colors.reshape(-1, 3)  # (N, 3)
    return out


def _load_texture(urls: list[str] | None, folder: Path) -> np.ndarray | None:
    """The first url that exists beside the file, as (H, W, 3) uint8; None if none exists.

    A missing texture image is not an error: BU releases are often copied without their bitmaps,
    and the geometry is still usable (rendered shaded instead of textured). A texture that exists
    but cannot be decoded is an error.
    """
    from PIL import Image  # Pillow is only needed when a file names a texture

    for url in urls or []:
        candidate = folder / url.removeprefix("file://")
        if candidate.is_file():
            try:
                with Image.open(candidate) as image:
                    return np.asarray(image.convert("RGB"))
            except OSError as err:
                raise ValueError(f"{candidate}: cannot read texture image ({err})") from None
    return None


def read_wrl(path: str | Path) -> Mesh:
    """Read a VRML 2.0 file's IndexedFaceSets into one triangle mesh.

    Args:
        path: a `.wrl` file whose first line starts with `#VRML V2.0`.
    Returns:
        Mesh with verts (N, 3) float32, faces (F, 3) int64 (n-gons fan-triangulated, several
        IndexedFaceSets concatenated); uv (F, 3, 2) when any set has a texCoordIndex, else (N, 2)
        when every set has per-vertex texCoord, else None (uv is dropped when some set lacks it);
        colors (N, 3) when every set has per-vertex colours; texture (H, W, 3) uint8 when there
        is uv and the first ImageTexture's url exists beside the file (else None).
    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the problem (header, syntax, indices, empty mesh, ...).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is harmless
    if not data.startswith(HEADER.encode()):
        first = data.split(b"\n", 1)[0][:40]
        raise ValueError(f"{where}: not a VRML 2.0 file (first line {first!r}, "
                         f"expected it to start with {HEADER!r})")
    text = data.decode("utf-8", errors="replace")
    # Drop the header line (a comment) but keep its newline so error line numbers stay right.
    text = text[text.find("\n"):] if "\n" in text else ""
    parts, texture_urls = [], None
    for node, urls in face_sets(parse_vrml(text, where)):
        parts.append(_face_set(node, where))
        texture_urls = texture_urls or urls
    if not parts:
        raise ValueError(f"{where}: no IndexedFaceSet found")

    offsets = np.cumsum([0] + [len(p["verts"]) for p in parts[:-1]])
    verts = np.concatenate([p["verts"] for p in parts])
    faces = np.concatenate([p["faces"] + o for p, o in zip(parts, offsets)])
    uv = None
    if all("uv" in p for p in parts):
        if all(p["uv"].ndim == 2 for p in parts):
            uv = np.concatenate([p["uv"] for p in parts])  # (N, 2)
        else:  # mixed layouts: per-vertex uv become per-corner, uv[faces] -> (F_part, 3, 2)
            uv = np.concatenate([p["uv"] if p["uv"].ndim == 3 else p["uv"][p["faces"]]
                                 for p in parts])  # (F, 3, 2)
    colors = (np.concatenate([p["colors"] for p in parts])
              if all("colors" in p for p in parts) else None)
    texture = _load_texture(texture_urls, path.parent) if uv is not None else None
    return Mesh(verts=verts, faces=faces, uv=uv, texture=texture, colors=colors, source=where)


def _rows(array: np.ndarray, spec: str) -> str:
    """Format (R, C) numbers as comma-separated VRML rows with one %-format call (fast)."""
    line = " ".join([spec] * array.shape[1])
    return ",\n".join([line] * len(array)) % tuple(array.ravel().tolist())


def save_wrl(mesh: Mesh, path: str | Path, texture_url: str | None = None) -> None:
    """Write `mesh` as a VRML 2.0 IndexedFaceSet in the BU-3DFE/BU-4DFE style.

    Per-vertex uv are written as a TextureCoordinate with a texCoordIndex equal to coordIndex;
    per-corner uv as one coordinate per corner. `texture_url` names the image beside the file.
    """
    path = Path(path)
    lines = ["#VRML V2.0 utf8", "", "DEF face Transform {", "  children [ Shape {"]
    if texture_url is not None:
        lines.append(f'    appearance Appearance {{ texture ImageTexture {{ url "{texture_url}" }} '
                     f'}}')
    lines += ["    geometry IndexedFaceSet {",
              "      ccw TRUE solid FALSE convex TRUE creaseAngle 1.57",
              "      coord Coordinate { point [", _rows(mesh.verts, "%.6g"), "      ] }",
              "      coordIndex [", _rows(np.c_[mesh.faces, -np.ones(len(mesh.faces), int)], "%d"),
              "      ]"]
    if mesh.uv is not None:
        if mesh.uv.ndim == 2:  # per vertex: uv index == vertex index
            uv, uv_index = mesh.uv, mesh.faces
        else:  # per corner: one uv entry per (face, corner)
            uv, uv_index = mesh.uv.reshape(-1, 2), np.arange(3 * len(mesh.faces)).reshape(-1, 3)
        uv_index = np.c_[uv_index, -np.ones(len(uv_index), int)]  # (F, 4): -1 terminated
        lines += ["      texCoord TextureCoordinate { point [", _rows(uv, "%.6g"), "      ] }",
                  "      texCoordIndex [", _rows(uv_index, "%d"), "      ]"]
    if mesh.colors is not None:
        lines += ["      color Color { color [", _rows(mesh.colors, "%.4g"), "      ] }",
                  "      colorPerVertex TRUE"]
    lines += ["    }", "  } ]", "}", ""]
    write_atomic(path, "\n".join(lines))


