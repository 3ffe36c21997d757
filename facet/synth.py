"""Synthetic 3D/4D expressive faces, written in the real dataset layouts (facet's default data).

Our own substitute for the licensed benchmarks: `facet.faceshape` gives each subject a parametric
neutral face, `facet.action_units` turns FACS action units into displacement fields, and this
module samples expressions, adds scan-like nuisance (head pose of a few degrees, scale, noise),
and writes files the real-data loaders read unchanged. Meshes are in mm, looking down +z, with
N ~ 10k vertices and F ~ 20k triangles, the same topology for every subject and frame.

Layouts (deterministic given `seed`; a subject's identity is fixed across its scans):
- BU-3DFE: `<root>/F0001/F0001_HA03WH_F3D.wrl` + `..._F3D.bnd` (83 landmarks): per subject a
  neutral `NE00` + 6 emotions x 4 intensities = 25 scans; sex and ethnicity code in the names.
- BU-4DFE: `<root>/F001/Happy/000.wrl` + `000.bnd` beside each frame (the real release keeps the
  .bnd files in a separate BND tree; beside is what `facet.mesh.load_mesh` picks up): 6
  sequences per subject at 25 fps going neutral -> onset -> apex -> offset -> neutral.
- 4DME-like (our layout; the real one is unverified): `<root>/S01/S01_C03/000.wrl` (+ `.bnd`)
  per frame and one index `<root>/labels.csv` with the columns
  `subject,clip,emotion,kind,sex,age_group,ethnicity,num_frames,onset,apex,offset,aus`
  (`kind` micro|macro; frames 0-based; `aus` like `6+12`). Classes as recalled for 4DME
  (unverified): positive, negative, surprise, repression, others. Micro clips last 0.2-0.5 s at
  low intensity; macro clips 0.8-1.6 s.
Each writer generates into a hidden temporary folder beside `root` and renames it into place, so
an interrupted run never looks complete.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facet.action_units import (PROTOTYPES, au_basis, au_vector,
                                expression_aus, stack_basis)
from facet.faceshape import Identity, face_grid, face_points, layout, sample_identity
from facet.meshio import save_bnd
from facet import layouts
from facet.layouts import EMOTIONS, NEUTRAL
from facet.mesh import Mesh
from facet.synth_landmarks import NOSE_TIP, landmark_indices
from facet.meshio import save_wrl

__all__ = ["EMOTIONS", "NEUTRAL", "Identity", "sample_identity", "expression_aus", "face_mesh",
           "demo_face", "write_bu3dfe", "write_bu4dfe", "write_4dme", "default_root",
           "ensure_dataset"]

# file-name codes, inverted from the readers' tables (facet.layouts is the one place for them)
BU3DFE_CODES = {name: code for code, name in layouts.BU3DFE_CODES.items()}
BU4DFE_FOLDERS = {name: folder for folder, name in layouts.BU4DFE_FOLDERS.items()}
MICRO_CLASSES = layouts.FOURDME_CLASSES
_MICRO_AUS = {"positive": [{12: 1.0}, {6: 0.6, 12: 1.0}], "surprise": [{1: 1.0, 2: 1.0, 5: 0.8}],
              "negative": [{4: 1.0, 7: 0.6}, {9: 0.8, 10: 0.6}, {1: 0.8, 4: 0.6, 15: 0.8}],
              "repression": [{17: 1.0, 24: 0.8}, {23: 0.8, 24: 0.8}],
              "others": [{1: 0.8, 2: 0.8}, {7: 1.0}, {15: 0.7}, {4: 0.6}]}
FPS = 25


@dataclass(frozen=True)
class _Subject:
    """What expressing one identity needs, computed once: neutral face, AU basis, landmarks."""

    neutral: np.ndarray  # (N, 3) float64 mm
    basis: np.ndarray  # (A, N, 3) float64 mm per unit AU weight
    landmarks: np.ndarray  # (83,) int64 vertex indices


@lru_cache(maxsize=8)
def _subject(identity: Identity) -> _Subject:
    frame = layout(identity)
    neutral = face_points(frame)
    return _Subject(neutral, stack_basis(au_basis(frame, neutral)), landmark_indices(frame, neutral))


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation from angles in degrees: roll about z, then pitch about x, then yaw about y."""
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def face_mesh(identity: Identity, aus: dict[int, float] | None = None,
              rng: np.random.Generator | None = None, jitter: bool = True,
              pose: tuple[float, float, float] | None = None,
              scale: float | None = None) -> Mesh:
    """One synthetic face scan.

    Args:
        identity: the subject (`sample_identity`).
        aus: action unit -> weight (about 0..1; see `facet.action_units.AUS`); {} is neutral.
        rng: source of the scan nuisance; None gives the exact, un-jittered face.
        jitter: with an rng, add head pose (a few degrees), scale (~3%) and depth noise (~0.1 mm).
        pose: (yaw, pitch, roll) degrees to use instead of a random pose (4D sequences).
        scale: the scale factor to use instead of a random one (4D sequences: one scanner
            calibration per sequence, or the scale jitter would swamp the expression's motion).
    Returns:
        a `Mesh` (N ~ 10k vertices, F ~ 20k triangles, mm) with landmarks "bnd" (83, 3) and
        "nose_tip" (3,).
    """
    subject = _subject(identity)
    weights = au_vector(aus or {}) * identity.expressiveness  # (A,)
    verts = subject.neutral + np.einsum("a,anc->nc", weights, subject.basis)  # (N, 3)
    if rng is not None and jitter:
        tip = verts[subject.landmarks[NOSE_TIP]]
        angles = pose if pose is not None else np.clip(rng.normal(0, [3.0, 3.0, 2.0]), -7, 7)
        if scale is None:
            scale = _scale_jitter(rng)
        verts = scale * (verts - tip) @ _rotation(*angles).T + tip
        verts[:, 2] += rng.normal(0, 0.1, len(verts))  # scanner noise along the view axis
    verts = verts.astype(np.float32)
    points = verts[subject.landmarks]  # (83, 3)
    return Mesh(verts, face_grid().faces, landmarks={"bnd": points, "nose_tip": points[NOSE_TIP]})


