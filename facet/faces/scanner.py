"""The scanner: a face of the morphable model -> one scan, as a structured-light scanner
would give it.

Between the face model (`facet.faces.face_model`, `facet.faces.expressions`) and the dataset writers
(`facet.faces.synth`). Each scan (`scan`, `scan_sequence`) gets its own crop (an oval from brow to
chin and ear to ear with a ragged border; whatever the scanner sees too obliquely is lost), a
head pose of a few degrees, sub-millimetre noise along the view axis, occasional small holes,
and its own triangulation (some triangles split, vertices and triangles shuffled), so no reader
can rely on a fixed topology. Open eyes and mouths are holes, as in real scans. `realism=False`
switches all of that off (a frontal, noiseless, complete face) for the generator's ablation.
Frames of one sequence share a triangulation, so per-vertex motion stays measurable, unless
`crop_per_frame` scans each on its own, as BU-4DFE's scanner did.
`range_grid` turns a scan into the range image a Bosphorus `.bnt` stores.

Shapes: V model vertices, N scan vertices, F scan triangles, T frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from facet.data.layouts import NEUTRAL
from facet.faces.expressions import AUs, blend_weights, expression_aus
from facet.faces.face_model import (NOSE_TIP, FaceModel, Subject, albedo, bnd_landmarks,
                                    load_face_model, sample_subject, texture_image, uv_layout)
from facet.mesh import Mesh
from facet.raster import rasterize
from facet.render import interpolate, vertex_normals


@dataclass(frozen=True)
class Topology:
    """How a scan's mesh is made from the model's vertices: scan vertex n is the weighted sum
    of model vertices sources[n] (a vertex itself, or the centre of a split triangle)."""

    sources: np.ndarray  # (N, 3) int64 model vertices
    weights: np.ndarray  # (N, 3) float32 their weights, summing to 1
    faces: np.ndarray  # (F, 3) int64 scan triangles, counter-clockwise seen from the front
    landmarks: np.ndarray  # (83,) int64 scan vertices of the BU-3DFE landmarks

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Model-vertex quantities (V, C) -> scan-vertex quantities (N, C)."""
        return np.einsum("nk,nkc->nc", self.weights, points[self.sources])


@lru_cache(maxsize=2)
def _template_normals(model: FaceModel) -> np.ndarray:
    """(V, 3) unit normals of the generic neutral face."""
    return vertex_normals(torch.from_numpy(model.neutral), torch.from_numpy(model.faces)).numpy()


# The scanner's crop, drawn per scan from these ranges: the oval's half width, its top above
# and its bottom below the nose tip (mm; the brows are at ~60 above, the chin at ~80 below),
# and the steepest surface still measured (degrees from the view axis).
CROP_RANGES = {"half_width": (68.0, 84.0), "top": (72.0, 100.0), "bottom": (78.0, 90.0),
               "steepest": (72.0, 85.0)}


