"""The packaged ICT-FaceKit model: loading, people, the 83 landmarks, skin."""
from __future__ import annotations

import numpy as np
import pytest

from facet.faces import face_model
from facet.faces.face_model import (FaceModel, albedo, bnd_landmarks, boundary_vertices,
                                    load_face_model, sample_subject, texel_faces, texture_image,
                                    uv_layout)


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model()


def test_asset_loads_in_mm_with_consistent_shapes(model):
    v = len(model.neutral)
    assert model.faces.max() == v - 1 and model.faces.min() == 0
    assert model.id_basis.shape[1:] == (v, 3) and model.expr_basis.shape == (53, v, 3)
    assert len(model.expr_names) == 53 and len(set(model.expr_names)) == 53
    width = np.ptp(model.neutral[: model.narrow_face, 0])
    assert 130 < width < 170  # mm: ear to ear in front of the ears
    jaw = np.linalg.norm(model.expr_basis[model.blendshape("jawOpen")], axis=1).max()
    assert 30 < jaw < 50  # ICT's README: 3.8 cm
    with pytest.raises(ValueError, match="unknown blendshape"):
        model.blendshape("smile")
    with pytest.raises(FileNotFoundError, match="missing"):
        face_model.load_face_model("/nowhere/ict_face.npz")


def test_identities_differ_and_are_deterministic(model):
    people = [sample_subject(np.random.default_rng([0, k]), model) for k in range(4)]
    again = sample_subject(np.random.default_rng([0, 0]), model)
    assert np.array_equal(people[0].id_weights, again.id_weights) and people[0].skin == again.skin
    faces = [model.identity(p.id_weights, p.scale) for p in people]
    for i in range(4):
        for j in range(i):
            assert np.abs(faces[i] - faces[j]).max() > 3.0  # mm: different people
    assert people[0].metadata().keys() == {"sex", "age_group", "ethnicity"}


def test_men_are_larger_with_wider_jaws(model):
    jaw = {"female": [], "male": []}
    for k in range(40):
        person = sample_subject(np.random.default_rng([1, k]), model)
        face = model.identity(person.id_weights, person.scale)
        left, right = face[model.landmarks68[[12, 4]]]
        jaw[person.sex].append(left[0] - right[0])
    assert len(jaw["female"]) >= 10 and len(jaw["male"]) >= 10
    assert np.mean(jaw["male"]) > np.mean(jaw["female"]) + 5  # mm


def test_landmarks_are_83_distinct_vertices_in_place(model):
    lm = bnd_landmarks(model)
    assert lm.shape == (83,) and len(set(lm.tolist())) == 83
    p = model.neutral[lm]  # (83, 3)
    rim = set(boundary_vertices(model.faces).tolist())
    assert all(int(i) in rim for i in lm[:16])  # eye points lie on the eye openings
    assert p[46, 2] == p[:, 2].max()  # the nose tip is the frontmost landmark
    # the right side (x < 0) mirrors the left: eyes, brows, nose sides, mouth corners, contour
    for right, left in ((range(0, 8), range(8, 16)), (range(16, 26), range(26, 36)),
                        (range(36, 41), range(41, 46)), ([48], [54]), ([68], [82])):
        assert (p[list(right), 0] < 0).all() and (p[list(left), 0] > 0).all()
        assert np.abs(p[list(right), 0] + p[list(left), 0]).max() < 3.0  # generic face: symmetric
    assert p[16:36, 1].min() > p[0:16, 1].max()  # brows above the eyes
    assert p[48:68, 1].max() < p[46, 1]  # mouth below the nose tip
    assert p[75, 1] == p[68:83, 1].min()  # the chin is the contour's lowest point


def test_skin_texture_is_lit_atlas(model):
    person = sample_subject(np.random.default_rng(3), model)
    uv = uv_layout(model)
    assert uv.min() >= 0 and uv.max() <= 1
    covered = texel_faces(64, model) >= 0
    assert 0.3 < covered.mean() < 0.95
    skin = albedo(person, 64, model)
    assert skin.shape == (64, 64, 3) and skin.dtype == np.float32
    assert 0 <= skin.min() <= skin.max() <= 1
    face = model.identity(person.id_weights, person.scale)
    front, side = (texture_image(skin, face, np.array(d, float), model)
                   for d in ([0, 0, 1], [1, 0, 0]))
    assert front.dtype == np.uint8 and (front[~covered] == 0).all()
    assert front[covered].mean() > side[covered].mean()  # a face lit from the front is brighter
