"""The parametric neutral face of the synthetic data: grid topology, identity, surface, landmarks.

Our own design (the papers use real scans). A face is a front-facing surface over a face-shaped
region, built on one fixed grid of NX columns x NY rows, so every identity, expression and frame
shares the topology (vertex i is the same anatomical point everywhere). Coordinates are in mm
like BU-3DFE: x to the subject's left (image right), y up, z toward the viewer, origin at the
height of the nose tip on the mid-line; a face is ~160 mm tall.

Two thin bands of extra grid rows make the openings without ever changing the topology:
- the **mouth band** sits on the mouth line; at rest its rows almost coincide (closed lips with a
  crease); opening the jaw spreads them into a sheet that recedes into the head (a dark cavity);
- the **eye band** sits on the eye line; inside each eye's almond outline the band spreads
  between the upper and lower lid margins and shows the recessed eyeball with a corneal bulge.
Each vertex carries its band coordinate `sigma` in [0, 1] (0 = upper edge, 1 = lower edge), so
`lower_weight` (how much a vertex belongs to the lower lip/jaw) is exact at the slit.

Shapes: N = NX * NY vertices (~10k), F = 2 (NX - 1)(NY - 1) triangles (~20k).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache

import numpy as np

NX, NY_BASE, BAND_ROWS = 88, 104, 6  # columns, ordinary rows, rows per band
V_MOUTH, V_NOSE, V_EYE = 0.22, 0.42, 0.62  # row parameter (0 = chin, 1 = forehead) of the features
SEXES = ("female", "male")
AGE_GROUPS = ("young", "middle-aged", "older")
ETHNICITIES = ("WH", "AE", "BL", "IN", "LA", "AM")  # opaque BU-3DFE codes; shape ignores them
_ETHNICITY_P = (0.51, 0.24, 0.09, 0.06, 0.07, 0.03)


@dataclass(frozen=True)
class FaceGrid:
    """Identity-independent topology: per-vertex grid parameters and the triangles."""

    col: np.ndarray  # (N,) in [-1, 1]: horizontal position as a fraction of the half width
    row_v: np.ndarray  # (N,) in [0, 1]: vertical parameter (band rows share their feature's v)
    band: np.ndarray  # (N,) int8: 0 ordinary, 1 mouth band, 2 eye band
    sigma: np.ndarray  # (N,) in [0, 1]: position across the band (0 upper edge, 1 lower edge)
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from +z
    rows: int


@lru_cache(maxsize=1)
def face_grid() -> FaceGrid:
    """Build (once) the shared grid: ordinary rows plus the mouth and eye bands."""
    base = np.linspace(0.0, 1.0, NY_BASE)
    band_sigma = np.linspace(1.0, 0.0, BAND_ROWS)  # rows run bottom-up: lower edge first
    row_v, row_band, row_sigma = [], [], []
    for v in base:
        for feature, kind in ((V_MOUTH, 1), (V_EYE, 2)):
            if row_v and row_v[-1] < feature <= v:  # insert the band where v passes the feature
                row_v += [feature] * BAND_ROWS
                row_band += [kind] * BAND_ROWS
                row_sigma += list(band_sigma)
        row_v.append(v)
        row_band.append(0)
        row_sigma.append(0.0)  # only meaningful inside a band
    ny = len(row_v)
    col = np.tile(np.linspace(-1.0, 1.0, NX), ny)  # (N,)
    expand = lambda a, dtype: np.repeat(np.asarray(a, dtype=dtype), NX)  # per row -> (N,)
    r, c = np.meshgrid(np.arange(ny - 1), np.arange(NX - 1), indexing="ij")
    i = (r * NX + c).ravel()  # lower-left corner of each quad, (Q,)
    left = (c < (NX - 1) / 2).ravel()  # mirror the diagonal on the left half: a symmetric mesh
    a, b, cc, d = i, i + 1, i + NX + 1, i + NX  # quad corners, counter-clockwise
    tri1 = np.where(left[:, None], np.c_[a, b, d], np.c_[a, b, cc])
    tri2 = np.where(left[:, None], np.c_[b, cc, d], np.c_[a, cc, d])
    faces = np.concatenate([tri1, tri2]).astype(np.int64)  # (F, 3)
    return FaceGrid(col=col, row_v=expand(row_v, np.float64), band=expand(row_band, np.int8),
                    sigma=expand(row_sigma, np.float64), faces=faces, rows=ny)


@dataclass(frozen=True)
class Identity:
    """One synthetic subject: metadata and shape parameters (mm, or factors around 1)."""

    sex: str = "female"
    age_group: str = "young"
    ethnicity: str = "WH"  # opaque code, metadata only
    scale: float = 1.0  # overall size
    face_width: float = 1.0  # widens the outline
    jaw_width: float = 1.0  # widens the lower outline
    eye_height: float = 38.0  # eye line above the nose tip
    mouth_drop: float = 30.0  # mouth line below the nose tip
    chin_drop: float = 75.0  # chin bottom below the nose tip
    eye_spacing: float = 32.0  # half the distance between the eye centres
    eye_width: float = 14.5  # half the fissure width
    eye_open: float = 4.5  # upper lid above the eye line at rest
    eye_depth: float = 8.0  # socket depth
    brow_ridge: float = 3.0
    brow_height: float = 13.0  # brows above the eye line
    cheekbone: float = 4.0
    nose_projection: float = 20.0
    nose_width: float = 17.0  # half width of the alae
    nose_bridge: float = 6.0  # nasion height above the surrounding surface
    mouth_width: float = 25.0  # half width
    lip_thickness: float = 1.0  # factor on both lips
    chin: float = 7.0  # chin prominence
    nasolabial: float = 1.2  # depth of the nasolabial fold
    expressiveness: float = 1.0  # how strongly this subject moves (scales AU weights)
    mirror: float = 0.0  # left-right asymmetry of the features (mm)


# Means per sex, then per age group (added), and the per-subject standard deviation.
_MALE = dict(scale=1.06, jaw_width=1.06, brow_ridge=4.5, nose_projection=22.0, nose_width=18.5,
             lip_thickness=0.9, chin=8.0, eye_open=4.2, brow_height=12.0)
_AGE = {"young": {}, "middle-aged": dict(nasolabial=1.0, lip_thickness=-0.1, brow_height=-0.8),
        "older": dict(nasolabial=2.0, lip_thickness=-0.2, brow_height=-1.5, eye_open=-0.6)}
_SD = dict(scale=0.04, face_width=0.05, jaw_width=0.05, eye_height=2.0, mouth_drop=2.0,
           chin_drop=4.0, eye_spacing=1.5, eye_width=0.8, eye_open=0.5, eye_depth=1.2,
           brow_ridge=1.0, brow_height=1.2, cheekbone=1.2, nose_projection=2.5, nose_width=1.5,
           nose_bridge=1.2, mouth_width=1.8, lip_thickness=0.15, chin=1.5, nasolabial=0.4,
           expressiveness=0.15, mirror=0.6)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw a subject: sex (56% female, like BU-3DFE), age group, ethnicity code and shape.

    Args:
        rng: the random generator (the only source of randomness).
    Returns:
        an `Identity` with sex- and age-dependent parameter means plus Gaussian variation.
    """
    sex = SEXES[int(rng.random() < 0.44)]
    age = AGE_GROUPS[rng.choice(3, p=(0.6, 0.3, 0.1))]
    ethnicity = ETHNICITIES[rng.choice(len(ETHNICITIES), p=_ETHNICITY_P)]
    values = {f.name: f.default for f in fields(Identity) if f.name in _SD}
    if sex == "male":
        values.update(_MALE)
    for name, delta in _AGE[age].items():
        values[name] += delta
    for name, sd in _SD.items():  # fixed order: deterministic given the generator
        values[name] += sd * rng.standard_normal()
    values["expressiveness"] = float(np.clip(values["expressiveness"], 0.7, 1.3))
    return Identity(sex=sex, age_group=age, ethnicity=ethnicity, **values)


