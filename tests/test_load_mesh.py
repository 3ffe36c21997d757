"""load_mesh: dispatch by suffix, landmarks beside the mesh, trimesh order, malformed input."""
import struct

import numpy as np
import pytest
import trimesh

from facet.data.meshio import save_bnt
from facet.data.meshio import save_bnd, save_lm3
from facet.data.meshio import load_mesh
from facet.data.meshio import save_wrl
from facet.mesh import Mesh


def _grid(n=10):
    """An n x n height-field sheet: (n*n, 3) vertices, 2*(n-1)^2 triangles."""
    xs, ys = np.meshgrid(np.linspace(-40, 40, n), np.linspace(-50, 50, n))
    verts = np.stack([xs, ys, np.cos(xs / 30) * 20], -1).reshape(-1, 3)  # (N, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1), np.stack([a, d, c], -1)]).reshape(-1, 3)
    return Mesh(verts=verts, faces=faces)


@pytest.mark.parametrize("name, bnd_name", [
    ("F0001_HA04WH_F3D.wrl", "F0001_HA04WH_F3D.bnd"),  # BU-3DFE
    ("017.wrl", "017.bnd"),  # BU-4DFE frame
    ("FRAME.WRL", "FRAME.BND"),  # suffixes in capitals
])
def test_wrl_with_bnd_landmarks_beside(tmp_path, name, bnd_name):
    mesh = _grid()
    save_wrl(mesh, tmp_path / name)
    indices = np.random.default_rng(0).permutation(mesh.num_verts)[:83]
    save_bnd(indices, mesh.verts[indices], tmp_path / bnd_name)
    loaded = load_mesh(tmp_path / name)
    assert loaded.source == str(tmp_path / name)
    assert (loaded.num_verts, loaded.num_faces) == (100, 162)
    assert loaded.landmarks["bnd"].shape == (83, 3)
    np.testing.assert_allclose(loaded.landmarks["bnd"], loaded.verts[indices], atol=1e-4)


def test_bnt_with_lm3_named_points_and_nose_tip(tmp_path):
    r, c = np.mgrid[0:4, 0:5].astype(float)
    save_bnt(tmp_path / "bs001_E_HAPPY_0.bnt", c, -r, 10 + r * c, c / 4, r / 3, -1e9,
             "bs001_E_HAPPY_0.png")
    save_lm3({"Nose tip": [1, 2, 30], "Chin middle": [0, -60, 5]}, tmp_path / "bs001_E_HAPPY_0.lm3")
    mesh = load_mesh(tmp_path / "bs001_E_HAPPY_0.bnt")
    assert (mesh.num_verts, mesh.num_faces) == (20, 24)
    assert set(mesh.landmarks) == {"Nose tip", "Chin middle", "nose_tip"}
    np.testing.assert_array_equal(mesh.landmarks["nose_tip"], [1, 2, 30])


OBJ = """v 0 0 0
v 1 0 0
v 0 1 0
v 1 1 0
v 5 5 5
v 0 0 0
vt 0 0
vt 1 0
vt 0 1
vt 1 1
vt 0.5 0.5
f 4/4 2/2 1/1
f 3/3 4/4 1/5
f 6/1 2/2 3/3
"""


def test_obj_keeps_the_file_vertex_order(tmp_path):
    # Vertex 0 has two uv's, vertex 4 is unused, vertex 5 duplicates vertex 0: trimesh's default
    # loading (even with process=False) splits, drops and re-orders these vertices.
    path = tmp_path / "frame.obj"
    path.write_text(OBJ)
    file_verts = np.array([[float(t) for t in line.split()[1:]]
                           for line in OBJ.splitlines() if line.startswith("v ")])
    reordered = trimesh.load(path, process=False)
    assert reordered.vertices.shape != file_verts.shape or not np.allclose(reordered.vertices,
                                                                           file_verts)
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.verts, file_verts)
    assert mesh.faces.tolist() == [[3, 1, 0], [2, 3, 0], [5, 1, 2]]


def test_glb_scene_geometries_are_concatenated(tmp_path):
    box, ball = trimesh.creation.box(), trimesh.creation.icosphere(subdivisions=1)
    ball.apply_translation([3, 0, 0])
    trimesh.Scene([box, ball]).export(tmp_path / "scene.glb")
    mesh = load_mesh(tmp_path / "scene.glb")
    assert (mesh.num_verts, mesh.num_faces) == (8 + 42, 12 + 80)
    assert mesh.verts[:, 0].max() == pytest.approx(4.0)  # the node translation was applied


