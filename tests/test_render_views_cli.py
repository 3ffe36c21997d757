"""render_views.py: a mesh file, a folder with a corrupt file, the exit codes."""
from __future__ import annotations

import numpy as np
from PIL import Image

import render_views
from facet.mesh import Mesh
from facet.meshio import save_wrl


def _write_face(path) -> None:
    u = np.linspace(-0.5, 0.5, 6, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    verts = np.stack([x, y, 0.3 - x ** 2 - y ** 2], -1).reshape(-1, 3)
    a = (np.arange(5)[:, None] * 6 + np.arange(5)).reshape(-1)
    faces = np.concatenate([np.stack([a, a + 1, a + 7], 1), np.stack([a, a + 7, a + 6], 1)])
    save_wrl(Mesh(verts, faces), path)


def test_renders_one_file(tmp_path, capsys):
    _write_face(tmp_path / "face.wrl")
    code = render_views.main([str(tmp_path / "face.wrl"), "--out", str(tmp_path / "out"),
                              "--size", "24", "--views=-30,0;0,0;30,10"])
    assert code == 0
    sheet = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    assert sheet.shape[0] >= 24 and sheet.shape[1] >= 3 * 24  # three views side by side
    assert (sheet < 250).any()  # something was drawn on the white sheet


def test_folder_with_a_corrupt_file_renders_the_rest(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    _write_face(tmp_path / "a" / "good.wrl")
    (tmp_path / "a" / "bad.wrl").write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {")
    code = render_views.main([str(tmp_path / "a"), "--out", str(tmp_path / "out"), "--size", "16"])
    err = capsys.readouterr().err
    assert code == 0
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "bad.png").exists()
    assert "bad.wrl" in err  # the failure names the file


def test_nothing_rendered_is_an_error(tmp_path, capsys):
    (tmp_path / "bad.wrl").write_text("not a mesh")
    assert render_views.main([str(tmp_path / "bad.wrl"), "--out", str(tmp_path / "out")]) == 1
    assert "bad.wrl" in capsys.readouterr().err
    assert render_views.main([str(tmp_path / "missing.wrl")]) == 1
