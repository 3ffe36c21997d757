"""Generated scans and datasets: scanner effects, determinism, and the written layouts."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from facet.data.layouts import EMOTIONS, FOURDME_CLASSES
from facet.data.layouts import index_dataset
from facet.data.meshio import load_mesh
from facet.faces import scanner, synth
from facet.faces.expressions import envelope, expression_aus, sample_style, scale_aus, symmetric
from facet.faces.face_model import sample_subject

BU3DFE_NAME = re.compile(r"^([FM])(\d{4})_(NE|AN|DI|FE|HA|SA|SU)(\d{2})([A-Z]{2})_F3D\.wrl$")


@pytest.fixture(scope="module")
def person():
    rng = np.random.default_rng(7)
    return sample_subject(rng), sample_style(rng)


def test_scans_are_face_sized_and_each_has_its_own_topology(person):
    subject, style = person
    rng = np.random.default_rng(0)
    scans = [scanner.scan(subject, expression_aus(e, 4, rng, style), rng, texture_size=32)
             for e in ("happiness", "happiness", "surprise")]
    sizes = {(s.mesh.num_verts, s.mesh.num_faces) for s in scans}
    assert len(sizes) == 3  # crop, holes and splits differ from scan to scan
    for item in scans:
        mesh = item.mesh
        assert 4_000 < mesh.num_verts < 10_000 and np.isfinite(mesh.verts).all()
        assert 130 < np.ptp(mesh.verts[:, 1]) < 220  # mm, brow (or forehead) to chin
        assert mesh.uv.shape == (mesh.num_verts, 2) and mesh.texture.shape == (32, 32, 3)
        # every landmark is a vertex, and the nose tip is (nearly) the frontmost point
        assert np.array_equal(mesh.verts[item.landmarks], mesh.landmarks["bnd"])
        assert mesh.landmarks["nose_tip"][2] > np.quantile(mesh.verts[:, 2], 0.99)
    # the vertex order is shuffled: the same model vertex sits at different scan indices
    first = [s.landmarks[46] for s in scans]
    assert len(set(first)) == 3


def test_scan_is_deterministic_and_realism_off_is_clean(person):
    subject, _ = person
    aus = symmetric({12: 0.8, 6: 0.5})
    a, b = (scanner.scan(subject, aus, np.random.default_rng(4), texture_size=0) for _ in range(2))
    assert np.array_equal(a.mesh.verts, b.mesh.verts) and np.array_equal(a.mesh.faces, b.mesh.faces)
    assert a.truth["aus"] == {"6": [0.5, 0.5], "12": [0.8, 0.8]}
    clean = [scanner.scan(subject, aus, None, realism=False, texture_size=0) for _ in range(2)]
    assert np.array_equal(clean[0].mesh.faces, clean[1].mesh.faces)
    assert clean[0].truth["pose"] == [0.0, 0.0, 0.0]
    assert np.array_equal(clean[0].mesh.verts, scanner.face_mesh(subject, aus, 0).verts)
    with pytest.raises(ValueError, match="needs an rng"):
        scanner.scan(subject, aus, None)


def test_expressions_move_the_scan(person):
    subject, _ = person
    neutral, smile = (scanner.face_mesh(subject, expression_aus(e, level), 0)
                      for e, level in (("neutral", 0), ("happiness", 4)))
    corners = smile.landmarks["bnd"][[48, 54]] - neutral.landmarks["bnd"][[48, 54]]
    assert (corners[:, 1] > 3).all()  # lip corners up


def test_sequences_share_a_topology_and_move_smoothly(person):
    subject, style = person
    rng = np.random.default_rng(1)
    apex = expression_aus("surprise", 4, rng, style)
    curve, (onset, peak, offset) = envelope(40, rng)
    items = scanner.scan_sequence(subject, [scale_aus(apex, a) for a in curve], rng)
    verts = np.stack([s.mesh.verts for s in items])  # (T, N, 3): one triangulation
    motion = np.linalg.norm(verts - verts[0], axis=-1).mean(-1)  # (T,) mm from the first frame
    assert motion[peak] > 2.0 and motion.argmax() not in (0, len(items) - 1)
    assert np.abs(np.diff(motion)).max() < motion.max() / 2  # no frame jumps


def test_write_bu3dfe_layout_reindexes_exactly(tmp_path):
    root = synth.write_bu3dfe(tmp_path / "bu3dfe", subjects=1, seed=5, texture_size=16)
    files = sorted(root.rglob("*.wrl"))
    assert len(files) == 25
    assert len(list(root.rglob("*.bnd"))) == len(list(root.rglob("*.bmp"))) == 25
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary folder was renamed away
    codes = {BU3DFE_NAME.match(p.name).groups()[2:4] for p in files}
    assert len(codes) == 25 and ("NE", "00") in codes
    index = index_dataset(root)
    assert (index.kind, len(index.samples), index.skipped) == ("bu3dfe", 25, [])
    truth = [json.loads(line) for line in (root / "ground_truth.jsonl").read_text().splitlines()]
    assert [t["file"] for t in truth] == sorted(t["file"] for t in truth) or len(truth) == 25
    by_file = {str(root / t["file"]): t for t in truth}
    for sample in index.samples:  # the names and the ground truth agree
        assert (by_file[sample.path]["emotion"], by_file[sample.path]["intensity"]) == (
            sample.label, sample.intensity)
        assert by_file[sample.path]["sex"] == sample.sex
    mesh = load_mesh(files[3])
    assert mesh.landmarks["bnd"].shape == (83, 3) and mesh.texture.shape == (16, 16, 3)
    rows = (root / "subjects.csv").read_text().split()
    assert rows[0] == "subject,sex,age_group,ethnicity" and len(rows) == 2
    with pytest.raises(FileExistsError):
        synth.write_bu3dfe(root, subjects=1)


def test_subject_k_does_not_depend_on_the_set_size(tmp_path):
    assert synth._subject_ids(3, 0, 4, "bu3dfe")[:2] == synth._subject_ids(2, 0, 4, "bu3dfe")
    small = synth.write_bu3dfe(tmp_path / "a", subjects=1, seed=2, texture_size=0)
    again = synth.write_bu3dfe(tmp_path / "b", subjects=1, seed=2, texture_size=0)
    name = next(small.rglob("*HA04*.wrl")).relative_to(small)
    assert (small / name).read_bytes() == (again / name).read_bytes()


def test_write_bu4dfe_sequences(tmp_path):
    root = synth.write_bu4dfe(tmp_path / "bu4dfe", subjects=1, seed=0, seconds=(0.4, 0.5))
    index = index_dataset(root)
    assert (index.kind, len(index.samples), index.skipped) == ("bu4dfe", 6, [])
    frames = index.samples[0].frames
    assert 10 <= len(frames) <= 13 and frames[0].endswith("000.wrl")
    first, last = load_mesh(frames[0]), load_mesh(frames[-1])
    assert np.array_equal(first.faces, last.faces) and first.landmarks["bnd"].shape == (83, 3)


def test_write_4dme_labels(tmp_path):
    root = synth.write_4dme(tmp_path / "4dme", subjects=1, seed=0, clips=5)
    rows = list(csv.DictReader(open(root / "labels.csv")))
    assert len(rows) == 5 and {r["emotion"] for r in rows} == set(FOURDME_CLASSES)
    for r in rows:
        frames = sorted((root / r["subject"] / r["clip"]).glob("*.wrl"))
        assert len(frames) == int(r["num_frames"])
        assert 0 <= int(r["onset"]) <= int(r["apex"]) <= int(r["offset"]) < len(frames)
        assert len(frames) <= 12 if r["kind"] == "micro" else len(frames) >= 15
    index = index_dataset(root)
    assert (len(index.samples), index.skipped) == (5, [])


def test_write_bp4d_tasks(tmp_path):
    root = synth.write_bp4d(tmp_path / "bp4d", subjects=1, seed=0, seconds=(0.3, 0.4))
    index = index_dataset(root)
    assert (index.kind, len(index.samples), index.skipped) == ("bp4d", 6, [])  # T4, T6 ignored
    assert {p.name for p in (root / index.samples[0].subject).iterdir()} == {
        f"T{i}" for i in range(1, 9)}


def test_ensure_dataset_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("FACET_DATA", str(tmp_path))
    assert synth.default_root("bu3dfe") == tmp_path / "bu3dfe-60subjects"
    root = synth.ensure_dataset("4dme", subjects=1, clips=1)
    assert root == tmp_path / "4dme-1subjects-g2"
    stamp = next(root.rglob("*.wrl")).stat().st_mtime_ns
    assert synth.ensure_dataset("4dme", subjects=1, clips=1) == root
    assert next(root.rglob("*.wrl")).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        synth.ensure_dataset("bosphorus5")
    with pytest.raises(ValueError, match="static scans"):  # no frames to scan apart
        synth.ensure_dataset("bu3dfe", crop_per_frame=True)


def test_crop_per_frame_scans_every_frame_of_one_take_on_its_own(person):
    subject, _ = person
    still = [{}] * 3  # a still neutral face: what differs between its frames is the scanner's
    shared, apart = (scanner.scan_sequence(subject, still, np.random.default_rng(2),
                                           head_motion=0.0, crop_per_frame=per_frame)
                     for per_frame in (False, True))
    assert len({len(s.mesh.verts) for s in shared}) == 1
    assert len({len(s.mesh.verts) for s in apart}) == 3  # each frame its own triangulation
    # One take: the same crop outline (the frames' extents differ by their ragged borders, 1.5
    # mm of jitter, where two takes' ovals differ by up to 16 mm), the same face (once the
    # head's 1 mm drift is taken out, its landmarks move by the scanner noise, 0.05-0.25 mm).
    extents = np.array([np.ptp(s.mesh.verts[:, :2], axis=0) for s in apart])  # (3, 2) mm
    assert np.ptp(extents, axis=0).max() < 5.0
    landmarks = np.stack([s.mesh.landmarks["bnd"] for s in apart])  # (3, 83, 3)
    landmarks -= landmarks.mean(axis=1, keepdims=True)  # the drift is a translation
    assert np.median(np.linalg.norm(landmarks - landmarks[0], axis=-1)[1:]) < 0.5


def test_sequence_writers_can_scan_every_frame_on_its_own(tmp_path, capsys):
    root = synth.write_4dme(tmp_path / "4dme", subjects=1, clips=2, crop_per_frame=True)
    frames = sorted((root / "S01" / "S01_C02").glob("*.wrl"))
    assert len({len(load_mesh(f).verts) for f in frames[:3]}) == 3
    # The same clips as the default set's, only scanned apart: expressions, timing, head poses.
    shared = synth.write_4dme(tmp_path / "shared", subjects=1, clips=2)
    assert ((root / "ground_truth.jsonl").read_text()
            == (shared / "ground_truth.jsonl").read_text())
    with pytest.raises(SystemExit):  # a static set has no frames to scan apart
        synth.main(["--kind", "bu3dfe", "--crop-per-frame", "--out", str(tmp_path / "b")])
    assert "static scans" in capsys.readouterr().err


def test_cli_reports_silently_and_rejects_bad_arguments(tmp_path, capsys):
    line = synth.main(["--kind", "4dme", "--out", str(tmp_path / "s"), "--subjects", "1",
                       "--workers", "1"])
    assert line.startswith("wrote ") and str(tmp_path / "s") in line
    assert capsys.readouterr().out == ""
    for bad in (["--kind", "bu5dfe"], ["--subjects", "0"], ["--out", str(tmp_path / "s")]):
        with pytest.raises(SystemExit):
            synth.main(bad)
        assert "error" in capsys.readouterr().err


def test_write_bosphorus_range_scans(tmp_path):
    root = synth.write_bosphorus(tmp_path / "bosphorus", subjects=1, seed=0, step=3.0)
    index = index_dataset(root, include_au=True)
    assert (index.kind, index.skipped) == ("bosphorus", [])
    labels = [s.label for s in index.samples]
    assert labels.count("neutral") == 2 and set(EMOTIONS) <= set(labels)
    assert sum(s.aus == "LFAU_12L" for s in index.samples) == 1
    mesh = load_mesh(root / "bs000" / "bs000_E_HAPPY_0.bnt")  # + its .lm3 landmarks
    assert mesh.num_faces > 1_000
    assert mesh.landmarks["nose_tip"][2] > np.quantile(mesh.verts[:, 2], 0.98)
    person = sample_subject(np.random.default_rng(0))
    grid = scanner.range_grid(scanner.face_mesh(person, {}, 0), 2.0)
    assert grid["covered"].mean() > 0.5 and np.ptp(grid["z"][grid["covered"]]) > 40  # mm of relief


def test_built_in_kinds_draw_disjoint_people():
    """Each kind has its own identity stream: no person (identity weights) of one kind's first
    60 is anyone of another's, and the BU-3DFE-like people are those of earlier versions."""
    identities = {kind: {tuple(synth.person(0, k, kind)[0].id_weights.round(6)) for k in range(60)}
                  for kind in synth.IDENTITY_STREAMS}
    kinds = list(identities)
    for i, a in enumerate(kinds):
        assert len(identities[a]) == 60
        for b in kinds[i + 1:]:
            assert not identities[a] & identities[b], (a, b)
    legacy = sample_subject(np.random.default_rng([0, 5]))  # the old person(0, 5)
    assert np.array_equal(synth.person(0, 5, "bu3dfe")[0].id_weights, legacy.id_weights)