def _gauss(x, y, cx, cy, sx, sy):
    """Anisotropic Gaussian bump exp(-((x-cx)^2/2sx^2 + (y-cy)^2/2sy^2)), elementwise."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass
class FaceFrame:
    """Per-identity geometry the expression fields need, computed once per subject."""

    identity: Identity
    rest_xy: np.ndarray  # (N, 2) rest positions before the openings are applied
    mouth_mask: np.ndarray  # (N,) 1 between the mouth corners, 0 outside
    lower_weight: np.ndarray  # (N,) 1 on the lower lip / jaw, 0 above; exact at the slit
    anchors: dict[str, tuple[float, float]] = field(default_factory=dict)  # named rest (x, y)


def _rest_layout(p: Identity) -> FaceFrame:
    """Place the grid in the plane: the vertical profile, the face outline, feature anchors."""
    g = face_grid()
    s = p.scale
    knots_v = (0.0, V_MOUTH, V_NOSE, V_EYE, 1.0)
    knots_y = (-p.chin_drop * s, -p.mouth_drop * s, 0.0, p.eye_height * s, 88.0 * s)
    y = np.interp(g.row_v, knots_v, knots_y)  # (N,)
    # Half width of the face outline along y: narrow chin, widest at the cheekbones.
    ky = np.array([-1.0, -0.87, -0.6, -0.33, 0.13, 0.46, 1.15]) * 76.0 * s
    jaw = np.array([0.36, 0.62, 0.86, 1.0, 1.0, 1.0, 1.0]) * p.jaw_width + (1 - p.jaw_width)
    hw = np.interp(y, ky, np.array([20, 36, 51, 59, 67, 66, 56]) * jaw * p.face_width * s)
    x = g.col * hw  # (N,)
    mw = p.mouth_width * s
    mouth_mask = _smoothstep((1.0 - np.abs(x) / mw) / 0.25)  # fades out over the last quarter
    # Mouth line: corners 0.8 mm below the centre; nearby rows follow so rows never cross.
    y_mouth = -p.mouth_drop * s
    curve = -0.8 * np.clip(x / mw, -1.5, 1.5) ** 2 * np.exp(-(((y - y_mouth) / 6.0) ** 2))
    y = y + curve
    in_mouth = g.band == 1
    y[in_mouth] += (g.sigma[in_mouth] - 0.5) * -0.3  # closed lips: band rows 0.3 mm apart
    below = np.where(in_mouth, g.sigma, (g.row_v < V_MOUTH).astype(float))
    smooth = 1.0 - _smoothstep((y - y_mouth + 10.0) / 20.0)  # lower face outside the mouth
    lower_weight = mouth_mask * below + (1 - mouth_mask) * smooth
    ex, ey = p.eye_spacing * s, p.eye_height * s
    anchors = {"eye_r": (-ex - p.mirror, ey), "eye_l": (ex + p.mirror, ey), "mouth": (0.0, y_mouth),
               "nose_tip": (0.0, 0.0), "chin": (0.0, -p.chin_drop * s + 17 * s)}
    return FaceFrame(identity=p, rest_xy=np.c_[x, y], mouth_mask=mouth_mask,
                     lower_weight=lower_weight, anchors=anchors)


def _eye_profile(x, cx, half_width):
    """Almond opening profile in [0, 1]: 1 at the eye centre, 0 at and beyond the corners."""
    t = np.clip(1.0 - ((x - cx) / half_width) ** 2, 0.0, None)
    return t ** 0.75


def surface_z(p: Identity, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth z (mm) of the skin at rest positions (x, y): a sum of smooth anatomical terms."""
    s = p.scale
    ey, ex, by = p.eye_height * s, p.eye_spacing * s, (p.eye_height + p.brow_height) * s
    ym, yc = -p.mouth_drop * s, -p.chin_drop * s
    ax, bz = 80.0 * p.face_width * s, 140.0 * s
    z = 78.0 * s * (np.sqrt(np.clip(1 - (x / ax) ** 2 - ((y - 8 * s) / bz) ** 2, 0.02, None)) - 1)
    z += 4.0 * _gauss(x, y, 0, by + 25 * s, 45 * s, 22 * s)  # forehead bulge
    z += p.brow_ridge * _gauss(x, y, 0, by - 1 * s, 60 * s, 6 * s) * np.exp(-(x / (48 * s)) ** 4)
    for side in (-1, 1):
        cx = side * (ex + p.mirror)
        z -= p.eye_depth * _gauss(x, y, cx, ey + 2 * s, 15 * s, 10 * s)  # socket
        z += 5.0 * _gauss(x, y, cx, ey, 11 * s, 7 * s)  # eyeball under the lids
        crease = _gauss(x, y, cx, ey + 7.5 * s, 11 * s, 1.3 * s)
        z -= 0.9 * crease  # upper lid crease
        brow_y = by + 2.5 * s * np.cos((x - cx) / (26 * s))
        z += 0.7 * _gauss(x, y, cx + side * 3 * s, brow_y, 20 * s, 2.8 * s)  # eyebrow hair
        z += p.cheekbone * _gauss(x, y, side * 46 * s, ey - 22 * s, 14 * s, 11 * s)
        z -= 1.5 * _gauss(x, y, cx, ey - 11 * s, 12 * s, 3 * s)  # tear trough
        # Nasolabial fold: a groove along the segment from the ala to beside the mouth corner.
        a = np.array([side * (p.nose_width + 3) * s, -6.0 * s])
        b = np.array([side * (p.mouth_width + 5) * s, ym - 3 * s])
        t = np.clip(((x - a[0]) * (b - a)[0] + (y - a[1]) * (b - a)[1]) / ((b - a) ** 2).sum(), 0, 1)
        dist = np.hypot(x - a[0] - t * (b - a)[0], y - a[1] - t * (b - a)[1])
        z -= p.nasolabial * np.exp(-0.5 * (dist / (3.5 * s)) ** 2)
        z += 0.45 * p.nose_projection * _gauss(x, y, side * 0.75 * p.nose_width * s, -5 * s,
                                               5.5 * s, 5 * s)  # alae
        z -= 2.5 * _gauss(x, y, side * 7 * s, -9 * s, 3 * s, 1.8 * s)  # nostril hint
        z -= 1.2 * _gauss(x, y, side * p.mouth_width * s, ym, 3 * s, 3 * s)  # corner dimple
    # Nose: a ridge rising from the nasion to the tip, then dropping to the subnasale.
    rise = np.clip(1 - y / ey, 0, 1) ** 1.4 * (y >= 0) + np.exp(-0.5 * (y / (4.5 * s)) ** 2) * (y < 0)
    width = (5.0 + 4.0 * np.clip(1 - y / ey, 0, 1)) * s * p.nose_width / 17.0
    top_fade = 1 - _smoothstep((y - ey - 4 * s) / (10 * s))
    z += (p.nose_bridge + (p.nose_projection - p.nose_bridge) * rise) * top_fade * np.exp(
        -0.5 * (x / width) ** 2)
    z += 3.0 * _gauss(x, y, 0, 1 * s, 6 * s, 4.5 * s)  # rounded tip
    # Mouth: the dental arch, the upper and lower lips, the mentolabial sulcus, the chin.
    # Lips are pillows whose height and thickness taper toward the corners.
    prof = np.clip(1 - (x / (p.mouth_width * s)) ** 2, 0, None)
    lip = prof ** 0.5 * p.lip_thickness
    z += 6.0 * _gauss(x, y, 0, ym + 2 * s, 34 * s, 24 * s)
    z += 3.0 * lip * np.exp(-0.5 * ((y - ym - 3.8 * s * prof ** 0.5) / ((0.6 + 2.6 * prof ** 0.5) * s)) ** 2)
    z += 3.6 * lip * np.exp(-0.5 * ((y - ym + 4.6 * s * prof ** 0.5) / ((0.6 + 3.2 * prof ** 0.5) * s)) ** 2)
    z += 0.8 * _gauss(x, y, 0, ym + 10 * s, 4 * s, 4 * s)  # philtrum
    z -= 2.5 * _gauss(x, y, 0, ym - 12 * s, 14 * s, 3.5 * s)
    z += p.chin * _gauss(x, y, 0, yc + 17 * s, 16 * s, 11 * s)
    return z


