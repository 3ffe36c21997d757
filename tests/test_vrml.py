"""VRML reader: hand-written BU-style files (counts, fan split, uv, texture) and round trips."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facet.data.meshio import read_wrl, save_wrl
from facet.data.vrml import fan_triangulate
from facet.mesh import Mesh

# Two IndexedFaceSets. The first: two quads, a pentagon and a final triangle without its -1,
# per-corner uv (texCoordIndex with its own numbering); the second re-USEs the coordinates and
# has per-vertex uv (no texCoordIndex). Comments hold brackets and quotes, a string holds '#',
# commas sit anywhere, a PROTO comes first and Viewpoints follow the geometry.
HAND_WRITTEN = """#VRML V2.0 utf8
# a comment with ] and { and "an unclosed quote
PROTO Unused [ field SFFloat size 1.0 ] { Group { children [ ] } }
DEF face Transform {
  children [
    Shape {
      appearance Appearance { texture ImageTexture { url [ "missing.png", "tex#1.bmp" ] } }
      geometry DEF part1 IndexedFaceSet {
        ccw TRUE solid FALSE convex TRUE creaseAngle 1.57
        coord DEF pts Coordinate { point [ 0 0 0,1 0 0 ,, 1,1,0
          0 1 0, # vertex 3 [ not a bracket ]
          2 0 0, 2 1 0,
          3 0.5 0.25 ] }
        coordIndex [ 0 1 2 3 -1, 1 4 5 2 -1,
                     2,1,4,6,5,-1 3 2 5 ]
        texCoord TextureCoordinate { point [ 0 0.05, 0.1 0.15, 0.2 0.25, 0.3 0.35, 0.4 0.45,
                                             0.5 0.55, 0.6 0.65, 0.7 0.75, 0.8 0.85 ] }
        texCoordIndex [ 8 7 6 5 -1 4 3 2 1 -1 0 1 2 3 4 -1 5 6 7 -1 ]
      }
    }
    Shape {
      geometry IndexedFaceSet {
        coord USE pts
        coordIndex [ 0 1 2, -1 ]
        texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1, .5 .5, .25 .75, 1e-1 2E-1 ] }
      }
    }
  ]
}
DEF front Viewpoint { position 0 0 10 orientation 0 1 0 0 description "front # view" }
Viewpoint { position 10 0 0 }
"""
EXPECTED_FACES = [(0, 1, 2), (0, 2, 3), (1, 4, 5), (1, 5, 2), (2, 1, 4), (2, 4, 6), (2, 6, 5),
                  (3, 2, 5), (7, 8, 9)]
EXPECTED_TEX_CORNERS = [(8, 7, 6), (8, 6, 5), (4, 3, 2), (4, 2, 1), (0, 1, 2), (0, 2, 3),
                        (0, 3, 4), (5, 6, 7)]


def _write_hand_written(folder):
    texture = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(3, 4, 3) * 7  # (H, W, 3) distinct
    Image.fromarray(texture).save(folder / "tex#1.bmp")
    path = folder / "face.wrl"
    path.write_text(HAND_WRITTEN)
    return path, texture


def test_hand_written_file_counts_fan_split_uv_and_texture(tmp_path):
    path, texture = _write_hand_written(tmp_path)
    mesh = read_wrl(path)
    points = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0],
                       [3, 0.5, 0.25]], np.float32)
    np.testing.assert_array_equal(mesh.verts, np.concatenate([points, points]))  # USE pts twice
    assert mesh.faces.tolist() == [list(f) for f in EXPECTED_FACES]
    # Per-corner uv: set 1 through texCoordIndex, set 2 per vertex (uv[i] = texCoord point i).
    tex1 = np.array([[j / 10, j / 10 + 0.05] for j in range(9)], np.float32)
    tex2 = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [.5, .5], [.25, .75], [.1, .2]], np.float32)
    expected_uv = np.concatenate([tex1[np.array(EXPECTED_TEX_CORNERS)], tex2[[[0, 1, 2]]]])
    assert mesh.uv.shape == (9, 3, 2)
    np.testing.assert_allclose(mesh.uv, expected_uv, atol=1e-7)
    np.testing.assert_array_equal(mesh.texture, texture)  # second url of the list, '#' kept
    assert mesh.source == str(path)


def test_missing_texture_image_keeps_geometry_and_uv(tmp_path):
    path = tmp_path / "face.wrl"
    path.write_text(HAND_WRITTEN)  # no tex#1.bmp beside it
    mesh = read_wrl(path)
    assert mesh.texture is None and mesh.uv.shape == (9, 3, 2) and mesh.num_faces == 9


@pytest.mark.parametrize("seed", [0, 1])
def test_fan_triangulate_matches_a_per_polygon_loop(seed):
    rng = np.random.default_rng(seed)
    polygons = [list(rng.integers(0, 50, size=rng.integers(1, 9))) for _ in range(40)]
    index = np.concatenate([np.r_[p, -1] for p in polygons])[:-1]  # last -1 omitted
    expected = []  # the oracle: one fan per polygon of 3+ corners, in file order
    for p in polygons:
        expected += [(p[0], p[k], p[k + 1]) for k in range(1, len(p) - 1)]
    faces = index[fan_triangulate(index)]
    assert faces.tolist() == [list(t) for t in expected]


def _grid_mesh(n=6, **extra):
    xs, ys = np.meshgrid(np.linspace(-40, 40, n), np.linspace(-50, 50, n))
    verts = np.stack([xs, ys, 30 * np.cos(xs / 40) * np.cos(ys / 50)], -1).reshape(-1, 3)  # (N, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1), np.stack([a, d, c], -1)]).reshape(-1, 3)
    return Mesh(verts=verts + np.float32(1e-3), faces=faces, **extra)


def test_round_trip_per_vertex_uv_and_colours(tmp_path):
    base = _grid_mesh()
    rng = np.random.default_rng(0)
    mesh = _grid_mesh(uv=rng.random((base.num_verts, 2)), colors=rng.random((base.num_verts, 3)))
    save_wrl(mesh, tmp_path / "a.wrl", texture_url="a.bmp")
    back = read_wrl(tmp_path / "a.wrl")
    np.testing.assert_allclose(back.verts, mesh.verts, rtol=1e-5, atol=1e-4)  # %.6g on disk
    np.testing.assert_array_equal(back.faces, mesh.faces)
    assert back.uv.shape == mesh.uv.shape  # texCoordIndex == coordIndex reads back per vertex
    np.testing.assert_allclose(back.uv, mesh.uv, atol=1e-6)
    np.testing.assert_allclose(back.colors, mesh.colors, atol=1e-3)  # %.4g on disk


def test_round_trip_per_corner_uv(tmp_path):
    base = _grid_mesh()
    uv = np.random.default_rng(1).random((base.num_faces, 3, 2))
    save_wrl(_grid_mesh(uv=uv), tmp_path / "b.wrl")
    back = read_wrl(tmp_path / "b.wrl")
    np.testing.assert_array_equal(back.faces, base.faces)
    np.testing.assert_allclose(back.uv, uv, atol=1e-6)
    assert back.texture is None and back.colors is None


def test_uv_dropped_when_one_face_set_has_none(tmp_path):
    text = HAND_WRITTEN.replace("texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1, "
                                ".5 .5, .25 .75, 1e-1 2E-1 ] }", "")
    assert text != HAND_WRITTEN
    (tmp_path / "c.wrl").write_text(text)
    mesh = read_wrl(tmp_path / "c.wrl")
    assert mesh.uv is None and mesh.texture is None and mesh.num_faces == 9


TRIANGLE = ("Shape {{ appearance Appearance {{ texture ImageTexture {{ url [ {url} ] }} }}\n"
            "  geometry IndexedFaceSet {{ coord Coordinate {{ point [ 0 0 0, 1 0 0, 0 1 0 ] }}\n"
            "    coordIndex [ 0 1 2 -1 ] texCoord TextureCoordinate {{ point [ 0 0, 1 0, 0 1 ] }}"
            " }} }}\n")


@pytest.mark.parametrize("url", ['"../secret/x.png"', '"{secret}"', '"file://{secret}"',
                                 '"sub/../../secret/x.png"'])
def test_a_texture_url_outside_the_scan_folder_is_never_read(tmp_path, url):
    (tmp_path / "secret").mkdir()
    secret = tmp_path / "secret" / "x.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(secret)
    (tmp_path / "scan").mkdir()
    path = tmp_path / "scan" / "face.wrl"
    path.write_text("#VRML V2.0 utf8\n" + TRIANGLE.format(url=url.format(secret=secret)))
    with pytest.raises(ValueError, match=r"face.wrl: texture url .* points outside the scan's "
                                         r"folder"):
        read_wrl(path)


def _png_header(width: int, height: int) -> bytes:
    """The first chunks of a PNG of width x height RGB pixels (no pixel data needed to open it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_texture_is_refused(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(16000, 16000))  # 768 MB decoded
    path = tmp_path / "face.wrl"
    path.write_text("#VRML V2.0 utf8\n" + TRIANGLE.format(url='"bomb.png"'))
    with pytest.raises(ValueError, match=r"bomb.png: texture image too large to decode"):
        read_wrl(path)


def test_nesting_deeper_than_the_limit_is_an_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.wrl"
    path.write_text("#VRML V2.0 utf8\n" + "Group { children [ " * 5000 + "] }" * 5000 + "\n")
    with pytest.raises(ValueError, match=r"deep.wrl: line 2: nodes nested more than 100 levels"):
        read_wrl(path)
    shallow = "Group { children [ " * 50 + TRIANGLE.format(url='"none.png"') + "] }" * 50
    path.write_text("#VRML V2.0 utf8\n" + shallow)
    assert len(read_wrl(path).faces) == 1  # 50 levels still read
