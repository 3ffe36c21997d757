"""FACS action units move the regions FACS says; emotions, styles, micro-expressions, timing."""
from __future__ import annotations

import numpy as np
import pytest

from facet.data.layouts import BP4D_TASKS, EMOTIONS, FOURDME_CLASSES
from facet.faces import expressions as ex
from facet.faces.face_model import bnd_landmarks, load_face_model

# Landmark groups (order documented in facet/faces/face_model.py).
INNER_BROWS, OUTER_BROWS = [16, 25, 26, 35], [20, 21, 30, 31]
UPPER_LIDS, LOWER_LIDS = [1, 2, 3, 9, 10, 11], [5, 6, 7, 13, 14, 15]
CORNERS, ALAE, UPPER_LIP = [48, 54], [39, 44], [50, 51, 52]
LOWER_LIP, CHIN = [56, 57, 58], 75


def _landmarks(aus: ex.AUs) -> np.ndarray:
    """(83, 3) landmarks of the generic face showing `aus`."""
    model = load_face_model()
    face = model.express(model.neutral, ex.blend_weights(aus, model))
    return face[bnd_landmarks(model)]


def _moved(au: int, strength: float = 1.0) -> np.ndarray:
    return _landmarks(ex.symmetric({au: strength})) - _landmarks({})


def _outward(d: np.ndarray, idx: list[int]) -> np.ndarray:
    """x displacement signed so that > 0 points away from the mid-line."""
    return d[idx, 0] * np.sign(_landmarks({})[idx, 0])


@pytest.mark.parametrize("au, check", [
    (1, lambda d: d[INNER_BROWS, 1].min() > 2
     and d[INNER_BROWS, 1].mean() > d[OUTER_BROWS, 1].mean()),
    (2, lambda d: d[OUTER_BROWS, 1].min() > 2),
    (4, lambda d: d[INNER_BROWS, 1].max() < -1.5 and _outward(d, INNER_BROWS).mean() < -0.5),
    (5, lambda d: d[UPPER_LIDS, 1].mean() > 0.8),
    (7, lambda d: d[LOWER_LIDS, 1].mean() > 0.5),
    (9, lambda d: d[ALAE, 1].min() > 1),
    (12, lambda d: d[CORNERS, 1].min() > 3 and _outward(d, CORNERS).min() > 3),
    (15, lambda d: d[CORNERS, 1].max() < -2),
    (20, lambda d: _outward(d, CORNERS).min() > 3),
    (26, lambda d: d[LOWER_LIP, 1].max() < -5 and d[CHIN, 1] < -5
     and abs(d[UPPER_LIDS, 1]).max() < 0.5),
    (27, lambda d: d[CHIN, 1] < -15),
    (17, lambda d: d[LOWER_LIP, 1].mean() > 0.5),
])
def test_action_unit_moves_its_region(au, check):
    assert check(_moved(au))


def test_table_names_only_model_blendshapes_and_sides_map_to_sides():
    model = load_face_model()
    for au, unit in ex.ACTION_UNITS.items():
        assert unit.name and ex.AU_NAMES[au] == unit.name
        for left, right, weight in unit.blendshapes:
            model.blendshape(left), model.blendshape(right)
            assert 0 < weight <= 1
    left_only = ex.blend_weights({12: (1.0, 0.0)}, model)
    assert left_only[model.blendshape("mouthSmile_L")] == 1.0
    assert left_only[model.blendshape("mouthSmile_R")] == 0.0
    d = _landmarks({12: (1.0, 0.0)}) - _landmarks({})
    assert d[54, 1] > 3 and abs(d[48, 1]) < 1  # 54 is the subject's left corner (x > 0)
    assert ex.blend_weights({26: (1.0, 1.0), 27: (1.0, 1.0)}, model).max() <= 1  # clipped
    with pytest.raises(ValueError, match="unknown action unit 99"):
        ex.blend_weights({99: (1.0, 1.0)}, model)


def test_every_emotion_differs_from_neutral_and_grows_with_intensity():
    neutral = _landmarks({})
    for emotion in EMOTIONS:
        moved = [np.linalg.norm(_landmarks(ex.expression_aus(emotion, level)) - neutral,
                                axis=1).max()
                 for level in (1, 2, 3, 4)]
        assert moved[0] > 1.0 and moved[3] > 4.0, emotion  # mm
        assert moved == sorted(moved), emotion


def test_expression_samples_vary_by_person_and_scan_but_keep_the_core():
    rng = np.random.default_rng(0)
    assert ex.expression_aus("neutral", 0) == {}
    exact = ex.expression_aus("happiness", 4)
    assert set(exact) == set(ex.PROTOTYPES["happiness"].variants[0])
    a, b = ex.sample_style(np.random.default_rng(1)), ex.sample_style(np.random.default_rng(2))
    assert a != b and a == ex.sample_style(np.random.default_rng(1))
    samples = [ex.expression_aus("happiness", 4, rng, a) for _ in range(20)]
    assert all(12 in s for s in samples)  # AU12 is in every happiness variant
    assert len({tuple(sorted(s)) for s in samples}) > 3  # which AUs appear varies
    assert any(abs(s[12][0] - s[12][1]) > 0.02 for s in samples)  # left and right differ
    strong = np.mean([max(ex.expression_aus("surprise", 4, rng, a)[1]) for _ in range(20)])
    weak = np.mean([max(ex.expression_aus("surprise", 1, rng, a)[1]) for _ in range(20)])
    assert weak < 0.6 * strong
    with pytest.raises(ValueError, match="unknown emotion"):
        ex.expression_aus("joy", 4)
    with pytest.raises(ValueError, match="does not fit"):
        ex.expression_aus("anger", 0)


def test_micro_expressions_and_tasks_cover_their_classes():
    assert set(ex.MICRO_EXPRESSIONS) == set(FOURDME_CLASSES)
    assert set(ex.BP4D_TASK_AUS) == set(BP4D_TASKS)
    rng = np.random.default_rng(0)
    micro = [ex.micro_aus("positive", True, rng) for _ in range(30)]
    macro = [ex.micro_aus("positive", False, rng) for _ in range(30)]
    assert max(max(s) for m in micro for s in m.values()) < 0.5  # micro-expressions are weak
    assert np.mean([max(s) for m in macro for s in m.values()]) > 0.4
    assert sum(min(m[12]) < 0.5 * max(m[12]) for m in micro) > 8  # often one-sided
    assert set(ex.spontaneous_aus("T1", rng)) >= {6, 12}
    with pytest.raises(ValueError, match="unknown 4DME class"):
        ex.micro_aus("joy", True, rng)


def test_envelope_goes_neutral_apex_neutral():
    rng = np.random.default_rng(0)
    for frames in (8, 30, 60):
        curve, (onset, apex, offset) = ex.envelope(frames, rng)
        assert curve.shape == (frames,) and curve[0] == 0 and curve[-1] < 0.05
        assert 0 < onset <= apex <= offset < frames
        assert curve[apex] > 0.8 and curve.argmax() >= onset
    blinks = ex.blink_track(250, rng)  # 10 s
    assert blinks.max() == pytest.approx(1.0, abs=0.2) and 0 < (blinks > 0.5).mean() < 0.2
    talk = ex.talking_track(100, rng)
    assert 0 < talk.max() <= 0.6
