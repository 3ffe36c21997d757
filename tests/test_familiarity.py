"""The "unlike the training faces" flag (facet.faces.familiarity) and its test set
(facet.faces.probes): a sphere and a turned face are flagged, a face of a new person is not,
units do not matter, the residual is the one a least-squares projection leaves; and the demo
face looks like a scan (cropped as one, centred as its file)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from facet.data.meshio import save_wrl
from facet.data.view_cache import render_frames
from facet.faces import face_model, familiarity, probes, scanner
from facet.render import RenderSettings

SETTINGS = RenderSettings(image_size=16, mode="normals")  # the tiny test models' views


@pytest.fixture(scope="module")
def reference():
    """A reference of 3 people (39 faces) at 16 px: the default's recipe, smaller."""
    faces = familiarity.reference_faces(people=3)
    pixels = familiarity.view_pixels([mesh for _, mesh in faces], SETTINGS)
    return familiarity.fit_reference(pixels, np.array([k for k, _ in faces]), SETTINGS,
                                     components=10)


@pytest.fixture(scope="module")
def new_faces():
    """Built-in scans of two people in neither the reference nor any dataset."""
    return [mesh for _, mesh in familiarity.reference_faces(people=2, seed=probes.PROBE_SEED)]


def test_a_sphere_and_a_box_are_flagged_and_new_faces_are_not(reference, new_faces):
    rng = np.random.default_rng(0)
    for kind in ("icosphere", "box"):
        verdict = familiarity.judge(reference, probes.shape(kind, rng))
        assert verdict.unfamiliar and verdict.familiarity < verdict.threshold
        assert "unlike the training faces" in verdict.reasons[0]
    for face in new_faces:
        verdict = familiarity.judge(reference, face)
        assert not verdict.unfamiliar, verdict.reasons
        assert verdict.familiarity > verdict.threshold


@pytest.mark.parametrize("mistake", ["upside down", "facing away", "on its side"])
def test_a_turned_face_is_flagged_and_the_turn_named(reference, new_faces, mistake):
    face = new_faces[3]
    wrong = replace(face, verts=face.verts @ probes.MISTAKES[mistake].T)
    verdict = familiarity.judge(reference, wrong)
    assert verdict.unfamiliar
    assert familiarity.judge(reference, face).familiarity > verdict.familiarity
    named = {"upside down": "upside down", "facing away": "facing away",
             "on its side": "on its"}[mistake]
    assert any(named in reason for reason in verdict.reasons), verdict.reasons


def test_millimetres_or_metres_render_the_same(new_faces):
    # normalisation divides by the largest side: the unit of a file never reaches the model
    face = new_faces[0]
    in_metres = replace(face, verts=face.verts / 1000)
    millimetres, _ = render_frames([face], SETTINGS)
    metres, _ = render_frames([in_metres], SETTINGS)
    assert np.abs(millimetres.astype(int) - metres.astype(int)).max() <= 1  # float rounding


def test_familiarity_is_one_minus_the_least_squares_residual():
    # oracle: numpy's least squares onto the top components, written out
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 50))  # faces vary along 3 directions of a 50-pixel "view"
    people = np.repeat(np.arange(6), 4)
    pixels = torch.from_numpy(rng.normal(size=(24, 3)) @ basis + 0.01 * rng.normal(size=(24, 50))
                              )[:, None].double()  # (24, V=1, 50)
    ref = familiarity.fit_reference(pixels, people, SETTINGS, components=3)
    inside = rng.normal(size=3) @ basis
    outside = rng.normal(size=50) * 3
    mean = pixels[:, 0].mean(0).numpy()
    centred = pixels[:, 0].numpy() - mean
    top = np.linalg.svd(centred, full_matrices=False)[2][:3]  # (3, 50)
    spread = np.linalg.norm(centred, axis=1).mean()
    for x in (inside, outside):
        d = x - mean
        coefficients = np.linalg.lstsq(top.T, d, rcond=None)[0]
        expected = 1 - np.linalg.norm(d - top.T @ coefficients) / spread
        got = familiarity._familiarity(torch.from_numpy(x)[None, None], ref.mean,
                                       ref.components, ref.spread)
        assert float(got) == pytest.approx(expected, abs=1e-9)
    # a point in the faces' span is familiar, a point far outside it is not
    assert familiarity._familiarity(torch.from_numpy(inside)[None, None], ref.mean,
                                    ref.components, ref.spread) > ref.threshold
    assert familiarity._familiarity(torch.from_numpy(outside)[None, None], ref.mean,
                                    ref.components, ref.spread) < ref.threshold


def test_a_reference_needs_two_people():
    with pytest.raises(ValueError, match="two people"):
        familiarity.fit_reference(torch.zeros(4, 1, 5, dtype=torch.float64), np.zeros(4, int),
                                  SETTINGS)


def test_the_probe_set_holds_every_kind_and_shape():
    made = probes.probe_set(people=1, shapes_each=1)
    kinds = [p.kind for p in made]
    assert kinds.count("face") == 13 and kinds.count("mis-oriented") == 13  # neutral, 6 x 2 levels
    assert kinds.count("clean face") == 6
    assert sorted(p.detail for p in made if p.kind == "non-face") == sorted(probes.SHAPES)
    assert {p.detail for p in made if p.kind == "mis-oriented"} == set(probes.MISTAKES)
    for p in made:
        assert 50 < np.ptp(p.mesh.verts, axis=0).max() < 400  # face-sized, in mm
    assert all(p.should_flag == (p.kind in ("non-face", "mis-oriented")) for p in made)


def test_the_demo_face_renders_as_its_file_and_is_cropped_like_a_scan(reference, tmp_path):
    # in memory as on disk: no "nose_tip" to centre on, so both take the bounding-box centre,
    # as the training scans (.wrl with .bnd) do
    face = scanner.demo_face("surprise", 4, seed=3)
    save_wrl(face, tmp_path / "face.wrl")
    in_memory, _ = render_frames([face], SETTINGS)
    from_file, _ = render_frames([tmp_path / "face.wrl"], SETTINGS)
    assert np.abs(in_memory.astype(int) - from_file.astype(int)).max() <= 2  # file rounding
    # the crop of a typical scan, not ICT's whole face area (forehead to neck)
    for seed in (0, 3):
        height = np.ptp(scanner.demo_face("neutral", seed=seed).verts[:, 1])
        whole = scanner.face_mesh(face_model.sample_subject(np.random.default_rng(seed)))
        assert height < 0.85 * np.ptp(whole.verts[:, 1])
    for emotion in ("happiness", "anger"):
        verdict = familiarity.judge(reference, scanner.demo_face(emotion, 4, seed=5))
        assert not verdict.unfamiliar, verdict.reasons