@lru_cache(maxsize=2)
def _polar(model: FaceModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every model vertex seen from the nose tip in the frontal plane of the generic face: its
    angle, its distance and whether it lies above, each (V,). Cached: every crop reads them."""
    x, y, _ = (model.neutral - model.neutral[model.landmarks68[30]]).T
    return np.arctan2(y, x), np.hypot(x, y), y > 0


def _oval(model: FaceModel, half_width: float, top: float, bottom: float) -> np.ndarray:
    """(V,) the radius, at each model vertex's angle (`_polar`), of an oval around the nose tip
    reaching `top` above it, `bottom` below and `half_width` to either side."""
    angle, _, above = _polar(model)
    b = np.where(above, top, bottom)
    return 1 / np.sqrt((np.cos(angle) / half_width) ** 2 + (np.sin(angle) / b) ** 2)


def crop_outline(model: FaceModel, rng: np.random.Generator) -> np.ndarray:
    """A scanner's crop outline for one take: (V,) the radius of an oval at each model vertex's
    angle (in the frontal plane of the generic face, from the nose tip), its size drawn from
    `CROP_RANGES` and its outline bent by a few low harmonics."""
    angle = _polar(model)[0]
    oval = _oval(model, *(rng.uniform(*CROP_RANGES[key]) for key in ("half_width", "top", "bottom")))
    for k in range(2, 6):  # a bent outline: each take's crop has its own shape
        oval *= 1 + rng.normal(0, 0.025) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return oval


def crop_mask(model: FaceModel, rng: np.random.Generator | None,
              outline: np.ndarray | None = None, steepest: float | None = None) -> np.ndarray:
    """(V,) bool: the model vertices one scan keeps.

    With an rng: inside a `crop_outline` ragged by 1.5 mm of per-vertex jitter; surfaces seen
    more obliquely than a steepest angle (degrees from the view axis) are lost (the sides,
    under the chin); and a few small holes (Poisson, mean 0.5; radius 2-6 mm). The outline and
    the angle are drawn here (from `CROP_RANGES`), or given: the frames of one take share them.
    Without an rng: ICT's narrow face area.
    """
    if rng is None:
        return np.arange(len(model.neutral)) < model.narrow_face
    oval = crop_outline(model, rng) if outline is None else outline
    radius = _polar(model)[1]  # (V,) distance from the nose tip
    keep = radius < oval + rng.normal(0, 1.5, len(radius))
    if steepest is None:
        steepest = rng.uniform(*CROP_RANGES["steepest"])
    keep &= _template_normals(model)[:, 2] > np.cos(np.radians(steepest))
    for _ in range(rng.poisson(0.5)):  # hair, shine or shadow: no measurement
        centre = model.neutral[rng.choice(np.flatnonzero(keep))]
        keep &= np.linalg.norm(model.neutral - centre, axis=1) > rng.uniform(2, 6)
    return keep


def typical_crop(model: FaceModel) -> np.ndarray:
    """(V,) bool: the crop of a typical scan, the middle of every `CROP_RANGES` range with a
    smooth outline and no holes (what `demo_face` keeps)."""
    middle = {key: sum(bounds) / 2 for key, bounds in CROP_RANGES.items()}
    oval = _oval(model, middle["half_width"], middle["top"], middle["bottom"])
    steep = _template_normals(model)[:, 2] <= np.cos(np.radians(middle["steepest"]))
    return (_polar(model)[1] < oval) & ~steep


def scan_topology(model: FaceModel, rng: np.random.Generator | None,
                  split_fraction: tuple[float, float] = (0.05, 0.2),
                  keep: np.ndarray | None = None) -> Topology:
    """A scan's triangulation: `crop_mask` (or the model vertices `keep`, (V,) bool), then (with
    an rng) a fraction of the triangles (drawn from `split_fraction`) split at their centre, and
    vertices, triangles and corners shuffled.

    Returns:
        a `Topology` (without an rng: the kept vertices in model order).
    """
    keep = crop_mask(model, rng) if keep is None else keep
    faces = model.faces[keep[model.faces].all(axis=1)]  # (F0, 3) model vertex ids
    split = np.zeros(len(faces), bool)
    if rng is not None:
        split[rng.choice(len(faces), int(rng.uniform(*split_fraction) * len(faces)), False)] = True
    used = np.unique(faces)
    index = np.full(len(model.neutral), -1)
    index[used] = np.arange(len(used))
    centres = len(used) + np.arange(split.sum())  # new scan vertices, one per split triangle
    a, b, c = index[faces[split]].T
    scan_faces = np.r_[index[faces[~split]], np.c_[a, b, centres], np.c_[b, c, centres],
                       np.c_[c, a, centres]]  # (F, 3): each split triangle became three
    sources = np.r_[np.repeat(used[:, None], 3, axis=1), faces[split]]  # (N, 3)
    weights = np.r_[np.tile([1.0, 0.0, 0.0], (len(used), 1)),
                    np.full((split.sum(), 3), 1 / 3)].astype(np.float32)  # (N, 3)
    wanted = bnd_landmarks(model)
    landmarks = index[wanted]
    for i in np.flatnonzero(landmarks < 0):  # in a hole: take the nearest measured vertex
        distance = np.linalg.norm(model.neutral[used] - model.neutral[wanted[i]], axis=1)
        landmarks[i] = distance.argmin()
    if rng is not None:  # shuffle: vertex n becomes order_inv[n]; corners rotate, winding kept
        order = rng.permutation(len(sources))
        sources, weights = sources[order], weights[order]
        inverse = np.argsort(order)
        scan_faces, landmarks = inverse[scan_faces], inverse[landmarks]
        scan_faces = scan_faces[rng.permutation(len(scan_faces))]
        turn = rng.integers(0, 3, len(scan_faces))[:, None]
        scan_faces = np.take_along_axis(scan_faces, (np.arange(3) + turn) % 3, axis=1)
    return Topology(sources, weights, scan_faces.astype(np.int64), landmarks.astype(np.int64))


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation from degrees: roll about z, then pitch about x, then yaw about y."""
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def random_pose(rng: np.random.Generator | None) -> np.ndarray:
    """(yaw, pitch, roll) degrees of a head in front of a scanner: sd 4, 4, 2, within 10."""
    return np.zeros(3) if rng is None else np.clip(rng.normal(0, [4.0, 4.0, 2.0]), -10, 10)


