"""Action units move the right regions in the right directions; emotions are separable, not trivially."""
from __future__ import annotations

import numpy as np
import pytest

from facet.action_units import AU_IDS, AUS, EMOTIONS, PROTOTYPES, expression_aus
from facet.faceshape import Identity, sample_identity
from facet.synth import face_mesh

# Landmark groups (order documented in facet/synth_landmarks.py).
INNER_BROWS, OUTER_BROWS = [16, 25, 26, 35], [20, 21, 30, 31]
UPPER_LIDS, LOWER_LIDS = [1, 2, 3, 9, 10, 11], [5, 6, 7, 13, 14, 15]
CORNERS, ALAE, LOWER_OUTER_LIP = [48, 54], [38, 43], [56, 57, 58]
LOWER_INNER_LIP, CHIN = [65, 66, 67], 75  # 75: bottom of the chin


def _moved(au: int, weight: float = 1.0) -> np.ndarray:
    """Landmark displacement (83, 3) of one AU on the default identity, no jitter."""
    neutral = face_mesh(Identity()).landmarks["bnd"]
    return face_mesh(Identity(), {au: weight}).landmarks["bnd"] - neutral


def _outward(d: np.ndarray, idx: list[int], bnd: np.ndarray) -> np.ndarray:
    """x displacement signed so that > 0 points away from the mid-line."""
    return d[idx, 0] * np.sign(bnd[idx, 0])


@pytest.mark.parametrize("au, check", [
    (1, lambda d, b: d[INNER_BROWS, 1].min() > 3 and d[INNER_BROWS, 1].mean() > d[OUTER_BROWS, 1].mean()),
    (2, lambda d, b: d[OUTER_BROWS, 1].min() > 3),
    (4, lambda d, b: d[INNER_BROWS, 1].max() < -2 and _outward(d, INNER_BROWS, b).max() < -1),
    (5, lambda d, b: d[UPPER_LIDS, 1].min() > 2 and abs(d[LOWER_LIDS, 1]).max() < 1),
    (7, lambda d, b: d[LOWER_LIDS, 1].min() > 1),
    (9, lambda d, b: d[ALAE, 1].min() > 2),
    (12, lambda d, b: d[CORNERS, 1].min() > 4 and _outward(d, CORNERS, b).min() > 4),
    (15, lambda d, b: d[CORNERS, 1].max() < -4),
    (20, lambda d, b: _outward(d, CORNERS, b).min() > 5),
    (23, lambda d, b: _outward(d, CORNERS, b).max() < -1),
    (26, lambda d, b: d[LOWER_INNER_LIP, 1].max() < -10 and d[CHIN, 1] < -8
     and abs(d[[1, 2, 3], 1]).max() < 0.5),
    (17, lambda d, b: d[LOWER_OUTER_LIP, 1].min() > 1 and d[LOWER_OUTER_LIP, 2].min() > 1),
])
def test_action_unit_moves_its_region(au, check):
    bnd = face_mesh(Identity()).landmarks["bnd"]
    assert check(_moved(au), bnd)


def test_every_action_unit_is_local_and_bounded():
    neutral = face_mesh(Identity()).verts
    for au in AU_IDS:
        d = np.linalg.norm(face_mesh(Identity(), {au: 1.3}).verts - neutral, axis=1)
        assert 1.0 < d.max() < 60.0, au  # moves something, never explodes (face ~160 mm)
        assert (d > 0.5).mean() < 0.5, au  # local: most of the face stays put


def test_expression_aus_prototypes_levels_and_errors():
    rng = np.random.default_rng(0)
    assert expression_aus("neutral", 0) == {}
    idle = expression_aus("neutral", 0, rng)
    assert len(idle) == 3 and max(idle.values()) <= 0.3
    for emotion in EMOTIONS:
        exact = [expression_aus(emotion, level) for level in range(1, 5)]
        assert set(exact[0]) == set(PROTOTYPES[emotion]) <= set(AUS)
        for au in exact[0]:  # weights grow with the intensity level
            assert exact[0][au] < exact[1][au] < exact[2][au] < exact[3][au]
        sampled = expression_aus(emotion, 4, rng)
        assert set(sampled) >= set(exact[3]) and len(sampled) <= len(exact[3]) + 3  # + idle AUs
        assert sampled != exact[3]
    with pytest.raises(ValueError, match="unknown emotion"):
        expression_aus("joy", 4)
    with pytest.raises(ValueError, match="intensity"):
        expression_aus("anger", 5)


def _align(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Similarity-align (M, 3) points onto target (Kabsch + scale): removes the head pose jitter."""
    p, t = points - points.mean(0), target - target.mean(0)
    u, sv, vt = np.linalg.svd(p.T @ t)
    d = np.sign(np.linalg.det(u @ vt))  # a proper rotation, never a reflection
    rotation = u @ np.diag([1, 1, d]) @ vt  # (3, 3), applied on the right
    scale = (sv * [1, 1, d]).sum() / (p ** 2).sum()
    return scale * p @ rotation + target.mean(0)


def _accuracy(level: int, train: list[Identity], test: list[Identity]) -> float:
    """Subject-independent nearest-centroid accuracy on landmark displacements from neutral."""
    rng = np.random.default_rng(level)

    def features(identity):
        neutral = face_mesh(identity, {}, rng).landmarks["bnd"]
        return [(_align(face_mesh(identity, expression_aus(e, level, rng), rng).landmarks["bnd"],
                        neutral) - neutral).ravel() for e in EMOTIONS]

    centroids = np.mean([features(i) for i in train], axis=0)  # (K, 83 * 3)
    hits = [np.argmin(((centroids - f) ** 2).sum(1)) == k
            for i in test for k, f in enumerate(features(i))]
    return float(np.mean(hits))


def test_emotions_are_separable_but_intensity_one_is_hard():
    people = [sample_identity(np.random.default_rng([7, k])) for k in range(16)]
    strong, subtle = _accuracy(4, people[:8], people[8:]), _accuracy(1, people[:8], people[8:])
    assert strong >= 0.8  # chance is 1/6
    assert subtle < strong - 0.15
    assert subtle > 1 / 6  # still some signal
