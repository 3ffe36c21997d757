"""The 83 BU-3DFE-style landmarks of a synthetic face, as vertex indices chosen per identity.

BU-3DFE ships 83 landmarks per scan (`.bnd`); the group boundaries below are as recalled from
its description (unverified), the order within a group is ours. "Right" is the subject's right
(x < 0, the image's left in a front view).

| indices | points |
|---|---|
| 0-7   | right eye: inner corner, 3 upper lid (inner->outer), outer corner, 3 lower lid (outer->inner) |
| 8-15  | left eye, same order |
| 16-25 | right eyebrow: 5 upper contour (inner->outer), 5 lower contour (outer->inner) |
| 26-35 | left eyebrow, same order |
| 36-40 | right side of the nose, top -> bottom: bridge, side, ala top, ala outer, nostril base |
| 41-45 | left side of the nose, same order |
| 46-47 | nose tip, subnasale |
| 48-59 | outer lips: right corner, 5 upper (right->left), left corner, 5 lower (left->right) |
| 60-67 | inner lips: right corner, 3 upper (right->left), left corner, 3 lower (left->right) |
| 68-82 | face contour from the right temple down around the chin to the left temple |

Indices are picked once per identity on its neutral face (nearest vertex, in the image plane,
among the vertices allowed for the point: lid points on the lid margins, inner-lip points on the
edges of the mouth slit, contour points on the boundary), so they never change with expression.
"""
from __future__ import annotations

import numpy as np

from facet.faceshape import NX, FaceFrame, face_grid

NUM_LANDMARKS = 83
NOSE_TIP = 46  # index into the 83 points


def _nearest(xy: np.ndarray, candidates: np.ndarray, targets: np.ndarray) -> list[int]:
    """For each (2,) target, the candidate vertex index nearest to it in the xy plane."""
    pts = xy[candidates]  # (C, 2)
    dist = ((pts[None, :, :] - np.asarray(targets)[:, None, :]) ** 2).sum(-1)  # (T, C)
    return candidates[dist.argmin(axis=1)].tolist()


def landmark_indices(frame: FaceFrame, neutral: np.ndarray) -> np.ndarray:
    """The 83 landmark vertex indices of one identity (table in the module docstring).

    Args:
        frame: the identity's rest layout.
        neutral: (N, 3) neutral vertices of that identity.
    Returns:
        (83,) int64 vertex indices.
    """
    g, p = face_grid(), frame.identity
    s = p.scale
    xy = neutral[:, :2]
    idx = np.arange(len(xy))
    band_edge = lambda kind, sigma: idx[(g.band == kind) & np.isclose(g.sigma, sigma)]
    band_mid = lambda kind: idx[(g.band == kind) & (np.abs(g.sigma - 0.5) < 0.15)]
    skin = idx[g.band == 0]
    ey, by = p.eye_height * s, (p.eye_height + p.brow_height) * s
    ym, mw, nw = -p.mouth_drop * s, p.mouth_width * s, p.nose_width * s
    out: list[int] = []
    for side in (-1, 1):  # eyes
        cx, w = side * (p.eye_spacing * s + p.mirror), p.eye_width * s
        inner, outer = cx - side * w, cx + side * w
        lids = np.array([inner + side * 0.5 * w, cx, cx + side * 0.5 * w])
        out += _nearest(xy, band_mid(2), [(inner, ey)])
        out += _nearest(xy, band_edge(2, 0.0), [(u, ey + 3) for u in lids])
        out += _nearest(xy, band_mid(2), [(outer, ey)])
        out += _nearest(xy, band_edge(2, 1.0), [(u, ey - 3) for u in lids[::-1]])
    for side in (-1, 1):  # eyebrows
        cx = side * (p.eye_spacing * s + p.mirror)
        xs = cx + side * np.linspace(-13, 17, 5) * s
        arc = by + 2.5 * s * np.cos((xs - cx) / (26 * s))
        out += _nearest(xy, skin, np.c_[xs, arc + 2.5 * s])
        out += _nearest(xy, skin, np.c_[xs, arc - 2.5 * s][::-1])
    for side in (-1, 1):  # nose sides
        out += _nearest(xy, skin, [(side * 7 * s, ey - 10 * s), (side * 9 * s, 0.45 * ey),
                                   (side * 0.7 * nw, 0.0), (side * nw, -5 * s),
                                   (side * 0.55 * nw, -10 * s)])
    out += _nearest(xy, skin, [(0.0, 0.0), (0.0, -12 * s)])  # tip, subnasale
    fx = np.array([-0.66, -0.33, 0.0, 0.33, 0.66]) * mw  # outer lips
    corners = band_mid(1)
    out += _nearest(xy, corners, [(-mw, ym)])
    out += _nearest(xy, skin, np.c_[fx, ym + 7.5 * s * np.sqrt(1 - (fx / mw) ** 2)])
    out += _nearest(xy, corners, [(mw, ym)])
    out += _nearest(xy, skin, np.c_[fx[::-1], ym - 9 * s * np.sqrt(1 - (fx[::-1] / mw) ** 2)])
    ix = np.array([-0.5, 0.0, 0.5]) * mw  # inner lips: the edges of the mouth slit
    out += _nearest(xy, corners, [(-0.85 * mw, ym)])
    out += _nearest(xy, band_edge(1, 0.0), np.c_[ix, np.full(3, ym)])
    out += _nearest(xy, corners, [(0.85 * mw, ym)])
    out += _nearest(xy, band_edge(1, 1.0), np.c_[ix[::-1], np.full(3, ym)])
    # Contour: boundary columns at decreasing heights, the bottom row's centre, and back up.
    heights = np.array([ey, ey - 20 * s, -10 * s, -30 * s, -50 * s, -62 * s, -70 * s])
    right, left = idx[g.col == -1.0], idx[g.col == 1.0]
    out += [int(right[np.abs(xy[right, 1] - h).argmin()]) for h in heights]
    out.append(NX // 2)  # bottom row, middle column: the chin
    out += [int(left[np.abs(xy[left, 1] - h).argmin()]) for h in heights[::-1]]
    return np.asarray(out, dtype=np.int64)
