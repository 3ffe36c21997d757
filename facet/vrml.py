"""VRML 2.0 (`.wrl`) meshes as BU-3DFE and BU-4DFE ship them: reading and writing.

Reads every `IndexedFaceSet` of a file (see FORMATS.md): `coord Coordinate { point [...] }`,
`coordIndex [...]` with -1 terminators (n-gons fan-triangulated), optional `texCoord` /
`texCoordIndex` (per-corner uv) and an `ImageTexture { url "..." }` resolved next to the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facet.fileio import write_atomic
from facet.mesh import Mesh


def save_wrl(mesh: Mesh, path: str | Path, texture_url: str | None = None) -> None:
    """Write `mesh` as a VRML 2.0 IndexedFaceSet in the BU-3DFE/BU-4DFE style.

    Per-vertex uv are written as a TextureCoordinate with a texCoordIndex equal to coordIndex;
    per-corner uv as one coordinate per corner. `texture_url` names the image beside the file.
    """
    path = Path(path)
    fmt = lambda rows, spec: ",\n".join(" ".join(spec % x for x in row) for row in rows)
    lines = ["#VRML V2.0 utf8", "", "DEF face Transform {", "  children [ Shape {"]
    if texture_url is not None:
        lines.append(f'    appearance Appearance {{ texture ImageTexture {{ url "{texture_url}" }} }}')
    lines += ["    geometry IndexedFaceSet {",
              "      ccw TRUE solid FALSE convex TRUE creaseAngle 1.57",
              "      coord Coordinate { point [", fmt(mesh.verts, "%.6g"), "      ] }",
              "      coordIndex [", fmt(np.c_[mesh.faces, -np.ones(len(mesh.faces), int)], "%d"),
              "      ]"]
    if mesh.uv is not None:
        if mesh.uv.ndim == 2:  # per vertex: uv index == vertex index
            uv, uv_index = mesh.uv, mesh.faces
        else:  # per corner: one uv entry per (face, corner)
            uv, uv_index = mesh.uv.reshape(-1, 2), np.arange(3 * len(mesh.faces)).reshape(-1, 3)
        lines += ["      texCoord TextureCoordinate { point [", fmt(uv, "%.6g"), "      ] }",
                  "      texCoordIndex [", fmt(np.c_[uv_index, -np.ones(len(uv_index), int)], "%d"),
                  "      ]"]
    if mesh.colors is not None:
        lines += ["      color Color { color [", fmt(mesh.colors, "%.4g"), "      ] }",
                  "      colorPerVertex TRUE"]
    lines += ["    }", "  } ]", "}", ""]
    write_atomic(path, "\n".join(lines))


