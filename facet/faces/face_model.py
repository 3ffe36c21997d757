"""The ICT-FaceKit morphable face: identities, blendshapes, skin, and the 83 BU-3DFE landmarks.

facet's built-in faces start here. ICT-FaceKit (USC Institute for Creative Technologies, MIT
license, `facet/faces/ict_facekit/`) is a linear face model built from Light Stage scans of real
people: a face is `neutral + sum_i w_i * id_basis[i] + sum_j a_j * expr_basis[j]`, with identity
weights w_i ~ N(0, 1) (ICT's own sampler) and 53 ARKit-named expression blendshapes a_j in
[0, 1]. `facet.faces.expressions` turns FACS action units into the a_j; `facet.faces.synth`
turns the resulting surface into scans with a scanner's crop, pose, noise and holes, and writes
datasets.

This module holds what belongs to a person, not to a scan:
- `FaceModel` (`load_face_model`): the arrays in mm, shared by every face;
- `Subject` (`sample_subject`): sex, age group and BU-3DFE ethnicity code, with an identity and a
  skin tone consistent with them (our heuristics, see `sample_subject`);
- `bnd_landmarks`: the 83 BU-3DFE landmarks as model vertices (table below);
- `uv_layout`, `albedo`, `texture_image`: a frontal texture atlas, a subject's skin colour in it,
  and that skin lit like a photograph of one scan.

The 83 landmarks (BU-3DFE's group boundaries; the order inside a group is ours). "Right" is the
subject's right (x < 0). They are derived from ICT's 68 iBUG landmarks on the generic face:

| indices | points (in -> out: from the face's middle outwards)             | from iBUG 68 |
|---|---|---|
| 0-7   | right eye: inner corner, 3 upper lid in -> out, outer corner,       | 36-41, on the |
|       | 3 lower lid out -> in                                                | eye opening   |
| 8-15  | left eye, same order                                                 | 42-47         |
| 16-25 | right brow: 5 upper contour in -> out, 5 lower contour out -> in     | 17-21 +- 4 mm |
| 26-35 | left brow, same order                                                | 22-26         |
| 36-40 | right side of the nose, top -> bottom: bridge, side, ala top,        | 28, 29, 31    |
|       | ala outer, nostril base                                              |               |
| 41-45 | left side of the nose, same order                                    | 28, 29, 35    |
| 46-47 | nose tip, subnasale                                                  | 30, 33        |
| 48-59 | outer lips: right corner, 5 upper (right -> left), left corner,      | 48-59         |
|       | 5 lower (left -> right)                                              |               |
| 60-67 | inner lips: right corner, 3 upper (right -> left), left corner,      | 60-67         |
|       | 3 lower (left -> right)                                              |               |
| 68-82 | face contour, right temple -> chin -> left temple, evenly spaced     | 0-16          |

Shapes: V model vertices, F model triangles, I identity modes, B blendshapes, S texture side.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from facet.raster import rasterize

ASSET = Path(__file__).resolve().parent / "ict_facekit" / "ict_face.npz"
CM_TO_MM = 10.0  # ICT stores centimetres; BU-3DFE scans are in millimetres
NUM_LANDMARKS = 83
NOSE_TIP = 46  # index of the nose tip among the 83

SEXES = ("female", "male")
AGE_GROUPS = ("young", "middle-aged", "older")
# BU-3DFE's ethnicity codes (opaque in file names), its rough mix, and a base skin tone for each
# (linear-ish sRGB, [0, 1]); tones overlap once a subject's own variation is added.
ETHNICITIES = {  # code: (share, skin tone)
    "WH": (0.51, (0.86, 0.68, 0.58)),
    "AE": (0.24, (0.84, 0.68, 0.53)),
    "BL": (0.09, (0.45, 0.31, 0.23)),
    "IN": (0.06, (0.66, 0.48, 0.36)),
    "LA": (0.07, (0.76, 0.57, 0.44)),
    "AM": (0.03, (0.78, 0.60, 0.48)),
}


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, so lru_caches can key on it
class FaceModel:
    """The morphable face, in mm, face toward +z, y up (vertex order fixed by the asset)."""

    neutral: np.ndarray  # (V, 3) float32 generic neutral face
    faces: np.ndarray  # (F, 3) int64 triangles, counter-clockwise seen from the front
    id_basis: np.ndarray  # (I, V, 3) float32 identity modes, one standard deviation each
    expr_basis: np.ndarray  # (B, V, 3) float32 blendshapes at weight 1
    expr_names: tuple[str, ...]  # (B,) ARKit names, `_L` / `_R` = the subject's left / right
    landmarks68: np.ndarray  # (68,) int64 vertices of the iBUG 68 landmarks
    narrow_face: int  # vertices [0, narrow_face) are ICT's "narrow face area"

    def identity(self, weights: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """A person's neutral face (V, 3) float32 mm from identity weights (I,) and a size
        factor."""
        return (scale * (self.neutral + np.einsum("i,ivc->vc", weights, self.id_basis))
                ).astype(np.float32)

    def express(self, identity: np.ndarray, blend: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """That face (V, 3) with blendshape weights (B,) applied (the deltas scale with the
        face)."""
        deltas = np.einsum("b,bvc->vc", blend, self.expr_basis)  # (V, 3)
        return (identity + scale * deltas).astype(np.float32)

    def blendshape(self, name: str) -> int:
        """Index of a blendshape by its ARKit name; ValueError naming the known ones otherwise."""
        if name not in self.expr_names:
            raise ValueError(f"unknown blendshape {name!r}; the model has {list(self.expr_names)}")
        return self.expr_names.index(name)


@lru_cache(maxsize=2)
def load_face_model(path: str | Path = ASSET) -> FaceModel:
    """Load the ICT-FaceKit asset (float16 deltas become float32 mm; ~15 MB in memory).

    Raises:
        FileNotFoundError: the asset is missing (it ships inside the package).
        ValueError: the file lacks an array the model needs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the ICT-FaceKit face model is missing from the package")
    with np.load(path) as data:
        missing = {"neutral", "faces", "id_deltas", "expr_deltas", "expr_names", "landmarks68",
                   "narrow_face"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}")
        return FaceModel(
            neutral=data["neutral"].astype(np.float32) * CM_TO_MM,
            faces=data["faces"].astype(np.int64),
            id_basis=data["id_deltas"].astype(np.float32) * CM_TO_MM,
            expr_basis=data["expr_deltas"].astype(np.float32) * CM_TO_MM,
            expr_names=tuple(str(n) for n in data["expr_names"]),
            landmarks68=data["landmarks68"].astype(np.int64),
            narrow_face=int(data["narrow_face"]))


