"""The app's 3D preview (facet.app.preview): vertex-clustering decimation against its definition."""
from __future__ import annotations

import numpy as np

from facet.app.preview import decimate, preview_png
from facet.faces import scanner
from facet.mesh import Mesh


def grid(n: int) -> Mesh:
    """A flat n x n grid of vertices on [0, 1]^2 at z = 0, two triangles per square."""
    u = np.linspace(0, 1, n, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    verts = np.stack([x, y, np.zeros_like(x)], -1).reshape(-1, 3)
    a = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)).reshape(-1)
    faces = np.concatenate([np.stack([a, a + 1, a + n + 1], 1), np.stack([a, a + n + 1, a + n], 1)])
    return Mesh(verts, faces)


def test_a_grid_finer_than_the_mesh_changes_nothing():
    mesh = grid(5)  # vertices 0.25 apart; 64 cubes per side put each in its own cube
    small = decimate(mesh, cells=64)
    assert small.num_faces == mesh.num_faces
    kept = {tuple(v) for v in np.round(small.verts, 6)}
    assert kept == {tuple(v) for v in np.round(mesh.verts, 6)}
    # the same triangles, with the same orientation, written with the new vertex numbers
    corners = lambda m: {tuple(np.round(m.verts[f].ravel(), 6)) for f in m.faces}
    assert corners(small) == corners(mesh)


def test_clusters_are_cube_means_and_no_triangle_is_degenerate_or_repeated():
    mesh = grid(21)
    small = decimate(mesh, cells=4)  # cubes of side 0.25 over the unit square
    assert 0 < small.num_faces < mesh.num_faces
    a, b, c = small.faces.T
    assert ((a != b) & (b != c) & (a != c)).all()
    rotations = {tuple(np.roll(f, -int(np.argmin(f)))) for f in small.faces}
    assert len(rotations) == small.num_faces  # each triangle once
    # oracle: the mean of the vertices falling into each cube
    cube = np.minimum((mesh.verts[:, :2] / 0.25).astype(int), 3)
    means = {tuple(np.round(mesh.verts[(cube == k).all(1)].mean(0), 5))
             for k in {tuple(q) for q in cube}}
    assert {tuple(v) for v in np.round(small.verts, 5)} == means


def test_a_face_preview_is_a_png_of_a_few_thousand_triangles():
    face = scanner.demo_face("happiness", 4, seed=0)
    png, drawn = preview_png(face)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert 1000 < drawn < face.num_faces
