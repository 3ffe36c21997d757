"""render_views.py: a mesh file, a folder with a corrupt file, the exit codes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import render_views
from facet.data.meshio import save_wrl
from facet.mesh import Mesh


def _write_face(path) -> None:
    u = np.linspace(-0.5, 0.5, 6, dtype=np.float32)
    x, y = np.meshgrid(u, u)
    verts = np.stack([x, y, 0.3 - x ** 2 - y ** 2], -1).reshape(-1, 3)
    a = (np.arange(5)[:, None] * 6 + np.arange(5)).reshape(-1)
    faces = np.concatenate([np.stack([a, a + 1, a + 7], 1), np.stack([a, a + 7, a + 6], 1)])
    save_wrl(Mesh(verts, faces), path)


def test_renders_one_file_view_by_view(tmp_path, capsys):
    _write_face(tmp_path / "face.wrl")
    code = render_views.main([str(tmp_path / "face.wrl"), "--out", str(tmp_path / "out"),
                              "--size", "24", "--views=-30,0;0,0;30,0"])
    assert code == 0
    sheet = np.asarray(Image.open(tmp_path / "out" / "face.wrl.png"))  # (H, W, 3)
    tiles = _tiles(sheet, count=3, size=24)
    assert all((tile < 250).any() for tile in tiles)  # every tile shows the face
    assert not np.array_equal(tiles[0], tiles[1]) and not np.array_equal(tiles[1], tiles[2])
    left, right = tiles[0], tiles[2]  # yaw -30 and +30 of a symmetric dome: mirror images
    assert np.abs(left.astype(int) - right[:, ::-1].astype(int)).mean() < 10


def _tiles(sheet: np.ndarray, count: int, size: int, gap: int = 4) -> list[np.ndarray]:
    """The `count` view tiles of a one-row contact sheet (labels left and above, tiles at the
    bottom right)."""
    right = sheet.shape[1] - gap  # tiles end one gap before the sheet's right and bottom edges
    bottom = sheet.shape[0] - gap
    return [sheet[bottom - size:bottom, right - (count - i) * (size + gap) + gap:
                  right - (count - i - 1) * (size + gap)] for i in range(count)]


def test_a_sequence_is_one_sheet_of_labelled_frames(tmp_path):
    frames = tmp_path / "F001" / "Happy"
    frames.mkdir(parents=True)
    for i in (0, 1, 2, 3, 4, 10):  # natural order: 10 comes last
        _write_face(frames / f"{i}.wrl")
    code = render_views.main([str(frames), "--sequence", "--every", "2", "--size", "20",
                              "--views=-30,0;30,0", "--out", str(tmp_path / "out")])
    assert code == 0
    sheet = np.asarray(Image.open(tmp_path / "out" / "Happy.png"))  # (H, W, 3)
    gap, size = 4, 20
    top = sheet.shape[0] - 2 * (size + gap) - gap  # the band of frame labels above the tiles
    assert top > 0 and (sheet[:top] < 128).any()  # "frame 0", "frame 2", "frame 4" are drawn
    assert all((tile < 250).any() for tile in _tiles(sheet, count=3, size=size))
    render_views.main([str(frames), "--sequence", "--size", "20", "--views=-30,0;30,0",
                       "--out", str(tmp_path / "all")])
    every = np.asarray(Image.open(tmp_path / "all" / "Happy.png"))
    assert every.shape[1] - sheet.shape[1] == 3 * (size + gap)  # 6 frames against 3
    with pytest.raises(SystemExit):  # a sequence is a folder of frames
        render_views.main([str(frames / "0.wrl"), "--sequence"])


def test_one_sheet_per_file_even_with_the_same_stem(tmp_path):
    _write_face(tmp_path / "face.wrl")
    import trimesh
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "face.ply")
    code = render_views.main([str(tmp_path), "--out", str(tmp_path / "out"), "--size", "16"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face.ply.png", "face.wrl.png"]


def test_folder_with_a_corrupt_file_renders_the_rest(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    _write_face(tmp_path / "a" / "good.wrl")
    (tmp_path / "a" / "bad.wrl").write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet {")
    code = render_views.main([str(tmp_path / "a"), "--out", str(tmp_path / "out"), "--size", "16"])
    err = capsys.readouterr().err
    assert code == 0
    assert (tmp_path / "out" / "good.wrl.png").is_file()
    assert not (tmp_path / "out" / "bad.wrl.png").exists()
    assert "bad.wrl" in err  # the failure names the file


def test_nothing_rendered_is_an_error(tmp_path, capsys):
    (tmp_path / "bad.wrl").write_text("not a mesh")
    assert render_views.main([str(tmp_path / "bad.wrl"), "--out", str(tmp_path / "out")]) == 1
    assert "bad.wrl" in capsys.readouterr().err
    assert render_views.main([str(tmp_path / "missing.wrl")]) == 1
