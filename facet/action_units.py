"""FACS action units as displacement fields, and the six emotions as EMFACS AU prototypes.

Our interpretation for synthetic data (no muscle simulation): each action unit (AU) is a fixed,
smooth, localised displacement field over the face, built once per identity as an (N, 3) basis in
mm; an expression is a weighted sum of bases, so thousands of scans cost one matrix product each.
A field is either a sum of Gaussian-weighted regions anchored on facial features (brows, cheeks,
nose sides, lips, chin), moved in an anatomically sensible direction, or an articulation of the
parametric face (`facet.faceshape.face_points`: the lids open, the jaw drops) turned into a
displacement by subtracting the neutral face. Regions below the mouth slit are weighted by
`lower_weight`, so lip fields never leak across the closed lips.

Emotion prototypes follow EMFACS (happiness 6+12, sadness 1+4+15, surprise 1+2+5+26,
fear 1+2+4+5+7+20+26, anger 4+5+7+23, disgust 9+15+16) with a few low-weight secondary AUs.
Weights are at apex of the strongest level; BU-3DFE's four intensity levels scale them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facet.faceshape import FaceFrame, face_points
from facet.layouts import EMOTIONS, NEUTRAL

INTENSITY_SCALE = {0: 0.0, 1: 0.2, 2: 0.45, 3: 0.72, 4: 1.0}  # BU-3DFE level -> AU weight factor

PROTOTYPES: dict[str, dict[int, float]] = {
    "happiness": {6: 1.0, 12: 1.0, 25: 0.4},
    "sadness": {1: 1.0, 4: 0.6, 15: 1.0, 17: 0.4},
    "surprise": {1: 1.0, 2: 1.0, 5: 1.0, 26: 1.0},
    "fear": {1: 1.0, 2: 0.6, 4: 0.7, 5: 1.0, 7: 0.4, 20: 1.0, 25: 0.6, 26: 0.4},
    "anger": {4: 1.0, 5: 0.5, 7: 1.0, 23: 1.0, 24: 0.4},
    "disgust": {9: 1.0, 10: 0.5, 15: 0.6, 16: 0.5, 25: 0.3},
}


@dataclass(frozen=True)
class Region:
    """A Gaussian-weighted region moved by `shift` (mm, at AU weight 1)."""

    anchor: str  # name of a feature point (see `anchors`); "_l"/"_r" pairs mirror dx
    sigma: tuple[float, float]  # (sx, sy) in mm
    shift: tuple[float, float, float]  # (dx, dy, dz); dx points away from the mid-line
    part: str = "all"  # "upper": above the mouth slit only, "lower": below it, "all"


# AU -> (regions, articulation of the parametric face in mm).
AUS: dict[int, tuple[tuple[Region, ...], dict[str, float]]] = {
    1: ((Region("brow_inner", (11, 9), (0.0, 6.5, 0.5)),), {}),  # inner brow raiser
    2: ((Region("brow_outer", (12, 9), (0.5, 6.5, 0.0)),), {}),  # outer brow raiser
    4: ((Region("brow_mid", (15, 8), (-4.5, -6.5, 1.5)),  # brow lowerer: down and together
         Region("glabella", (3, 7), (-1.5, -2.0, -2.0))), {}),
    5: ((), {"eye_upper": 4.0}),  # upper lid raiser
    6: ((Region("cheek", (14, 10), (1.5, 4.5, 3.5), "upper"),), {"eye_lower": -2.0}),
    7: ((Region("lower_lid", (10, 4), (0.0, 1.2, 0.8)),), {"eye_lower": -2.5, "eye_upper": -0.8}),
    9: ((Region("nose_side", (7, 9), (0.5, 4.5, 1.0), "upper"),  # nose wrinkler
         Region("brow_inner", (10, 7), (0.0, -2.0, 0.0)),
         Region("upper_lip", (12, 6), (0.0, 1.5, 0.5), "upper")), {}),
    10: ((Region("upper_lip", (13, 7), (0.0, 4.5, 2.0), "upper"),), {}),  # upper lip raiser
    12: ((Region("corner", (11, 9), (7.0, 7.0, -3.5)),  # lip corner puller: up, out, back
          Region("cheek", (14, 12), (1.0, 2.5, 1.5), "upper")), {}),
    15: ((Region("corner", (10, 9), (0.5, -6.5, -0.5)),), {}),  # lip corner depressor
    16: ((Region("lower_lip", (15, 6), (0.0, -5.0, 1.5), "lower"),), {}),  # lower lip depressor
    17: ((Region("chin", (16, 10), (0.0, 4.0, 3.0), "lower"),  # chin raiser
          Region("lower_lip", (14, 5), (0.0, 1.5, 2.0), "lower")), {}),
    20: ((Region("corner", (12, 10), (8.0, -1.5, -2.0)),), {}),  # lip stretcher
    23: ((Region("corner", (9, 8), (-3.0, 0.0, 0.5)),  # lip tightener: narrower, thinner lips
          Region("upper_lip", (14, 5), (0.0, -1.0, -1.0), "upper"),
          Region("lower_lip", (14, 5), (0.0, 1.0, -1.0), "lower")), {}),
    24: ((Region("upper_lip", (14, 5), (0.0, -2.0, -2.0), "upper"),  # lip pressor
          Region("lower_lip", (14, 5), (0.0, 2.0, -2.0), "lower")), {}),
    25: ((Region("upper_lip", (14, 5), (0.0, 1.0, 0.0), "upper"),), {"jaw": 4.0}),  # lips part
    26: ((), {"jaw": 16.0}),  # jaw drop
    27: ((Region("corner", (9, 8), (-3.0, 0.0, 0.0)),), {"jaw": 26.0}),  # mouth stretch
}
AU_IDS = tuple(sorted(AUS))


def anchors(frame: FaceFrame) -> dict[str, np.ndarray]:
    """Feature points in rest (x, y) mm, right side first: name -> (2,) or (2, 2) for pairs."""
    p = frame.identity
    s = p.scale
    ex, ey, by = p.eye_spacing * s + p.mirror, p.eye_height * s, (p.eye_height + p.brow_height) * s
    ym, mw = -p.mouth_drop * s, p.mouth_width * s
    pair = lambda x, y: np.array([[-x, y], [x, y]])
    return {"brow_inner": pair(ex - 13 * s, by - 1 * s), "brow_mid": pair(ex, by + 1.5 * s),
            "brow_outer": pair(ex + 14 * s, by), "glabella": pair(5 * s, by - 3 * s),
            "cheek": pair(ex + 6 * s, ey - 20 * s), "lower_lid": pair(ex, ey - 7 * s),
            "nose_side": pair(0.55 * p.nose_width * s, 6 * s), "upper_lip": pair(9 * s, ym + 6 * s),
            "corner": pair(mw, ym), "lower_lip": np.array([[0.0, ym - 6 * s]]),
            "chin": np.array([[0.0, -p.chin_drop * s + 17 * s]])}


def au_basis(frame: FaceFrame, neutral: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Each AU's displacement field at weight 1 for one identity.

    Args:
        frame: the identity's rest layout (`facet.faceshape.layout`).
        neutral: (N, 3) neutral vertices (recomputed if None).
    Returns:
        AU number -> (N, 3) float64 displacement in mm.
    """
    if neutral is None:
        neutral = face_points(frame)
    x, y = frame.rest_xy[:, 0], frame.rest_xy[:, 1]
    parts = {"all": 1.0, "upper": 1.0 - frame.lower_weight, "lower": frame.lower_weight}
    points = anchors(frame)
    basis = {}
    for au, (regions, articulation) in AUS.items():
        field = face_points(frame, **articulation) - neutral if articulation else 0.0 * neutral
        for region in regions:
            for ax, ay in points[region.anchor]:
                weight = np.exp(-0.5 * (((x - ax) / region.sigma[0]) ** 2
                                        + ((y - ay) / region.sigma[1]) ** 2)) * parts[region.part]
                outward = np.sign(ax) if ax != 0 else 0.0  # dx points away from the mid-line
                shift = np.array([outward * region.shift[0], region.shift[1], region.shift[2]])
                field = field + weight[:, None] * shift  # (N, 3)
        basis[au] = field
    return basis