# --- people ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Subject:
    """One generated person: metadata, identity and appearance (fixed across their scans)."""

    sex: str  # "female" | "male"
    age_group: str  # "young" | "middle-aged" | "older"
    ethnicity: str  # BU-3DFE code, a key of ETHNICITIES
    id_weights: np.ndarray  # (I,) identity mode weights
    scale: float  # overall size factor of the face
    skin: tuple[float, float, float]  # base skin tone, RGB in [0, 1]
    seed: int  # seeds the skin's blemishes, brows and stubble (appearance only)

    def metadata(self) -> dict[str, str]:
        """What a prompt or a subjects.csv row says about the person."""
        return {"sex": self.sex, "age_group": self.age_group, "ethnicity": self.ethnicity}


def _sex_direction(model: FaceModel) -> np.ndarray:
    """(I,) unit direction in identity space along which faces get wider-jawed, longer, with a
    stronger brow ridge and nose: the measurable differences between male and female faces
    (anthropometry), each a linear function of the identity weights."""
    lm, basis = model.landmarks68, model.id_basis
    grads = [basis[:, lm[12], 0] - basis[:, lm[4], 0],  # jaw width
             basis[:, lm[27], 1] - basis[:, lm[8], 1],  # nasion-to-chin height
             basis[:, lm[[19, 24]], 2].mean(1) - basis[:, lm[[37, 44]], 2].mean(1),  # brow ridge
             basis[:, lm[30], 2] - basis[:, lm[[31, 35]], 2].mean(1)]  # nose projection
    direction = sum(g / np.linalg.norm(g) for g in grads)
    return direction / np.linalg.norm(direction)


