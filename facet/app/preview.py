"""A small 3D picture of a mesh, for the app: what was uploaded, before any rendering for the model.

Our addition (the papers show no such preview). A scan has 10^4-10^5 triangles, more than
matplotlib's 3D plotting draws quickly, so the mesh is first decimated by vertex clustering
(Rossignac and Borrel 1993): the bounding box is cut into `cells`^3 cubes, the vertices of a
cube merge into their mean, and triangles whose corners fall into fewer than three cubes vanish.
The surface keeps its shape at the cube size (1/40 of the face by default) and no holes open.
Then matplotlib's `plot_trisurf` draws it, lit by its facet normals, in facet's convention: y up,
the face looking down +z toward the viewer, seen a little from its left and above.

Shapes: N vertices, F triangles (N', F' after decimation).
"""
from __future__ import annotations

import io

import numpy as np

from facet.mesh import Mesh, normalize

import matplotlib

matplotlib.use("Agg")  # headless: must happen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

PREVIEW_CELLS = 40  # clustering cubes per side of the bounding box: about 2,000-3,000 triangles
# left of a face scan, drawn in well under a second


def decimate(mesh: Mesh, cells: int = PREVIEW_CELLS) -> Mesh:
    """Vertex clustering on a `cells`^3 grid over the bounding box (module docstring).

    Args:
        mesh: any triangle mesh. cells: grid cubes per side (>= 1).
    Returns:
        A Mesh of the cluster means (N', 3) and the surviving triangles (F', 3), each once;
        no appearance, no landmarks.
    """
    verts = mesh.verts.astype(np.float64)  # (N, 3)
    low, high = verts.min(axis=0), verts.max(axis=0)
    size = max(float((high - low).max()), 1e-12) / cells  # one cube side, the same on every axis
    cube = np.minimum(((verts - low) / size).astype(np.int64), cells - 1)  # (N, 3) cube indices
    key = (cube[:, 0] * cells + cube[:, 1]) * cells + cube[:, 2]  # (N,) one number per cube
    _, cluster = np.unique(key, return_inverse=True)  # (N,) vertex -> cluster
    count = np.bincount(cluster)  # (N',)
    means = np.stack([np.bincount(cluster, weights=verts[:, d]) for d in range(3)], 1)
    faces = cluster[mesh.faces]  # (F, 3) triangles between clusters
    a, b, c = faces.T
    faces = faces[(a != b) & (b != c) & (a != c)]  # (F', 3): three clusters left
    # a triangle and its rotations are one triangle: keep the first of each, orientation intact
    start = faces.argmin(axis=1)[:, None]  # (F', 1): each triangle read from its lowest index
    turned = np.take_along_axis(faces, (start + np.arange(3)) % 3, axis=1)  # (F', 3)
    _, first = np.unique(turned, axis=0, return_index=True)
    return Mesh(means / count[:, None], faces[np.sort(first)], source=mesh.source)


def preview_png(mesh: Mesh, cells: int = PREVIEW_CELLS, inches: float = 3.0) -> tuple[bytes, int]:
    """The decimated mesh drawn in 3D, as PNG bytes.

    Args:
        mesh: the scan (any units; normalised here with `facet.mesh.normalize`).
        cells: see `decimate`. inches: the picture's side (100 dpi).
    Returns:
        (PNG bytes, the number of triangles drawn).
    """
    small = decimate(normalize(mesh)[0], cells)
    # matplotlib's z axis is up: facet's (x, y, z) -> (x, -z, y), so the face looks toward -Y,
    # where azimuth -90 puts the camera
    x, y, z = small.verts[:, 0], -small.verts[:, 2], small.verts[:, 1]
    fig = plt.figure(figsize=(inches, inches))
    ax = fig.add_subplot(projection="3d")
    if len(small.faces):
        ax.plot_trisurf(x, y, z, triangles=small.faces, color="0.8", linewidth=0,
                        antialiased=False, shade=True)
    ax.view_init(elev=15, azim=-65)
    ax.set_box_aspect((np.ptp(x) or 1, np.ptp(y) or 1, np.ptp(z) or 1))
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue(), len(small.faces)