@dataclass
class Scan:
    """One generated scan: the mesh, which of its vertices are the 83 landmarks, ground truth."""

    mesh: Mesh  # mm, face toward +z; landmarks "bnd" (83, 3) and "nose_tip" (3,)
    landmarks: np.ndarray  # (83,) int64 vertex indices, as a .bnd file stores them
    truth: dict = field(default_factory=dict)  # JSON-able: aus per side, pose, subject metadata


@lru_cache(maxsize=4)
def _neutral_of(subject: Subject, model: FaceModel) -> np.ndarray:
    return model.identity(subject.id_weights, subject.scale)  # (V, 3), once per person


@lru_cache(maxsize=4)
def _skin_of(subject: Subject, size: int, model: FaceModel) -> np.ndarray:
    return albedo(subject, size, model)  # (S, S, 3), once per person


def _smoothstep(t: np.ndarray | float) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def scan_sequence(subject: Subject, frames: Sequence[AUs], rng: np.random.Generator | None = None,
                  realism: bool = True, texture_size: int = 0, head_motion: float = 2.0,
                  model: FaceModel | None = None, keep: np.ndarray | None = None,
                  crop_per_frame: bool = False) -> list[Scan]:
    """Scan a person through a sequence of expressions (one `AUs` per frame).

    With `realism` and an rng: one triangulation for the whole sequence (`scan_topology`), a head
    pose that drifts smoothly from a `random_pose` by `head_motion` degrees (sd per axis) and
    1 mm, noise along the view axis (a per-sequence pattern, sd 0.05-0.25 mm, plus 0.05 mm fresh
    every frame) and a light from the front-above. Without: the narrow face area in model order,
    frontal, noiseless, frontally lit. With `crop_per_frame` every frame is scanned on its own,
    as a 4D scanner that reconstructs each frame gives them (BU-4DFE's frames differ in vertex
    count): one crop outline and steepest angle for the take, but each frame its own ragged
    border, holes, triangulation, vertex order and noise pattern: no vertex is shared. Those
    draws come from a stream of their own, so the face, its poses and light are the same.

    Args:
        subject: the person (`facet.faces.face_model.sample_subject`).
        frames: the action units of each frame (`facet.faces.expressions`); [aus] for a static scan.
        rng: the scan's randomness (required with `realism`).
        realism: the scanner effects above.
        texture_size: side of the texture image; 0 = no texture and no uv.
        head_motion: sd of the pose change over the sequence, degrees.
        model: the face model (default: the packaged one).
        keep: (V,) bool model vertices to keep instead of the scan's own crop (`crop_mask`).
        crop_per_frame: each frame its own crop and triangulation (with `realism`).
    Returns:
        one `Scan` per frame; their truth holds "aus" (au -> [left, right]) and "pose".
    Raises:
        ValueError: `realism` without an rng, or an unknown AU.
    """
    if realism and rng is None:
        raise ValueError("scan_sequence: realism=True needs an rng (or pass realism=False)")
    model = model or load_face_model()
    scanner = rng if realism else None
    topology = scan_topology(model, scanner, keep=keep)
    start = random_pose(scanner)
    motion = np.zeros(3) if scanner is None else rng.normal(0, head_motion, 3)
    drift = np.zeros(3) if scanner is None else rng.normal(0, 1.0, 3)  # mm
    pattern_sd = 0.0 if scanner is None else rng.uniform(0.05, 0.25)
    pattern = np.zeros(len(topology.sources)) if scanner is None else \
        rng.normal(0, pattern_sd, len(topology.sources))
    light = np.array([0.0, 0.3, 1.0]) + (0 if scanner is None else rng.normal(0, [0.35, 0.2, 0]))
    # Scanning frames apart draws from a stream of its own (spawning leaves `rng` where it is),
    # and `rng` draws all it draws otherwise: the take shows the same face, poses, light and, in
    # a writer, the same expressions after it, whichever way its frames are scanned.
    apart = rng.spawn(1)[0] if crop_per_frame and scanner is not None else None
    take = None  # the take's crop outline and steepest angle, shared by its frames
    if apart is not None and keep is None:
        take = crop_outline(model, apart), apart.uniform(*CROP_RANGES["steepest"])
    skin = _skin_of(subject, texture_size, model) if texture_size else None
    neutral, tip = _neutral_of(subject, model), model.landmarks68[30]

    def uv_of(topology: Topology) -> np.ndarray | None:  # (N, 2) texture coordinates
        return np.round(topology.apply(uv_layout(model)), 4) if texture_size else None

    uv, scans, count = uv_of(topology), [], len(topology.sources)
    for t, aus in enumerate(frames):
        # fresh every frame; drawn from `rng` even when scanned apart, to keep its stream
        noise = None if scanner is None else rng.normal(0, 0.05, count)
        if apart is not None:  # this frame's own scan of the take: border, holes, triangles
            topology = scan_topology(model, apart, keep=keep if take is None
                                     else crop_mask(model, apart, *take))
            pattern, uv = apart.normal(0, pattern_sd, len(topology.sources)), uv_of(topology)
            noise = apart.normal(0, 0.05, len(topology.sources))
        along = float(_smoothstep(t / max(len(frames) - 1, 1)))
        pose = start + along * motion
        face = model.express(neutral, blend_weights(aus, model), subject.scale)  # (V, 3)
        verts = (topology.apply(face) - face[tip]) @ rotation(*pose).T + face[tip] + along * drift
        if scanner is not None:
            verts[:, 2] += pattern + noise  # along the view axis
        verts = verts.astype(np.float32)
        texture = None if skin is None else texture_image(skin, face, light / np.linalg.norm(light),
                                                          model)
        points = verts[topology.landmarks]  # (83, 3)
        mesh = Mesh(verts, topology.faces, uv=uv, texture=texture,
                    landmarks={"bnd": points, "nose_tip": points[NOSE_TIP]})
        truth = {"aus": {str(au): [round(l, 3), round(r, 3)] for au, (l, r) in sorted(aus.items())},
                 "pose": [round(float(a), 2) for a in pose]}
        scans.append(Scan(mesh, topology.landmarks, truth))
    return scans