def _scale_jitter(rng: np.random.Generator) -> float:
    """A scan's scale factor: ~3% calibration error, bounded at 8%."""
    return 1.0 + float(np.clip(rng.normal(0, 0.03), -0.08, 0.08))


def demo_face(emotion: str = "happiness", intensity: int = 4, seed: int = 0) -> Mesh:
    """A ready-made face for demos and renders: subject `seed`, the prototype expression, no jitter."""
    identity = sample_identity(np.random.default_rng(seed))
    return face_mesh(identity, expression_aus(emotion, intensity if emotion != NEUTRAL else 0))


def _save(mesh: Mesh, stem: Path, landmarks: np.ndarray) -> None:
    """Write `<stem>.wrl` (0.01 mm precision keeps the file small) and `<stem>.bnd`."""
    rounded = Mesh(np.round(mesh.verts, 2), mesh.faces)
    save_wrl(rounded, stem.with_suffix(".wrl"))
    save_bnd(landmarks, rounded.verts[landmarks], stem.with_suffix(".bnd"))


def _atomic_dir(root: Path):
    """A fresh temporary folder beside `root`; `_publish` renames it to `root` when complete."""
    if root.exists():
        raise FileExistsError(f"{root} already exists; remove it or choose another --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, root: Path) -> Path:
    os.replace(tmp, root)
    return root


def _subjects(count: int, seed: int, width: int) -> list[tuple[str, Identity]]:
    """(subject id like F0001, identity) for `count` subjects; F and M numbered separately."""
    if count < 1:
        raise ValueError(f"subjects must be >= 1, got {count}")
    numbers = {"female": 0, "male": 0}
    out = []
    for k in range(count):
        identity = sample_identity(np.random.default_rng([seed, k]))
        numbers[identity.sex] += 1
        out.append((f"{identity.sex[0].upper()}{numbers[identity.sex]:0{width}d}", identity))
    return out


def _write_subjects_csv(folder: Path, people: list[tuple[str, Identity]]) -> None:
    """`subjects.csv`: the metadata the file names do not carry (age group), for augmented prompts."""
    rows = ["subject,sex,age_group,ethnicity"]
    rows += [f"{sid},{p.sex},{p.age_group},{p.ethnicity}" for sid, p in people]
    (folder / "subjects.csv").write_text("\n".join(rows) + "\n")


def write_bu3dfe(root: str | Path, subjects: int = 60, seed: int = 0, progress: bool = False) -> Path:
    """Write a BU-3DFE-like static set: per subject NE00 + 6 emotions x intensities 01-04.

    Args:
        root: the dataset folder to create (must not exist).
        subjects: number of subjects (BU-3DFE has 100; its protocol uses 60).
        seed: everything is a deterministic function of it.
        progress: show a tqdm bar.
    Returns:
        `root`.
    """
    root = Path(root)
    tmp = _atomic_dir(root)
    people = _subjects(subjects, seed, width=4)
    bar = tqdm(total=25 * len(people), desc="bu3dfe", unit="scan", disable=not progress)
    for k, (sid, identity) in enumerate(people):
        folder = tmp / sid
        folder.mkdir()
        rng = np.random.default_rng([seed, k, 1])
        scans = [(NEUTRAL, 0)] + [(e, i) for e in EMOTIONS for i in range(1, 5)]
        for emotion, level in scans:
            mesh = face_mesh(identity, expression_aus(emotion, level, rng), rng)
            name = f"{sid}_{BU3DFE_CODES[emotion]}{level:02d}{identity.ethnicity}_F3D"
            _save(mesh, folder / name, _subject(identity).landmarks)
            bar.update()
    bar.close()
    _write_subjects_csv(tmp, people)
    return _publish(tmp, root)


def _envelope(num_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Activation (T,) in [0, 1]: neutral -> onset -> apex -> offset -> neutral, smooth ramps.

    Returns the curve and the (onset, apex, offset) frame indices (start of rise, apex start,
    end of fall), with timings drawn at random so apex position and duration vary.
    """
    t = np.arange(num_frames) / max(num_frames - 1, 1)
    on, peak = rng.uniform(0.08, 0.2), rng.uniform(0.3, 0.45)
    hold, off = rng.uniform(0.5, 0.65), rng.uniform(0.8, 0.95)
    ramp = lambda a, b: np.clip((t - a) / (b - a), 0, 1)
    curve = ramp(on, peak) - ramp(hold, off)
    curve = curve * curve * (3 - 2 * curve)  # smoothstep: no kinks at onset and apex
    frames = (int(on * (num_frames - 1)), int(peak * (num_frames - 1)), int(off * (num_frames - 1)))
    return curve, frames


def _sequence(identity: Identity, aus: dict[int, float], num_frames: int, rng: np.random.Generator,
              stem_of, landmarks: np.ndarray) -> tuple[int, int, int]:
    """Write one sequence's frames; the head drifts a little, noise is fresh every frame."""
    curve, frames = _envelope(num_frames, rng)
    start, drift = rng.normal(0, [3.0, 3.0, 2.0]), rng.normal(0, 1.0, 3)
    scale = _scale_jitter(rng)  # one per sequence; the noise below is fresh every frame
    for f, a in enumerate(curve):
        pose = tuple(start + drift * f / max(num_frames - 1, 1))
        mesh = face_mesh(identity, {au: w * a for au, w in aus.items()}, rng, pose=pose,
                         scale=scale)
        _save(mesh, stem_of(f), landmarks)
    return frames


def write_bu4dfe(root: str | Path, subjects: int = 4, seed: int = 0,
                 seconds: tuple[float, float] = (1.2, 2.0), progress: bool = False) -> Path:
    """Write a BU-4DFE-like dynamic set: per subject 6 sequences at 25 fps (see module docstring).

    Args:
        root: the dataset folder to create (must not exist).
        subjects: number of subjects (BU-4DFE has 101; frames are many files, keep it small).
        seed: everything is a deterministic function of it.
        seconds: (min, max) sequence duration; the real ones last about 4 s.
        progress: show a tqdm bar (one step per sequence).
    Returns:
        `root`.
    """
    root = Path(root)
    tmp = _atomic_dir(root)
    people = _subjects(subjects, seed, width=3)
    bar = tqdm(total=6 * len(people), desc="bu4dfe", unit="seq", disable=not progress)
    for k, (sid, identity) in enumerate(people):
        rng = np.random.default_rng([seed, k, 2])
        for emotion in EMOTIONS:
            folder = tmp / sid / BU4DFE_FOLDERS[emotion]
            folder.mkdir(parents=True)
            num_frames = int(round(rng.uniform(*seconds) * FPS))
            aus = expression_aus(emotion, int(rng.integers(3, 5)), rng)
            _sequence(identity, aus, num_frames, rng, lambda f: folder / f"{f:03d}",
                      _subject(identity).landmarks)
            bar.update()
    bar.close()
    _write_subjects_csv(tmp, people)
    return _publish(tmp, root)


def write_4dme(root: str | Path, subjects: int = 4, seed: int = 0, clips: int = 6,
               micro_fraction: float = 0.6, progress: bool = False) -> Path:
    """Write a 4DME-like set of micro- and macro-expression clips (layout in the module docstring).

    Args:
        root: the dataset folder to create (must not exist).
        subjects: number of subjects.
        seed: everything is a deterministic function of it.
        clips: clips per subject; classes cycle through `MICRO_CLASSES` from a random start.
        micro_fraction: probability that a clip is a micro-expression.
        progress: show a tqdm bar (one step per clip).
    Returns:
        `root`.
    """
    root = Path(root)
    tmp = _atomic_dir(root)
    rows = ["subject,clip,emotion,kind,sex,age_group,ethnicity,num_frames,onset,apex,offset,aus"]
    bar = tqdm(total=clips * subjects, desc="4dme", unit="clip", disable=not progress)
    for k in range(subjects):
        identity, sid = sample_identity(np.random.default_rng([seed, k])), f"S{k + 1:02d}"
        rng = np.random.default_rng([seed, k, 3])
        first = int(rng.integers(len(MICRO_CLASSES)))
        for c in range(clips):
            label = MICRO_CLASSES[(first + c) % len(MICRO_CLASSES)]
            micro = bool(rng.random() < micro_fraction)
            options = _MICRO_AUS[label]
            level = rng.uniform(0.2, 0.4) if micro else rng.uniform(0.6, 1.0)
            aus = {au: w * level * float(np.exp(0.2 * rng.standard_normal()))
                   for au, w in options[int(rng.integers(len(options)))].items()}
            # Micro: 0.2-0.5 s of movement padded by neutral frames, so the clip still starts
            # and ends neutral; the envelope puts about half the clip into the movement.
            active = rng.uniform(0.2, 0.5) if micro else rng.uniform(0.8, 1.6)
            num_frames = int(round(active * FPS * 1.8))
            clip = f"{sid}_C{c + 1:02d}"
            folder = tmp / sid / clip
            folder.mkdir(parents=True)
            onset, apex, offset = _sequence(identity, aus, num_frames, rng,
                                            lambda f: folder / f"{f:03d}", _subject(identity).landmarks)
            rows.append(f"{sid},{clip},{label},{'micro' if micro else 'macro'},{identity.sex},"
                        f"{identity.age_group},{identity.ethnicity},{num_frames},{onset},{apex},"
                        f"{offset},{'+'.join(str(au) for au in sorted(aus))}")
            bar.update()
    bar.close()
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    return _publish(tmp, root)


WRITERS = {"bu3dfe": write_bu3dfe, "bu4dfe": write_bu4dfe, "4dme": write_4dme}
DEFAULT_SUBJECTS = {"bu3dfe": 60, "bu4dfe": 4, "4dme": 4}


def default_root(kind: str = "bu3dfe", subjects: int | None = None) -> Path:
    """Where a generated set lives unless told otherwise: `$FACET_DATA` or `<repo>/data/synth`
    (git-ignored), then `<kind>-<subjects>subjects`, so `python -m facet.synth` and train.py
    find the same folder and a run asking for another size never reuses a stale set."""
    env = os.environ.get("FACET_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[1] / "data" / "synth"
    subjects = DEFAULT_SUBJECTS[kind] if subjects is None else subjects
    return base / f"{kind}-{subjects}subjects"


def ensure_dataset(kind: str = "bu3dfe", root: str | Path | None = None, **kw) -> Path:
    """Return the dataset folder `root` (default `default_root(kind, subjects)`), generating
    it if absent.

    Args:
        kind: "bu3dfe", "bu4dfe" or "4dme".
        root: the dataset folder; it counts as present when it exists (writers publish atomically).
        **kw: passed to the writer (subjects, seed, progress, ...).
    """
    if kind not in WRITERS:
        raise ValueError(f"unknown synthetic dataset kind {kind!r}; expected one of {list(WRITERS)}")
    root = Path(root) if root is not None else default_root(kind, kw.get("subjects"))
    if root.is_dir():
        return root
    return WRITERS[kind](root, **kw)


def main(argv: list[str] | None = None) -> str:
    """`python -m facet.synth ...`: generate a set; returns the summary line that `__main__` prints."""
    parser = argparse.ArgumentParser(description="Generate a synthetic 3D/4D face dataset.")
    parser.add_argument("--kind", choices=sorted(WRITERS), default="bu3dfe")
    parser.add_argument("--out", type=Path, default=None, help="default: default_root()/KIND")
    parser.add_argument("--subjects", type=int, default=None, help="default: the writer's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or default_root(args.kind, args.subjects)
    kw = {} if args.subjects is None else {"subjects": args.subjects}
    start = time.perf_counter()
    WRITERS[args.kind](out, seed=args.seed, progress=True, **kw)
    files = sum(1 for _ in out.rglob("*.wrl"))
    return f"wrote {files} meshes to {out} in {time.perf_counter() - start:.1f} s"


if __name__ == "__main__":
    print(main())