def sample_subject(rng: np.random.Generator, model: FaceModel | None = None) -> Subject:
    """Draw a person. Our heuristics make the metadata consistent with the face:

    - sex (56 % female, as BU-3DFE): the identity is shifted by +-1 standard deviation along
      `_sex_direction`, and the face scaled by 0.96 (female) or 1.04 (male), +-3 %;
    - ethnicity (BU-3DFE's codes and mix): sets the skin tone, +-8 % brightness per person;
    - age group (60 % young, as the database skews): ages the skin (`albedo`), not the shape --
      ICT's identity space has no labelled age direction.

    Args:
        rng: the only source of randomness.
        model: the face model (default: the packaged one).
    Returns:
        a `Subject`.
    """
    model = model or load_face_model()
    sex = SEXES[int(rng.random() < 0.44)]
    age = AGE_GROUPS[rng.choice(len(AGE_GROUPS), p=(0.6, 0.3, 0.1))]
    codes = list(ETHNICITIES)
    ethnicity = codes[rng.choice(len(codes), p=[ETHNICITIES[c][0] for c in codes])]
    sign = 1.0 if sex == "male" else -1.0
    weights = rng.standard_normal(len(model.id_basis)) + sign * _sex_direction(model)
    scale = (1.0 + 0.04 * sign) * (1.0 + 0.03 * float(np.clip(rng.standard_normal(), -2, 2)))
    tone = np.array(ETHNICITIES[ethnicity][1]) * np.exp(0.08 * rng.standard_normal())
    tone *= np.exp(0.03 * rng.standard_normal(3))  # a little more red, yellow or olive
    return Subject(sex=sex, age_group=age, ethnicity=ethnicity, id_weights=weights, scale=scale,
                   skin=tuple(float(c) for c in np.clip(tone, 0.05, 0.98)),
                   seed=int(rng.integers(2**31)))


# --- landmarks ------------------------------------------------------------------------------