def scan(subject: Subject, aus: AUs, rng: np.random.Generator | None = None, realism: bool = True,
         texture_size: int = 256, model: FaceModel | None = None,
         keep: np.ndarray | None = None) -> Scan:
    """One static scan of a person showing any combination of action units (`scan_sequence`
    with one frame: its own crop, pose, noise, holes and triangulation)."""
    return scan_sequence(subject, [aus], rng, realism, texture_size, model=model, keep=keep)[0]


def face_mesh(subject: Subject, aus: AUs | None = None, texture_size: int = 256,
              model: FaceModel | None = None, keep: np.ndarray | None = None) -> Mesh:
    """The clean face of a person with these AUs (no scanner effects), frontal: ICT's narrow face
    area, or the model vertices `keep` ((V,) bool, e.g. `typical_crop`)."""
    return scan(subject, aus or {}, None, realism=False, texture_size=texture_size,
                model=model, keep=keep).mesh


def demo_face(emotion: str = "happiness", intensity: int = 4, seed: int = 0) -> Mesh:
    """A ready-made face for demos and pictures: person `seed`, the exact prototype, textured,
    cropped as a typical scan (`typical_crop`) but without its pose, noise and holes. Intensity
    is ignored for "neutral".

    Its landmarks are what its scan files give back (`save_wrl` and `save_bnd`, then
    `load_mesh`): the 83 "bnd" points, no "nose_tip"; so in memory it is centred as on disk and
    as the training scans are (`facet.mesh.normalize`: the bounding-box centre without a nose
    tip). ICT's whole narrow face area (199 mm tall against a scan's ~165) centred on the nose
    tip is unlike any training scan: README, Results, measures what each of the two changed.
    """
    subject = sample_subject(np.random.default_rng(seed))
    level = 0 if emotion == NEUTRAL else intensity
    model = load_face_model()
    mesh = face_mesh(subject, expression_aus(emotion, level), model=model,
                     keep=typical_crop(model))
    return replace(mesh, landmarks={"bnd": mesh.landmarks["bnd"]})


