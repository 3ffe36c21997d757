"""Synthetic faces: topology, landmarks, determinism, and the written dataset layouts."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest

from facet import synth
from facet.faceshape import Identity, sample_identity
from facet.meshio import load_mesh

BU3DFE_NAME = re.compile(r"^([FM])(\d{4})_(NE|AN|DI|FE|HA|SA|SU)(\d{2})([A-Z]{2})_F3D\.wrl$")


def test_same_topology_finite_and_face_sized():
    rng = np.random.default_rng(0)
    meshes = [synth.face_mesh(sample_identity(rng), synth.expression_aus(e, 4, rng), rng)
              for e in ("neutral", "surprise", "happiness")]
    for mesh in meshes:
        assert np.array_equal(mesh.faces, meshes[0].faces)
        assert 10_000 <= mesh.num_faces <= 40_000 and np.isfinite(mesh.verts).all()
        height = np.ptp(mesh.verts[:, 1])
        assert 130 < height < 200  # mm, like a cropped BU-3DFE face
        # Faces look down +z: the nose tip is (nearly) the frontmost point.
        assert mesh.landmarks["nose_tip"][2] > np.quantile(mesh.verts[:, 2], 0.995)


def test_landmarks_are_vertices_and_follow_expressions():
    identity, rng = Identity(), np.random.default_rng(1)
    for aus in ({}, {12: 1.0}, {26: 1.0, 1: 1.0}):
        mesh = synth.face_mesh(identity, aus, rng)
        bnd = mesh.landmarks["bnd"]
        assert bnd.shape == (83, 3)
        gap = np.linalg.norm(mesh.verts[None] - bnd[:, None], axis=2).min(axis=1)  # (83,)
        assert gap.max() < 1e-5  # every landmark sits on a vertex: it moves with the surface
        assert np.allclose(mesh.landmarks["nose_tip"], bnd[46])


def test_deterministic_given_seed():
    a = synth.face_mesh(sample_identity(np.random.default_rng(3)), {12: 0.5}, np.random.default_rng(4))
    b = synth.face_mesh(sample_identity(np.random.default_rng(3)), {12: 0.5}, np.random.default_rng(4))
    assert np.array_equal(a.verts, b.verts)
    assert not np.array_equal(a.verts, synth.demo_face("happiness", 4, seed=3).verts)


def test_write_bu3dfe_layout_reads_back(tmp_path):
    root = synth.write_bu3dfe(tmp_path / "bu3dfe", subjects=2, seed=5)
    files = sorted(root.rglob("*.wrl"))
    assert len(files) == 50 and len(list(root.rglob("*.bnd"))) == 50
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary folder was renamed away
    seen = set()
    for path in files:
        sex, number, code, level, ethnicity = BU3DFE_NAME.match(path.name).groups()
        assert path.parent.name == f"{sex}{number}" and ethnicity in ("WH", "AE", "BL", "IN", "LA", "AM")
        assert (code == "NE") == (level == "00") and int(level) <= 4
        seen.add((code, level))
    assert len(seen) == 25
    mesh = load_mesh(files[0])
    assert mesh.num_faces == synth.demo_face().num_faces and mesh.landmarks["bnd"].shape == (83, 3)
    # subjects.csv carries what the names do not (age group), one row per subject folder.
    rows = (root / "subjects.csv").read_text().split()
    assert rows[0] == "subject,sex,age_group,ethnicity" and len(rows) == 3
    assert {r.split(",")[0] for r in rows[1:]} == {p.name for p in root.iterdir() if p.is_dir()}
    # Determinism on disk, and an existing folder is never overwritten.
    again = synth.write_bu3dfe(tmp_path / "again", subjects=2, seed=5)
    assert (again / files[0].relative_to(root)).read_bytes() == files[0].read_bytes()
    with pytest.raises(FileExistsError):
        synth.write_bu3dfe(root, subjects=1)


def test_write_bu4dfe_sequences(tmp_path):
    root = synth.write_bu4dfe(tmp_path / "bu4dfe", subjects=1, seed=0, seconds=(0.4, 0.5))
    folders = sorted(p for p in root.glob("*/*") if p.is_dir())
    assert [p.name for p in folders] == sorted(synth.BU4DFE_FOLDERS.values())
    frames = sorted(folders[0].glob("*.wrl"))
    assert 10 <= len(frames) <= 13 and frames[0].name == "000.wrl"
    first, apex = load_mesh(frames[0]), load_mesh(frames[len(frames) // 2])
    assert np.array_equal(first.faces, apex.faces)
    moved = np.linalg.norm(apex.verts - first.verts, axis=1)
    assert moved.max() > 1.0  # the middle of the sequence is expressive


def test_write_4dme_index(tmp_path):
    root = synth.write_4dme(tmp_path / "4dme", subjects=1, seed=0, clips=5)
    rows = list(csv.DictReader(open(root / "labels.csv")))
    assert len(rows) == 5 and {r["emotion"] for r in rows} == set(synth.MICRO_CLASSES)
    for r in rows:
        frames = sorted((root / r["subject"] / r["clip"]).glob("*.wrl"))
        assert len(frames) == int(r["num_frames"])
        assert 0 <= int(r["onset"]) <= int(r["apex"]) <= int(r["offset"]) < len(frames)
        if r["kind"] == "micro":
            assert len(frames) <= 0.5 * synth.FPS * 1.8 + 1


def test_ensure_dataset_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FACET_DATA", str(tmp_path))
    assert synth.default_root("bu3dfe", 1) == tmp_path / "bu3dfe-1subjects"
    root = synth.ensure_dataset("bu3dfe", subjects=1)
    assert root == tmp_path / "bu3dfe-1subjects"
    stamp = next(root.rglob("*.wrl")).stat().st_mtime_ns
    assert synth.ensure_dataset("bu3dfe", subjects=1) == root
    assert next(root.rglob("*.wrl")).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        synth.ensure_dataset("bosphorus")


def test_sequences_move_smoothly_and_return_to_neutral(tmp_path):
    root = synth.write_bu4dfe(tmp_path / "bu4dfe", subjects=1, seed=2, seconds=(1.2, 1.2))
    subject = next(p for p in sorted(root.iterdir()) if p.is_dir())
    frames = sorted((subject / "Surprise").glob("*.wrl"))
    verts = np.stack([load_mesh(f).verts for f in frames])  # (T, N, 3)
    motion = np.linalg.norm(verts - verts[0], axis=-1).mean(-1)  # (T,) mm from the first frame
    # smooth: no frame jumps by more than a third of the apex motion (a scale jitter drawn per
    # frame, ~3% of a 150 mm face, would), and the apex lies inside the sequence
    assert np.abs(np.diff(motion)).max() < motion.max() / 3
    assert motion.argmax() not in (0, len(frames) - 1)


def test_cli_generates_and_reports_silently(tmp_path, capsys):
    line = synth.main(["--kind", "bu3dfe", "--out", str(tmp_path / "s"), "--subjects", "1"])
    assert line.startswith("wrote 25 meshes to") and capsys.readouterr().out == ""