def test_ply_vertex_colours(tmp_path):
    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([255, 0, 51, 255], (8, 1))
    box.export(tmp_path / "box.ply")
    mesh = load_mesh(tmp_path / "box.ply")
    np.testing.assert_allclose(mesh.colors, np.tile([1, 0, 0.2], (8, 1)))


def test_bad_landmark_file_beside_is_an_error(tmp_path):
    save_wrl(_grid(), tmp_path / "000.wrl")
    (tmp_path / "000.bnd").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="000.bnd"):
        load_mesh(tmp_path / "000.wrl")
    save_bnd([5, 100], np.zeros((2, 3)), tmp_path / "000.bnd")  # vertex 100 of 100 vertices
    with pytest.raises(ValueError, match=r"000\.bnd.*out of range"):
        load_mesh(tmp_path / "000.wrl")


def _bnt_bytes(rows=2, cols=2, count=None, zmin=0.0, z=1.0, cut=0):
    name = b"x.png"
    values = np.full(5 * rows * cols, z)
    data = (struct.pack("<HHdH", rows, cols, zmin, len(name)) + name
            + struct.pack("<I", 5 * rows * cols if count is None else count) + values.tobytes())
    return data[:len(data) - cut]


def _wrl(coord="0 0 0, 1 0 0, 0 1 0", index="0 1 2 -1", extra=""):
    return (f"#VRML V2.0 utf8\nShape {{ geometry IndexedFaceSet {{ coord Coordinate {{ point "
            f"[ {coord} ] }} coordIndex [ {index} ] {extra} }} }}\n").encode()


def _export(file_type: str) -> bytes:
    """A valid 12-triangle box in a trimesh format, as bytes."""
    data = trimesh.creation.box().export(file_type=file_type)
    return data if isinstance(data, bytes) else data.encode()


GARBAGE = bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8))