def stack_basis(basis: dict[int, np.ndarray]) -> np.ndarray:
    """Stack a basis dict into (A, N, 3) in `AU_IDS` order, for a weighted sum by einsum."""
    return np.stack([basis[au] for au in AU_IDS])


def au_vector(aus: dict[int, float]) -> np.ndarray:
    """AU weights dict -> (A,) float64 in `AU_IDS` order; unknown AUs raise ValueError."""
    unknown = sorted(set(aus) - set(AUS))
    if unknown:
        raise ValueError(f"unknown action units {unknown}; available: {list(AU_IDS)}")
    return np.array([float(aus.get(au, 0.0)) for au in AU_IDS])


def expression_aus(emotion: str, intensity: int, rng: np.random.Generator | None = None,
                   variation: float = 0.3, idle: float = 0.3) -> dict[int, float]:
    """AU weights of one expression sample.

    With an rng, each sample varies: the whole expression and each AU weight get a log-normal
    factor, and three random "idle" AUs (a face is never perfectly still) get a weight up to
    `idle`, independent of the level; this is what makes intensity 1 genuinely hard.

    Args:
        emotion: one of `EMOTIONS` or "neutral".
        intensity: 0 (neutral) to 4 (BU-3DFE levels: 1 subtle ... 4 extreme).
        rng: per-sample variation source; None gives the exact prototype.
        variation: log-normal spread of each AU weight (and half of it for the whole expression).
        idle: largest weight of an idle AU.
    Returns:
        AU number -> weight (about 0..1.5).
    """
    if emotion != NEUTRAL and emotion not in PROTOTYPES:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS} or 'neutral'")
    if intensity not in INTENSITY_SCALE:
        raise ValueError(f"intensity must be 0..4, got {intensity!r}")
    prototype = {} if emotion == NEUTRAL else PROTOTYPES[emotion]
    level = INTENSITY_SCALE[intensity]
    if rng is None:
        return {au: w * level for au, w in prototype.items()} if level else {}
    level *= float(np.exp(0.5 * variation * rng.standard_normal()))
    aus = {au: float(w * level * np.exp(variation * rng.standard_normal()))
           for au, w in prototype.items()} if intensity else {}
    for au in rng.choice(_IDLE_AUS, size=3, replace=False):
        aus[int(au)] = aus.get(int(au), 0.0) + float(rng.uniform(0, idle))
    return aus


_IDLE_AUS = np.array([au for au in AU_IDS if au != 27])  # no idle mouth stretch