def range_grid(mesh: Mesh, step: float = 1.5) -> dict[str, np.ndarray]:
    """A scan as a range image, the way a Bosphorus `.bnt` stores it: the mesh seen along -z
    (orthographic), sampled every `step` mm; the front-most surface wins.

    Returns:
        "x", "y", "z", "u", "v": (R, C) float64 grids, row 0 at the top, with "covered" (R, C)
        bool; u, v are the texture coordinates (the grid position when the mesh has none).
    """
    lo, hi = mesh.verts.min(axis=0), mesh.verts.max(axis=0)
    cols, rows = (np.ceil((hi[:2] - lo[:2]) / step).astype(int) + 1).tolist()
    x, y, z = mesh.verts.T.astype(np.float64)
    clip = np.stack([(x - lo[0] + step / 2) / (cols * step) * 2 - 1,
                     (y - lo[1] + step / 2) / (rows * step) * 2 - 1,
                     0.9 - 1.8 * (z - lo[2]) / max(hi[2] - lo[2], 1e-6),  # nearer = smaller
                     np.ones_like(x)], axis=1)  # (N, 4)
    faces = torch.from_numpy(mesh.faces)
    fragments = rasterize(torch.from_numpy(clip).float()[None], faces, (rows, cols))
    uv = mesh.uv if mesh.uv is not None and mesh.uv.ndim == 2 else np.c_[
        (x - lo[0]) / (hi[0] - lo[0]), (y - lo[1]) / (hi[1] - lo[1])]
    attrs = torch.from_numpy(np.c_[mesh.verts, uv].astype(np.float32))[faces]  # (F, 3, 5)
    grid = interpolate(fragments, attrs)[0].numpy().astype(np.float64)  # (R, C, 5)
    out = {name: grid[..., i] for i, name in enumerate("xyzuv")}
    out["covered"] = fragments.pix_to_face[0].numpy() >= 0
    return out