def face_points(frame: FaceFrame, eye_upper: float = 0.0, eye_lower: float = 0.0,
                jaw: float = 0.0) -> np.ndarray:
    """Vertex positions (N, 3) float64 with the lids and jaw articulated (all in mm).

    Args:
        frame: the identity's rest layout (`layout(identity)`).
        eye_upper: extra opening of the upper lids above their rest position.
        eye_lower: extra opening of the lower lids below their rest position (< 0 raises them).
        jaw: jaw drop at the chin; the mouth band spreads and recedes into a cavity.
    """
    p, g = frame.identity, face_grid()
    s = p.scale
    x, y = frame.rest_xy[:, 0].copy(), frame.rest_xy[:, 1].copy()
    z = surface_z(p, x, y)
    # Eyes: lids move apart from the eye line with the almond profile; the band fills the gap.
    ey = p.eye_height * s
    up, low = p.eye_open + eye_upper, 0.9 * p.eye_open + eye_lower
    prof = _eye_profile(x, -(p.eye_spacing * s + p.mirror), p.eye_width * s) + _eye_profile(
        x, p.eye_spacing * s + p.mirror, p.eye_width * s)
    eye_band = g.band == 2
    fall = np.exp(-(((y - ey) / (9.0 * s)) ** 2))
    dy = np.where(y > ey, up * s, -low * s) * prof * fall
    dy[eye_band] = (up * (1 - g.sigma[eye_band]) - low * g.sigma[eye_band]) * s * prof[eye_band]
    y = y + dy
    # Band vertices show the eyeball: the surface at their opened position, recessed under the
    # lid margins (a step the shading picks up), with a bulge for the cornea.
    xb, yb = x[eye_band], y[eye_band]
    zb = surface_z(p, xb, yb) - 2.2 * prof[eye_band] ** 0.3
    for side in (-1, 1):
        zb += 2.0 * _gauss(xb, yb, side * (p.eye_spacing * s + p.mirror), ey - 0.5 * s, 4.5 * s, 4.5 * s)
    z[eye_band] = zb
    # Mouth: crease at rest, and the jaw (a rotation, so also a little backwards).
    mouth_band = g.band == 1
    lateral = np.exp(-((x / (40.0 * s)) ** 4))
    drop = jaw * frame.lower_weight * lateral
    y -= drop
    z -= 0.35 * drop
    recess = frame.mouth_mask * np.sin(np.pi * g.sigma) * (2.5 + 1.2 * jaw)
    z[mouth_band] -= recess[mouth_band]
    return np.c_[x, y, z]


def layout(identity: Identity) -> FaceFrame:
    """The identity's rest layout (see `FaceFrame`); cheap, but reuse it for many expressions."""
    return _rest_layout(identity)