def boundary_vertices(faces: np.ndarray) -> np.ndarray:
    """Vertices on a border or hole of a triangle mesh (on an edge used by exactly one triangle)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return np.unique(unique[counts == 1])


def _nearest(points: np.ndarray, verts: np.ndarray, candidates: np.ndarray, dims=slice(0, 3)
             ) -> list[int]:
    """For each target (T, 3), the candidate vertex nearest to it (in `dims`: xyz, or xy only)."""
    d = ((verts[candidates][None, :, dims] - points[:, None, dims]) ** 2).sum(-1)  # (T, C)
    return candidates[d.argmin(axis=1)].tolist()


def _resample(polyline: np.ndarray, count: int) -> np.ndarray:
    """`count` points evenly spaced by arc length along a (P, 3) polyline."""
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(polyline, axis=0), axis=1))]
    at = np.linspace(0.0, lengths[-1], count)
    return np.stack([np.interp(at, lengths, polyline[:, c]) for c in range(3)], axis=1)


@lru_cache(maxsize=2)
def bnd_landmarks(model: FaceModel | None = None) -> np.ndarray:
    """The 83 BU-3DFE landmarks as vertex indices of the model (table in the module docstring).

    Picked once on the generic neutral face from ICT's iBUG 68: eye points snap to the vertices
    of the eye openings, lid midpoints halfway between two iBUG lid points; brow contours are the
    iBUG brow points moved 4 mm up / down; nose sides and the contour are placed relative to
    iBUG points and snapped in the frontal (x, y) plane, so they land on the front surface.

    Returns:
        (83,) int64 vertex indices, the same for every identity and expression.
    """
    model = model or load_face_model()
    verts, p = model.neutral, model.neutral[model.landmarks68]  # (V, 3), (68, 3)
    front = np.arange(model.narrow_face)
    rim = boundary_vertices(model.faces)
    eye_rim = lambda eye: rim[np.linalg.norm(verts[rim] - p[eye].mean(0), axis=1) < 25]
    up, mid = np.array([0.0, 4.0, 0.0]), lambda a, b: (p[a] + p[b]) / 2
    out: list[int] = []
    for eye, (inner, u1, u2, outer, l1, l2) in (
            (range(36, 42), (39, 38, 37, 36, 41, 40)), (range(42, 48), (42, 43, 44, 45, 46, 47))):
        targets = [p[inner], p[u1], mid(u1, u2), p[u2], p[outer], p[l1], mid(l1, l2), p[l2]]
        out += _nearest(np.array(targets), verts, eye_rim(eye))
    for brow in ([21, 20, 19, 18, 17], [22, 23, 24, 25, 26]):  # inner -> outer
        out += _nearest(np.r_[p[brow] + up, p[brow[::-1]] - up], verts, front)
    for side, nostril in ((-1.0, 31), (1.0, 35)):
        dx = np.array([side, 0.0, 0.0])
        targets = [p[28] + 7 * dx, p[29] + 9 * dx, (p[30] + p[nostril]) / 2 + 3 * dx,
                   p[nostril] + 5 * dx + up / 2, p[nostril]]
        out += _nearest(np.array(targets), verts, front, dims=slice(0, 2))
    out += [int(model.landmarks68[30]), int(model.landmarks68[33])]  # nose tip, subnasale
    out += model.landmarks68[48:68].tolist()  # the lips are iBUG's 20 points, in the same order
    temple = np.array([0.0, p[17, 1] - p[0, 1], 0.0])  # iBUG's contour starts at ear level
    contour = np.r_[p[[0]] + temple, p[0:17], p[[16]] + temple]
    out += _nearest(_resample(contour, 15), verts, front, dims=slice(0, 2))
    return np.asarray(out, dtype=np.int64)


# --- skin -----------------------------------------------------------------------------------

@lru_cache(maxsize=2)
def uv_layout(model: FaceModel | None = None) -> np.ndarray:
    """(V, 2) float32 texture coordinates: the generic face seen from the front, mapped into
    [0.02, 0.98]^2 (u to the subject's left, v up), like a frontal photograph of the face."""
    model = model or load_face_model()
    xy = model.neutral[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    return (0.02 + 0.96 * (xy - lo) / (hi - lo).max()).astype(np.float32)


@lru_cache(maxsize=4)
def texel_faces(size: int, model: FaceModel | None = None) -> np.ndarray:
    """(S, S) int64: the model triangle under each texel (-1: none), the mesh rasterized in uv
    space, the front-most surface winning where the frontal projection folds (under the nose).
    Row 0 is v = 1, the image's top: `facet.raster` puts NDC y = +1 on row 0, VRML v = 1 there.
    """
    model = model or load_face_model()
    uv = torch.from_numpy(uv_layout(model))
    z = torch.from_numpy(model.neutral[:, 2])
    depth = 0.9 - 1.8 * (z - z.min()) / (z.max() - z.min())  # NDC z: nearer is smaller
    clip = torch.cat([2 * uv - 1, depth[:, None], torch.ones(len(uv), 1)], 1)  # (V, 4)
    return rasterize(clip[None], torch.from_numpy(model.faces), size).pix_to_face[0].numpy()


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(S, S) float32 smooth noise, about N(0, 1): a cells x cells Gaussian grid, upsampled."""
    from PIL import Image  # Pillow comes with matplotlib

    grid = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size, size), Image.BICUBIC))


def _near(points_uv: np.ndarray, size: int, width: float) -> np.ndarray:
    """(S, S) in [0, 1]: 1 on the polyline through (P, 2) uv points, fading over `width`."""
    yy, xx = np.mgrid[0:size, 0:size]
    texel = np.stack([(xx + 0.5) / size, 1 - (yy + 0.5) / size], -1)  # (S, S, 2) uv of a texel
    dist = np.full((size, size), np.inf)
    for a, b in zip(points_uv[:-1], points_uv[1:]):
        t = np.clip(((texel - a) @ (b - a)) / max(float((b - a) @ (b - a)), 1e-12), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(texel - a - t[..., None] * (b - a), axis=-1))
    return np.exp(-0.5 * (dist / width) ** 2)


@lru_cache(maxsize=4)
def _skin_regions(size: int, model: FaceModel) -> dict[str, np.ndarray]:
    """(S, S) masks in [0, 1] of the atlas regions skin colour depends on, from the landmarks
    (the same for everyone: the atlas is the generic face's)."""
    uv = uv_layout(model)[bnd_landmarks(model)]  # (83, 2) landmark positions in the atlas
    cheek = lambda lid, corner, side: (uv[lid] + uv[corner]) / 2 + [side * 0.03, 0.0]
    return {
        "lips": np.clip(_near(np.r_[uv[48:60], uv[[48]]], size, 0.012)
                        + _near(uv[60:68], size, 0.01), 0, 1),
        "cheeks": (_near(np.stack([cheek(6, 48, -1)] * 2), size, 0.06)
                   + _near(np.stack([cheek(14, 54, 1)] * 2), size, 0.06)),
        "under_eye": _near(uv[5:8] - [0, 0.02], size, 0.015) + _near(uv[13:16] - [0, 0.02],
                                                                      size, 0.015),
        "brows": (_near((uv[16:21] + uv[25:20:-1]) / 2, size, 0.013)  # between the contours
                  + _near((uv[26:31] + uv[35:30:-1]) / 2, size, 0.013)),
        "beard": _near(np.r_[uv[70:81], uv[[48, 51, 54]]], size, 0.05),
    }


def albedo(subject: Subject, size: int = 256, model: FaceModel | None = None) -> np.ndarray:
    """A subject's skin colour (S, S, 3) float32 in [0, 1], in the `uv_layout` atlas.

    Base tone with blotchy variation, redder lips and cheeks, brows of the subject's hair colour
    (and stubble on some men), darker skin under the eyes and more blemishes with age, and a fine
    grain like pores.
    """
    model = model or load_face_model()
    rng = np.random.default_rng(subject.seed)
    region = _skin_regions(size, model)
    aged = {"young": 0.0, "middle-aged": 0.5, "older": 1.0}[subject.age_group]
    skin = np.array(subject.skin) * (1 + (0.04 + 0.03 * aged) * _noise(rng, size, 12))[..., None]
    redden = lambda amount: 1 - amount[..., None] * np.array([0.0, 0.3, 0.25])  # less G and B
    skin *= redden((0.5 + 0.3 * rng.random()) * region["lips"] + 0.25 * region["cheeks"])
    skin *= (1 - (0.06 + 0.1 * aged) * region["under_eye"])[..., None]
    hair = np.array([0.25, 0.18, 0.12]) * (0.4 + 1.2 * rng.random())  # brow colour
    hairs = np.clip(region["brows"] * (0.8 + 0.25 * rng.standard_normal((size, size))), 0, 1)
    skin = skin * (1 - 0.8 * hairs[..., None]) + 0.8 * hairs[..., None] * hair
    if subject.sex == "male" and rng.random() < 0.4:  # stubble on the chin, jaw and upper lip
        skin *= (1 - 0.2 * region["beard"])[..., None]
    skin *= (1 + (0.02 + 0.02 * aged) * rng.standard_normal((size, size)))[..., None]
    return np.clip(skin, 0, 1).astype(np.float32)


def texture_image(skin: np.ndarray, verts: np.ndarray, light: np.ndarray,
                  model: FaceModel | None = None) -> np.ndarray:
    """The skin (S, S, 3) lit by one directional light on this face (V, 3): a scan's photo.

    Each texel is lit by the normal of the triangle it lies in (ambient + Lambert), so the
    shape of this expression -- a bunched cheek, a wrinkled nose -- shades the photo.

    Args:
        skin: `albedo` of the subject.
        verts: the expressed face in model vertex order.
        light: (3,) unit direction toward the light, in the face's frame.
    Returns:
        (S, S, 3) uint8; texels outside the face stay black, as a photo's background.
    """
    model = model or load_face_model()
    face = texel_faces(len(skin), model)
    a, b, c = (verts[model.faces[:, k]] for k in range(3))  # (F, 3) each
    normals = np.cross(b - a, c - a)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12  # (F, 3)
    lit = 0.35 + 0.75 * np.clip(normals @ light, 0, None)  # (F,) ambient + Lambert
    shade = np.where(face >= 0, lit[np.maximum(face, 0)], 0.0)  # (S, S)
    return (np.clip(skin * shade[..., None], 0, 1) * 255).round().astype(np.uint8)
