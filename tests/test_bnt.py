"""Bosphorus .bnt reader: grid triangulation, background dropped, bottom-up rows, on-disk layout."""
import struct

import numpy as np

from facet.data.meshio import grid_triangles, read_bnt, save_bnt

ZMIN = -1.0e9


def _scan(rows=5, cols=6):
    """Grids (row 0 = top): x = column, y = -row (up), a bump in z; some background pixels."""
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float64)
    x, y = c * 2.0, -r * 2.0
    z = 10 + np.sin(c) + np.cos(r)
    u, v = c / (cols - 1), 1 - r / (rows - 1)
    z[0, 0] = z[2, 3] = z[4, 5] = ZMIN  # background pixels
    return x, y, z, u, v


def _naive_triangles(valid):
    """Oracle: loop over 2x2 blocks, the same two triangles, kept when all three pixels valid."""
    rows, cols = valid.shape
    out = []
    for i in range(rows - 1):
        for j in range(cols - 1):
            a, b, c, d = (i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)
            out += [t for t in ((a, c, b), (b, c, d)) if all(valid[p] for p in t)]
    return out


def test_layout_on_disk_is_column_blocks_with_rows_bottom_up(tmp_path):
    x, y, z, u, v = _scan()
    save_bnt(tmp_path / "s.bnt", x, y, z, u, v, ZMIN, "s.png")
    data = (tmp_path / "s.bnt").read_bytes()
    rows, cols, zmin, name_len = struct.unpack_from("<HHdH", data)
    assert (rows, cols, zmin, data[14:14 + name_len]) == (5, 6, ZMIN, b"s.png")
    (count,) = struct.unpack_from("<I", data, 14 + name_len)
    values = np.frombuffer(data, "<f8", offset=18 + name_len)
    assert count == len(values) == 5 * 5 * 6
    z_block = values[2 * 30:3 * 30].reshape(5, 6)
    np.testing.assert_array_equal(z_block[0], z[-1])  # the first stored row is the bottom one


def test_read_drops_background_and_keeps_rows_top_down(tmp_path):
    x, y, z, u, v = _scan()
    z[3, 0] = z[4, 1] = ZMIN  # pixel (4, 0) is measured but in no valid triangle: dropped
    save_bnt(tmp_path / "s.bnt", x, y, z, u, v, ZMIN, "s.png")
    mesh = read_bnt(tmp_path / "s.bnt")

    valid = z != ZMIN
    expected = _naive_triangles(valid)
    assert mesh.num_faces == len(expected)
    used = sorted({p for t in expected for p in t})  # pixels in row-major order
    assert (4, 0) not in used and mesh.num_verts == len(used)
    grid = np.stack([x, y, z], -1)
    np.testing.assert_array_equal(mesh.verts, np.array([grid[p] for p in used], np.float32))
    np.testing.assert_allclose(mesh.uv, [(u[p], v[p]) for p in used], atol=1e-7)
    position = {p: k for k, p in enumerate(used)}
    assert mesh.faces.tolist() == [[position[p] for p in t] for t in expected]
    assert not np.isin(mesh.verts[:, 2], [ZMIN]).any()
    # Counter-clockwise seen from +z: every normal of the (gently curved) sheet points to +z.
    a, b, c = (mesh.verts[mesh.faces[:, k]] for k in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).all()


def test_grid_triangles_full_grid_count():
    assert len(grid_triangles(np.ones((4, 7), bool))) == 2 * 3 * 6
    assert len(grid_triangles(np.zeros((4, 7), bool))) == 0
