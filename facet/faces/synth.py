"""Built-in datasets: ICT-FaceKit faces, scanned like real 3D scans, written in the real layouts.

facet's default data, so everything runs without licensed benchmarks. A person is a
`facet.faces.face_model.Subject` (identity, metadata, skin) with an expression `Style`; an
expression is a set of FACS action units (`facet.faces.expressions`); `facet.faces.scanner`
turns both into scans with their own crop, pose, noise, holes and triangulation. This module
decides who shows what, when, and writes it down (deterministic given `seed`; subject k is the
same person whatever the subject count; `realism=False` is the generator's ablation: no scanner
effects, no styles):
- `write_bu3dfe`: `<root>/F0001/F0001_HA03WH_F3D.wrl` + `_F3D.bmp` texture + `_F3D.bnd` (83
  landmarks): per subject NE00 + 6 emotions x intensities 01-04 = 25 scans.
- `write_bu4dfe`: `<root>/F001/Happy/000.wrl` + `000.bnd` beside each frame (the real release
  keeps them in a separate BND tree; beside is what `facet.data.meshio.load_mesh` reads): 6
  sequences per subject at 25 fps, neutral -> onset -> apex -> offset -> neutral, the head moving.
- `write_4dme`: `<root>/S01/S01_C03/000.wrl` (+ `.bnd`) and `<root>/labels.csv` with the columns
  `subject,clip,emotion,kind,sex,age_group,ethnicity,num_frames,onset,apex,offset,aus`
  (our layout; the real one is unverified): micro clips (6-12 frames, weak, often one-sided) and
  macro clips.
- `write_bp4d`: `<root>/F001/T1/0000.wrl` (+ `.bnd`): BP4D-like spontaneous tasks T1-T8, weaker,
  mixed, longer, with talking and blinking.
- `write_bosphorus`: `<root>/bs000/bs000_E_HAPPY_0.bnt` + `.lm3`: range images of the same kind of
  scans (neutral, the six emotions, single-AU scans such as `bs000_LFAU_12L_0`).
Every writer adds `subjects.csv` (sex, age group, ethnicity code) and `ground_truth.jsonl` (per
scan or sequence: its AUs per side, emotion, intensity, pose, timing), for captions. Writers
generate into a hidden temporary folder beside `root` and rename it into place, so an
interrupted run never looks complete.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from facet.atomic import write_atomic
from facet.data.layouts import (BOSPHORUS_EMOTIONS, BP4D_TASKS, BU3DFE_CODES, BU4DFE_FOLDERS,
                                EMOTIONS, FOURDME_CLASSES, NEUTRAL)
from facet.data.meshio import MESH_SUFFIXES, save_bnd, save_bnt, save_lm3, save_wrl
from facet.faces.expressions import (TALKING_TASKS, AUs, Style, blink_track, envelope,
                                     expression_aus, micro_aus, sample_style, scale_aus,
                                     spontaneous_aus, talking_track, with_au)
from facet.faces.face_model import Subject, sample_subject
from facet.faces.scanner import Scan, range_grid, scan, scan_sequence
from facet.mesh import Mesh

FPS = 25  # BU-4DFE, BP4D and 4DME record at 25 fps
CODE_OF = {name: code for code, name in BU3DFE_CODES.items()}  # "happiness" -> "HA"
FOLDER_OF = {name: folder for folder, name in BU4DFE_FOLDERS.items()}  # "happiness" -> "Happy"
BOSPHORUS_CODE_OF = {name: code for code, name in BOSPHORUS_EMOTIONS.items()}  # -> "HAPPY"


# --- writing files ----------------------------------------------------------------------------

def _save(item: Scan, stem: Path, image_suffix: str = ".bmp") -> None:
    """Write `<stem>.wrl` (0.01 mm, uv 1e-4), its texture `<stem><image_suffix>` when it has
    one, and the 83 landmarks `<stem>.bnd`."""
    from PIL import Image  # Pillow comes with matplotlib

    mesh, url = item.mesh, None
    if mesh.texture is not None:
        url = stem.name + image_suffix
        buffer = io.BytesIO()
        Image.fromarray(mesh.texture).save(buffer, format=image_suffix[1:].replace("jpg", "jpeg"))
        write_atomic(stem.parent / url, buffer.getvalue())
    rounded = Mesh(np.round(mesh.verts, 2), mesh.faces, uv=mesh.uv)
    save_wrl(rounded, stem.with_suffix(".wrl"), texture_url=url)
    save_bnd(item.landmarks, rounded.verts[item.landmarks], stem.with_suffix(".bnd"))


def _atomic_dir(root: Path) -> Path:
    """A fresh temporary folder beside `root`; renamed to `root` once complete."""
    if root.exists():
        raise FileExistsError(f"{root} already exists; remove it or choose another --out")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


# Every built-in kind draws its people from its own identity stream, as the real benchmarks
# hold different people (BU-4DFE and BP4D are not BU-3DFE's subjects): a 3D -> 4D transfer or a
# cross-dataset test then meets people it never saw. Stream 0 is the BU-3DFE-like set's (its
# people are those of every earlier facet version); the CLIP pretraining set has a stream of
# its own too (facet.faces.pretraining.PRETRAIN_SEED).
IDENTITY_STREAMS = {"bu3dfe": 0, "bosphorus": 1, "bu4dfe": 2, "4dme": 3, "bp4d": 4}
# the generation of each kind's people: a set made with another one is never reused
GENERATIONS = {"bu3dfe": 1, "bosphorus": 2, "bu4dfe": 2, "4dme": 2, "bp4d": 2}


def person(seed: int, k: int, kind: str = "bu3dfe") -> tuple[Subject, Style]:
    """Subject k of a set of `kind`: a function of (kind, seed, k) only, whatever the set's
    size; kinds never share a person (`IDENTITY_STREAMS`)."""
    stream = IDENTITY_STREAMS[kind]
    rng = np.random.default_rng([seed, k] if stream == 0 else [seed, k, stream])
    return sample_subject(rng), sample_style(rng)


def _subject_ids(count: int, seed: int, width: int, kind: str) -> list[str]:
    """BU/BP4D-style ids (F0001, M0001, ...): females and males numbered separately."""
    if count < 1:
        raise ValueError(f"subjects must be >= 1, got {count}")
    numbers = {"F": 0, "M": 0}
    ids = []
    for k in range(count):
        letter = person(seed, k, kind)[0].sex[0].upper()
        numbers[letter] += 1
        ids.append(f"{letter}{numbers[letter]:0{width}d}")
    return ids


def _generate(root: str | Path, kind: str, ids: list[str], job: Callable, progress: bool,
              workers: int, index: Callable | None = None, **options) -> Path:
    """Run `job(folder, k, subject_id, **options) -> (subject row, truth rows)` for every
    subject (in `workers` processes), write subjects.csv, ground_truth.jsonl and whatever
    `index(folder, truth rows)` adds, and publish the folder."""
    root = Path(root)
    tmp = _atomic_dir(root)
    people, truth = ["subject,sex,age_group,ethnicity"], []
    try:
        with tqdm(total=len(ids), desc=kind, unit="subject", disable=not progress) as bar:
            args = [(tmp, k, sid) for k, sid in enumerate(ids)]
            if workers > 1:
                with ProcessPoolExecutor(workers) as pool:
                    futures = [pool.submit(job, *a, **options) for a in args]
                    results = (f.result() for f in futures)
                    people, truth = _collect(results, people, truth, bar)
            else:
                people, truth = _collect((job(*a, **options) for a in args), people, truth, bar)
        (tmp / "subjects.csv").write_text("\n".join(people) + "\n")
        (tmp / "ground_truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in truth))
        if index is not None:
            index(tmp, truth)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, root)
    return root


def _collect(results, people: list[str], truth: list[dict], bar) -> tuple[list[str], list[dict]]:
    for person, rows in results:  # in subject order, so the files are deterministic
        people.append(person)
        truth += rows
        bar.update()
    return people, truth


def _person_row(sid: str, subject: Subject) -> str:
    return f"{sid},{subject.sex},{subject.age_group},{subject.ethnicity}"


def _bu3dfe_subject(folder: Path, k: int, sid: str, seed: int, realism: bool,
                    texture_size: int) -> tuple[str, list[dict]]:
    subject, style = person(seed, k, "bu3dfe")
    rng = np.random.default_rng([seed, k, 1])
    (folder / sid).mkdir()
    rows = []
    for emotion, level in [(NEUTRAL, 0)] + [(e, i) for e in EMOTIONS for i in range(1, 5)]:
        aus = expression_aus(emotion, level, rng, style) if realism else expression_aus(emotion,
                                                                                        level)
        item = scan(subject, aus, rng, realism, texture_size)
        name = f"{sid}_{CODE_OF[emotion]}{level:02d}{subject.ethnicity}_F3D"
        _save(item, folder / sid / name, ".bmp")
        rows.append({"file": f"{sid}/{name}.wrl", "subject": sid, **subject.metadata(),
                     "emotion": emotion, "intensity": level, **item.truth})
    return _person_row(sid, subject), rows


def write_bu3dfe(root: str | Path, subjects: int = 60, seed: int = 0, progress: bool = False,
                 realism: bool = True, texture_size: int = 256, workers: int = 1) -> Path:
    """Write a BU-3DFE-like static set: per subject NE00 + 6 emotions x intensities 01-04.

    Args:
        root: the dataset folder to create (must not exist).
        subjects: number of people (BU-3DFE has 100; its protocol uses 60).
        seed: everything is a deterministic function of it.
        progress: show a tqdm bar.
        realism: scanner effects and personal styles (False: the generator's ablation).
        texture_size: side of each scan's `.bmp` texture (0: none).
        workers: processes generating subjects in parallel.
    Returns:
        `root`.
    """
    return _generate(root, "bu3dfe", _subject_ids(subjects, seed, 4, "bu3dfe"), _bu3dfe_subject,
                     progress, workers, seed=seed, realism=realism, texture_size=texture_size)


def _sequence_row(sid: str, subject: Subject, folder: str, items: list[Scan], apex: AUs,
                  timing: tuple[int, int, int], **labels) -> dict:
    """The ground truth of one sequence: its apex AUs, timing and head poses."""
    onset, peak, offset = timing
    return {"folder": folder, "subject": sid, **subject.metadata(), **labels,
            "num_frames": len(items), "onset": onset, "apex": peak, "offset": offset,
            "aus": {str(au): [round(l, 3), round(r, 3)] for au, (l, r) in sorted(apex.items())},
            "poses": [item.truth["pose"] for item in items]}


def _write_frames(items: list[Scan], folder: Path, width: int) -> None:
    folder.mkdir(parents=True)
    for f, item in enumerate(items):
        _save(item, folder / f"{f:0{width}d}", ".jpg")


def _bu4dfe_subject(folder: Path, k: int, sid: str, seed: int, realism: bool, texture_size: int,
                    seconds: tuple[float, float], crop_per_frame: bool) -> tuple[str, list[dict]]:
    subject, style = person(seed, k, "bu4dfe")
    rng = np.random.default_rng([seed, k, 2])
    rows = []
    for emotion in EMOTIONS:
        num_frames = int(round(rng.uniform(*seconds) * FPS))
        level = int(rng.integers(3, 5))  # BU-4DFE's sequences peak at a strong expression
        apex = expression_aus(emotion, level, rng, style) if realism else expression_aus(emotion, 4)
        curve, timing = envelope(num_frames, rng)
        blinks = blink_track(num_frames, rng) if realism else np.zeros(num_frames)
        frames = [with_au(scale_aus(apex, a), 45, b) for a, b in zip(curve, blinks)]
        items = scan_sequence(subject, frames, rng, realism, texture_size, head_motion=2.0,
                              crop_per_frame=crop_per_frame)
        _write_frames(items, folder / sid / FOLDER_OF[emotion], 3)
        rows.append(_sequence_row(sid, subject, f"{sid}/{FOLDER_OF[emotion]}", items, apex, timing,
                                  emotion=emotion, intensity=level))
    return _person_row(sid, subject), rows


def write_bu4dfe(root: str | Path, subjects: int = 20, seed: int = 0, progress: bool = False,
                 realism: bool = True, texture_size: int = 0, workers: int = 1,
                 seconds: tuple[float, float] = (0.8, 1.4), crop_per_frame: bool = False) -> Path:
    """Write a BU-4DFE-like set: per subject 6 sequences at 25 fps (module docstring).

    Args:
        root, subjects, seed, progress, realism, workers: as `write_bu3dfe`.
        texture_size: side of a `.jpg` texture per frame; 0 (default) writes none, which halves
            the set's size (a frame's uv indices cost as much as its triangles).
        seconds: (min, max) sequence duration; the real ones last about 4 s.
        crop_per_frame: every frame scanned on its own, its own crop border, holes,
            triangulation and noise (`facet.faces.scanner.scan_sequence`), as the real
            release's frames are; default: one triangulation per sequence.
    Returns:
        `root`.
    """
    return _generate(root, "bu4dfe", _subject_ids(subjects, seed, 3, "bu4dfe"), _bu4dfe_subject,
                     progress, workers, seed=seed, realism=realism,
                     texture_size=texture_size, seconds=seconds, crop_per_frame=crop_per_frame)


def _4dme_subject(folder: Path, k: int, sid: str, seed: int, realism: bool, texture_size: int,
                  clips: int, micro_fraction: float, crop_per_frame: bool
                  ) -> tuple[str, list[dict]]:
    subject, _ = person(seed, k, "4dme")
    rng = np.random.default_rng([seed, k, 3])
    first = int(rng.integers(len(FOURDME_CLASSES)))
    rows = []
    for c in range(clips):
        label = FOURDME_CLASSES[(first + c) % len(FOURDME_CLASSES)]  # balanced classes
        micro = bool(rng.random() < micro_fraction)
        aus = micro_aus(label, micro, rng)
        # Micro: 6-12 frames (0.25-0.5 s), a fast rise and almost no hold; macro: 0.6-1.2 s.
        num_frames = int(rng.integers(6, 13) if micro else rng.integers(15, 31))
        curve, timing = envelope(num_frames, rng, rise=(0.2, 0.3) if micro else (0.15, 0.3),
                                 hold=(0.0, 0.1) if micro else (0.1, 0.3))
        items = scan_sequence(subject, [scale_aus(aus, a) for a in curve], rng, realism,
                              texture_size, head_motion=0.3 if micro else 1.0,
                              crop_per_frame=crop_per_frame)
        clip = f"{sid}_C{c + 1:02d}"
        _write_frames(items, folder / sid / clip, 3)
        rows.append(_sequence_row(sid, subject, f"{sid}/{clip}", items, aus, timing,
                                  emotion=label, kind="micro" if micro else "macro"))
    return _person_row(sid, subject), rows


def _4dme_labels(folder: Path, rows: list[dict]) -> None:
    """labels.csv: one line per clip (the columns in the module docstring)."""
    lines = ["subject,clip,emotion,kind,sex,age_group,ethnicity,num_frames,onset,apex,offset,aus"]
    for r in rows:
        subject, clip = r["folder"].split("/")
        aus = "+".join(au for au, sides in r["aus"].items() if max(sides) > 0)
        lines.append(f"{subject},{clip},{r['emotion']},{r['kind']},{r['sex']},{r['age_group']},"
                     f"{r['ethnicity']},{r['num_frames']},{r['onset']},{r['apex']},{r['offset']},"
                     f"{aus}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def write_4dme(root: str | Path, subjects: int = 12, seed: int = 0, progress: bool = False,
               realism: bool = True, texture_size: int = 0, workers: int = 1, clips: int = 10,
               micro_fraction: float = 0.7, crop_per_frame: bool = False) -> Path:
    """Write a 4DME-like set of micro- and macro-expression clips (module docstring).

    Args:
        root, subjects, seed, progress, realism, texture_size, workers, crop_per_frame: as
            `write_bu4dfe`.
        clips: clips per subject; classes cycle through FOURDME_CLASSES from a random start.
        micro_fraction: probability that a clip is a micro-expression.
    Returns:
        `root`.
    """
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    ids = [f"S{k + 1:02d}" for k in range(subjects)]
    return _generate(root, "4dme", ids, _4dme_subject, progress, workers, index=_4dme_labels,
                     seed=seed, realism=realism, texture_size=texture_size, clips=clips,
                     micro_fraction=micro_fraction, crop_per_frame=crop_per_frame)


def _bp4d_subject(folder: Path, k: int, sid: str, seed: int, realism: bool, texture_size: int,
                  seconds: tuple[float, float], crop_per_frame: bool) -> tuple[str, list[dict]]:
    subject, _ = person(seed, k, "bp4d")
    rng = np.random.default_rng([seed, k, 4])
    rows = []
    for task in BP4D_TASKS:
        num_frames = int(round(rng.uniform(*seconds) * FPS))
        peak = spontaneous_aus(task, rng)
        curve, timing = envelope(num_frames, rng, rise=(0.15, 0.35), hold=(0.2, 0.4))
        talk = talking_track(num_frames, rng) if task in TALKING_TASKS else np.zeros(num_frames)
        blinks = blink_track(num_frames, rng, per_second=0.4)
        frames = [with_au(with_au(with_au(scale_aus(peak, a), 25, j), 26, j), 45, b)
                  for a, j, b in zip(curve, talk, blinks)]
        items = scan_sequence(subject, frames, rng, realism, texture_size, head_motion=4.0,
                              crop_per_frame=crop_per_frame)
        _write_frames(items, folder / sid / task, 4)
        rows.append(_sequence_row(sid, subject, f"{sid}/{task}", items, peak, timing, task=task,
                                  emotion=BP4D_TASKS[task][1]))
    return _person_row(sid, subject), rows


def write_bp4d(root: str | Path, subjects: int = 8, seed: int = 0, progress: bool = False,
               realism: bool = True, texture_size: int = 0, workers: int = 1,
               seconds: tuple[float, float] = (1.6, 2.4), crop_per_frame: bool = False) -> Path:
    """Write a BP4D-Spontaneous-like set: per subject the 8 tasks T1-T8 (facet.data.layouts.
    BP4D_TASKS), spontaneous -- weaker, mixed with another task's AUs, longer, with blinks, head
    motion and, in T1, T2, T4 and T7, talking. For cross-dataset tests (train on BU-4DFE).

    Args:
        root, subjects, seed, progress, realism, texture_size, workers, crop_per_frame: as
            `write_bu4dfe`.
        seconds: (min, max) excerpt duration; the real tasks last minutes.
    Returns:
        `root`.
    """
    return _generate(root, "bp4d", _subject_ids(subjects, seed, 3, "bp4d"), _bp4d_subject, progress,
                     workers, seed=seed, realism=realism, texture_size=texture_size,
                     seconds=seconds, crop_per_frame=crop_per_frame)


# Bosphorus's named landmarks (.lm3) as indices among our 83 ("left" = the subject's left).
LM3_NAMES = {"Outer left eyebrow": 30, "Middle left eyebrow": 28, "Inner left eyebrow": 26,
             "Inner right eyebrow": 16, "Middle right eyebrow": 18, "Outer right eyebrow": 20,
             "Outer left eye corner": 12, "Inner left eye corner": 8,
             "Inner right eye corner": 0, "Outer right eye corner": 4, "Nose saddle left": 41,
             "Nose saddle right": 36, "Left nose peak": 44, "Nose tip": 46,
             "Right nose peak": 39, "Left mouth corner": 54, "Upper lip outer middle": 51,
             "Right mouth corner": 48, "Upper lip inner middle": 62,
             "Lower lip inner middle": 66, "Lower lip outer middle": 57, "Chin middle": 75}
# Bosphorus's single-AU scans (a subset): code -> AUs; "L"/"R" codes are one-sided.
BOSPHORUS_AUS = {"LFAU_9": {9: (1.0, 1.0)}, "LFAU_10": {10: (1.0, 1.0)},
                 "LFAU_12": {12: (1.0, 1.0)}, "LFAU_12L": {12: (1.0, 0.0)},
                 "LFAU_12R": {12: (0.0, 1.0)}, "LFAU_15": {15: (1.0, 1.0)},
                 "LFAU_17": {17: (1.0, 1.0)}, "LFAU_20": {20: (1.0, 1.0)},
                 "LFAU_24": {24: (1.0, 1.0)}, "LFAU_26": {26: (1.0, 1.0)},
                 "UFAU_1": {1: (1.0, 1.0)}, "UFAU_2": {2: (1.0, 1.0)},
                 "UFAU_4": {4: (1.0, 1.0)}, "UFAU_43": {43: (1.0, 1.0)}}


def _bosphorus_subject(folder: Path, k: int, sid: str, seed: int, realism: bool,
                       texture_size: int, step: float) -> tuple[str, list[dict]]:
    subject, style = person(seed, k, "bosphorus")
    rng = np.random.default_rng([seed, k, 5])
    (folder / sid).mkdir()
    takes = [(f"N_N_{i}", NEUTRAL, 0, None) for i in range(2)]
    takes += [(f"E_{BOSPHORUS_CODE_OF[e]}_0", e, int(rng.integers(3, 5)), None)
              for e in EMOTIONS]
    takes += [(f"{code}_0", None, -1, aus) for code, aus in BOSPHORUS_AUS.items()]
    rows = []
    for code, emotion, level, aus in takes:
        if aus is None:
            aus = expression_aus(emotion, level, rng, style) if realism else expression_aus(
                emotion, level)
        item = scan(subject, aus, rng, realism, texture_size=0)
        grid, zmin = range_grid(item.mesh, step), -1e9  # zmin marks pixels without a measurement
        z = np.where(grid["covered"], grid["z"], zmin)
        stem = folder / sid / f"{sid}_{code}"
        save_bnt(stem.with_suffix(".bnt"), grid["x"], grid["y"], z, grid["u"], grid["v"],
                 zmin=zmin, image_name=stem.name + ".png")
        points = item.mesh.landmarks["bnd"]
        save_lm3({name: points[i] for name, i in LM3_NAMES.items()}, stem.with_suffix(".lm3"))
        rows.append({"file": f"{sid}/{stem.name}.bnt", "subject": sid, **subject.metadata(),
                     "emotion": emotion, "intensity": level, **item.truth})
    return _person_row(sid, subject), rows


def write_bosphorus(root: str | Path, subjects: int = 60, seed: int = 0, progress: bool = False,
                    realism: bool = True, texture_size: int = 0, workers: int = 1,
                    step: float = 1.5) -> Path:
    """Write a Bosphorus-like set of `.bnt` range scans with `.lm3` landmarks.

    Per subject `bs000/`: two neutral scans (`bs000_N_N_0`), the six emotions at a strong
    level (`bs000_E_HAPPY_0`) and the single-AU scans of `BOSPHORUS_AUS` (`bs000_LFAU_12_0`,
    one-sided `LFAU_12L`). No 2D `.png` images (the range scans name them, as the real ones do).

    Args:
        root, subjects, seed, progress, realism, workers: as `write_bu3dfe`.
        texture_size: unused (range scans carry no texture); kept for a uniform signature.
        step: grid spacing of the range images, mm.
    Returns:
        `root`.
    """
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1, got {subjects}")
    return _generate(root, "bosphorus", [f"bs{k:03d}" for k in range(subjects)],
                     _bosphorus_subject, progress, workers, seed=seed, realism=realism,
                     texture_size=texture_size, step=step)


WRITERS = {"bu3dfe": write_bu3dfe, "bu4dfe": write_bu4dfe, "4dme": write_4dme,
           "bp4d": write_bp4d, "bosphorus": write_bosphorus}


SEQUENCE_KINDS = ("bu4dfe", "4dme", "bp4d")  # writers of 4D sequences (--crop-per-frame)
DEFAULT_SUBJECTS = {"bu3dfe": 60, "bu4dfe": 20, "4dme": 12, "bp4d": 8, "bosphorus": 60}


def default_root(kind: str = "bu3dfe", subjects: int | None = None,
                 crop_per_frame: bool = False) -> Path:
    """Where a generated set lives unless told otherwise: `$FACET_DATA` or `<repo>/data/synth`
    (git-ignored), then `<kind>-<subjects>subjects` (+ `-g<generation>` after the first
    generation of its people, + `-cropperframe` for sequences scanned frame by frame), so
    `python -m facet.faces.synth` and train.py find the same folder and a run asking for another
    size, other people or other scans never reuses a stale set."""
    env = os.environ.get("FACET_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "data" / "synth"
    generation = "" if GENERATIONS[kind] == 1 else f"-g{GENERATIONS[kind]}"
    count = DEFAULT_SUBJECTS[kind] if subjects is None else subjects
    return base / f"{kind}-{count}subjects{generation}{'-cropperframe' if crop_per_frame else ''}"


def ensure_dataset(kind: str = "bu3dfe", root: str | Path | None = None,
                   crop_per_frame: bool = False, **kw) -> Path:
    """Return the dataset folder `root` (default `default_root(kind, subjects, crop_per_frame)`),
    generating it if absent.

    Args:
        kind: a key of `WRITERS`.
        root: the dataset folder; it counts as present when it exists (writers publish atomically).
        crop_per_frame: sequences with every frame scanned apart (`write_bu4dfe`).
        **kw: passed to the writer (subjects, seed, progress, realism, ...).
    Raises:
        ValueError: unknown kind, or `crop_per_frame` for a kind of static scans.
    """
    if kind not in WRITERS:
        raise ValueError(f"unknown synthetic dataset kind {kind!r}; expected one of "
                         f"{list(WRITERS)}")
    if crop_per_frame and kind not in SEQUENCE_KINDS:
        raise ValueError(f"crop_per_frame: {kind} writes static scans, not sequences")
    root = Path(root) if root is not None else default_root(kind, kw.get("subjects"),
                                                            crop_per_frame)
    if root.is_dir():
        return root
    if crop_per_frame:  # only the sequence writers take it
        kw["crop_per_frame"] = True
    return WRITERS[kind](root, **kw)


def main(argv: list[str] | None = None) -> str:
    """`python -m facet.faces.synth ...`: generate a set; returns the summary line `__main__`
    prints."""
    parser = argparse.ArgumentParser(description="Generate a built-in 3D/4D face dataset.")
    parser.add_argument("--kind", choices=sorted(WRITERS), default="bu3dfe")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: data/synth/KIND-Nsubjects[-cropperframe] (where train.py "
                             "looks)")
    parser.add_argument("--subjects", type=int, default=None, help="default: the writer's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (default: 2)")
    parser.add_argument("--texture-size", type=int, default=None,
                        help="texture side in pixels, 0 = none (default: the writer's)")
    parser.add_argument("--no-realism", dest="realism", action="store_false",
                        help="no scanner effects or personal styles (the generator's ablation)")
    parser.add_argument("--crop-per-frame", action="store_true",
                        help="sequences: every frame its own crop border, holes, triangulation "
                             "and noise, as a real 4D scanner's (default: one per sequence)")
    args = parser.parse_args(argv)
    for name in ("subjects", "workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.texture_size is not None and args.texture_size < 0:
        parser.error(f"--texture-size must be >= 0, got {args.texture_size}")
    if args.crop_per_frame and args.kind not in SEQUENCE_KINDS:
        parser.error(f"--crop-per-frame: --kind={args.kind} writes static scans, not sequences")
    out = args.out or default_root(args.kind, args.subjects, args.crop_per_frame)
    if out.exists():
        parser.error(f"--out {out} already exists; remove it or choose another folder")
    kw = {name: getattr(args, name) for name in ("subjects", "texture_size")
          if getattr(args, name) is not None}
    start = time.perf_counter()
    ensure_dataset(args.kind, out, crop_per_frame=args.crop_per_frame, seed=args.seed,
                   progress=True, realism=args.realism, workers=args.workers, **kw)
    files = sum(1 for p in out.rglob("*") if p.suffix in MESH_SUFFIXES)  # .wrl, or .bnt
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return (f"wrote {files} meshes ({size / 2**20:.0f} MiB) to {out} in "
            f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    print(main())