MALFORMED = [
    # (file name, content or None for a missing file, exception, words the message must hold)
    ("missing.wrl", None, FileNotFoundError, "no such file"),
    ("empty.wrl", b"", ValueError, "empty"),
    ("empty.bnt", b"", ValueError, "empty"),
    ("v1.wrl", b"#VRML V1.0 ascii\nSeparator { }\n", ValueError, "not a VRML 2.0"),
    ("garbage.wrl", bytes(range(256)) * 4, ValueError, "not a VRML 2.0"),
    ("garbage.bnt", bytes(range(7, 256)) * 4, ValueError, "not a .bnt"),
    # trimesh formats: garbage (not UTF-8: facet decodes it, trimesh would need an optional
    # charset detector), truncated files, and a header that promises more than the file holds
    *[(f"garbage.{ext}", GARBAGE, ValueError, "no triangle mesh")
      for ext in ("obj", "ply", "off", "stl", "glb")],
    *[(f"truncated.{ext}", _export(ext)[:len(_export(ext)) // 2], ValueError, "no triangle mesh")
      for ext in ("obj", "ply", "off", "stl", "glb")],
    ("points_only.obj", b"v 0 0 0\nv 1 0 0\n", ValueError, "no triangle mesh"),
    ("short.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n",
     ValueError, "no triangle mesh"),
    ("truncated.bnt", _bnt_bytes(cut=9), ValueError, "truncated"),
    ("header_only.bnt", _bnt_bytes()[:10], ValueError, "truncated"),
    ("count.bnt", _bnt_bytes(count=19), ValueError, "data size 19"),
    ("trailing.bnt", _bnt_bytes() + b"\0", ValueError, "trailing bytes"),
    ("background.bnt", _bnt_bytes(zmin=1.0, z=1.0), ValueError, "no measured pixel"),
    ("out_of_range.wrl", _wrl(index="0 1 3 -1"), ValueError, "coordIndex values span [-1, 3]"),
    ("below_minus_one.wrl", _wrl(index="0 1 -2 -1"), ValueError, "coordIndex values span [-2"),
    ("nan.wrl", _wrl(coord="0 0 0, nan 0 0, 0 1 0"), ValueError, "NaN"),
    ("word.wrl", _wrl(coord="0 0 0, 1 zero 0, 0 1 0"), ValueError, "'zero' is not a valid number"),
    ("float_index.wrl", _wrl(index="0 1 2.5 -1"), ValueError, "'2.5' is not a valid integer"),
    ("pairs.wrl", _wrl(coord="0 0 0, 1 0 0, 0 1"), ValueError, "not x y z triples"),
    ("no_faces.wrl", _wrl(index=""), ValueError, "empty mesh"),
    ("no_face_set.wrl", b"#VRML V2.0 utf8\nViewpoint { position 0 0 1 }\n", ValueError,
     "no IndexedFaceSet"),
    ("tex_length.wrl", _wrl(extra="texCoord TextureCoordinate { point [ 0 0 1 0 0 1 ] } "
                                  "texCoordIndex [ 0 1 -1 ]"), ValueError, "texCoordIndex"),
    ("tex_range.wrl", _wrl(extra="texCoord TextureCoordinate { point [ 0 0 1 0 ] } "
                                 "texCoordIndex [ 1 0 5 -1 ]"), ValueError, "texCoordIndex values"),
    ("unclosed.wrl", _wrl().replace(b"] }", b"}"), ValueError, "never closed"),
    ("unclosed_brace.wrl", _wrl()[:-4], ValueError, "unexpected end of file"),
    ("use.wrl", _wrl().replace(b"coord Coordinate", b"coord USE nowhere Coordinate"), ValueError,
     "USE nowhere before DEF"),
    ("mesh.xyz", b"0 0 0\n", ValueError, "supported: .wrl, .bnt"),
]


def test_binary_stl_with_a_non_utf8_header_loads(tmp_path):
    # the 80-byte header of a binary STL is free text; trimesh would try to decode it
    (tmp_path / "box.stl").write_bytes(b"\xff" * 80 + _export("stl")[80:])
    assert load_mesh(tmp_path / "box.stl").num_faces == 12


def test_corrupt_texture_image_names_the_image(tmp_path):
    grid = _grid()
    save_wrl(Mesh(grid.verts, grid.faces, uv=np.zeros((grid.num_verts, 2))), tmp_path / "000.wrl",
             texture_url="000.bmp")
    (tmp_path / "000.bmp").write_bytes(b"BM" + GARBAGE)
    with pytest.raises(ValueError, match=r"000\.bmp: cannot read texture image"):
        load_mesh(tmp_path / "000.wrl")


@pytest.mark.parametrize("name, content, error, words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_the_file_and_the_problem(tmp_path, name, content, error, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error) as caught:
        load_mesh(path)
    assert str(path) in str(caught.value) and words in str(caught.value), str(caught.value)


def test_a_10m_face_ply_is_refused_from_its_header_in_no_time(tmp_path):
    """The header declares 10 M triangles: refused before a byte of geometry is parsed (loading
    it took a minute and 9 GB); the body need not even be there."""
    path = tmp_path / "huge.ply"
    path.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 5000000\n"
                     b"property float x\nproperty float y\nproperty float z\n"
                     b"element face 10000000\nproperty list uchar int vertex_indices\n"
                     b"end_header\n" + b"\0" * 1000)
    with pytest.raises(ValueError, match=r"huge.ply: 10,000,000 triangles and 5,000,000 "
                                         r"vertices, more than the 1,000,000 allowed .*"
                                         r"FACET_MAX_FACES"):
        load_mesh(path)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".off", ".stl", ".wrl"])
def test_the_face_limit_holds_for_every_format_and_can_be_raised(tmp_path, monkeypatch, suffix):
    mesh = _grid(4)  # 18 triangles, 16 vertices
    path = tmp_path / f"grid{suffix}"
    if suffix == ".wrl":
        save_wrl(mesh, path)
    else:
        trimesh.Trimesh(mesh.verts, mesh.faces, process=False).export(path)
    monkeypatch.setenv("FACET_MAX_FACES", "17")
    with pytest.raises(ValueError, match=rf"grid{suffix}: 18 triangles and \d+ vertices, more "
                                         r"than the 17 allowed"):
        load_mesh(path)
    monkeypatch.setenv("FACET_MAX_FACES", "60")  # STL repeats corners: 54 vertices
    assert len(load_mesh(path).faces) == 18
    monkeypatch.setenv("FACET_MAX_FACES", "many")
    with pytest.raises(ValueError, match="FACET_MAX_FACES='many' must be a positive"):
        load_mesh(path)
