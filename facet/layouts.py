"""The benchmark layouts: name tables and one indexer per dataset kind (FORMATS.md).

Each indexer walks a root and sorts every file it meets into `Index.samples`, `Index.ignored`
(excluded by a rule of the dataset's protocol, with the rule as the reason) or `Index.skipped`
(meant to be a sample but unusable, with the reason). They read names and, through
`facet.datasets.check_mesh_file`, a few header bytes; `facet.datasets.index_dataset` is the entry
point that picks one, sorts the samples and attaches subject metadata.

Layouts (root-relative):
- bu3dfe     `<subject>/F0001_HA03WH_F3D.wrl` (only `_F3D.wrl` are samples)
- bu4dfe     `<F001>/<Happy>/<NNN>.wrl`, one sample per sequence folder
- bosphorus  `<bs000>/bs000_E_HAPPY_0.bnt` (E_* emotions, N_N_* neutral, *FAU/CAU with include_au)
- bp4d       `<F001>/<T1>/<NNNN>.<ext>`, tasks mapped through `facet.protocols.BP4D_TASKS`
- 4dme       `<S01>/<S01_C01>/<NNN>.<ext>` listed in `labels.csv` (facet.synth's layout), else
             `<subject>/<class>/<clip>/<NNN>.<ext>`
- folder     `<class>/<subject>_<anything>.<ext>` scans or `<class>/<subject>_<clip>/` sequences
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from facet.datasets import Index, Sample
from facet.meshio import MESH_SUFFIXES, check_mesh_file
from facet.protocols import BP4D_TASKS, FOURDME_CLASSES, NEUTRAL, natural_key

BU3DFE_CODES = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness",
                "SA": "sadness", "SU": "surprise", "NE": NEUTRAL}
BU4DFE_FOLDERS = {"Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happiness",
                  "Sad": "sadness", "Surprise": "surprise"}
BOSPHORUS_EMOTIONS = {"ANGER": "anger", "DISGUST": "disgust", "FEAR": "fear",
                      "HAPPY": "happiness", "SADNESS": "sadness", "SURPRISE": "surprise"}
BOSPHORUS_AU_CLASSES = ("LFAU", "UFAU", "CAU")  # lower-face, upper-face, combined action units
BOSPHORUS_IGNORED = {"YR": "head rotation (yaw)", "PR": "head rotation (pitch)",
                     "CR": "head rotation (cross)", "O": "occlusion"}

# the generic `folder` layout accepts any of the datasets' spellings for a class folder
LABEL_ALIASES = {**{k.lower(): v for k, v in BU3DFE_CODES.items()},
                 **{k.lower(): v for k, v in BU4DFE_FOLDERS.items()},
                 **{k.lower(): v for k, v in BOSPHORUS_EMOTIONS.items()}}

BU3DFE_NAME = re.compile(r"^([FM])(\d{4})_([A-Z]{2})(\d{2})([A-Z]{2})_(F3D|RAW|F2D)\.(\w+)$")
BOSPHORUS_NAME = re.compile(r"^(bs\d{3})_([A-Z]+)_([A-Za-z0-9]+)_(\d+)\.(\w+)$")
SEQUENCE_SUBJECT = re.compile(r"^[FM]\d{3}$")  # BU-4DFE / BP4D subject folders: F001, M034
BP4D_TASK = re.compile(r"^T\d+$")


def _mesh_frames(folder: Path, index: Index) -> list[Path]:
    """The mesh files of a sequence folder in natural order; others ignored, bad ones skipped."""
    frames = []
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.suffix.lower() not in MESH_SUFFIXES:
            index.ignore(path, "not a mesh (texture, landmarks or other companion file)")
        elif (reason := check_mesh_file(path)) is not None:
            index.skip(path, reason)
        else:
            frames.append(path)
    suffixes = {p.suffix.lower() for p in frames}
    if len(suffixes) > 1:
        index.skip(folder, f"mixed mesh formats {sorted(suffixes)} in one sequence")
        return []
    if not frames:
        index.skip(folder, "sequence folder holds no usable mesh frame")
    return frames


def _sex(code: str) -> str:
    return {"F": "female", "M": "male"}.get(code[:1].upper(), "")


def _dirs(folder: Path, index: Index) -> list[Path]:
    """Sub-folders in natural order; loose files at this level are ignored by rule."""
    entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
    for path in entries:
        if not path.is_dir():
            index.ignore(path, "loose file where the layout expects folders")
    return [p for p in entries if p.is_dir()]


def _index_bu3dfe(root: Path, index: Index, include_au: bool) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p))):
        match = BU3DFE_NAME.match(path.name)
        if match is None:
            index.ignore(path, "name does not follow the BU-3DFE pattern")
            continue
        sex, number, code, level, ethnicity, part, ext = match.groups()
        if part != "F3D" or ext.lower() != "wrl":
            what = {"RAW": "raw scan", "F2D": "2D image"}.get(part, "F3D texture/landmarks")
            index.ignore(path, f"{what}: only *_F3D.wrl meshes are samples")
        elif code not in BU3DFE_CODES:
            index.skip(path, f"unknown expression code {code!r} (known: {sorted(BU3DFE_CODES)})")
        elif (code == "NE") != (level == "00") or int(level) > 4:
            index.skip(path, f"intensity {level} does not fit expression {code} (NE00, XX01-XX04)")
        elif (reason := check_mesh_file(path)) is not None:
            index.skip(path, reason)
        else:
            index.samples.append(Sample((str(path),), BU3DFE_CODES[code], f"{sex}{number}",
                                        int(level), _sex(sex), ethnicity=ethnicity))


def _index_bu4dfe(root: Path, index: Index, include_au: bool) -> None:
    for subject in _dirs(root, index):
        if not SEQUENCE_SUBJECT.match(subject.name):
            index.ignore(subject, "folder name is not a BU-4DFE subject (F001, M034, ...)")
            continue
        for folder in _dirs(subject, index):
            if folder.name not in BU4DFE_FOLDERS:
                index.skip(folder, f"unknown expression folder (known: {sorted(BU4DFE_FOLDERS)})")
            elif frames := _mesh_frames(folder, index):
                index.samples.append(Sample(tuple(map(str, frames)), BU4DFE_FOLDERS[folder.name],
                                            subject.name, sex=_sex(subject.name)))


def _index_bosphorus(root: Path, index: Index, include_au: bool) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p))):
        match = BOSPHORUS_NAME.match(path.name)
        if match is None:
            index.ignore(path, "name does not follow the Bosphorus pattern bs<id>_<class>_<code>_<n>")
            continue
        subject, group, code, _, ext = match.groups()
        if ext.lower() != "bnt":
            index.ignore(path, "2D image or landmarks: only .bnt scans are samples")
            continue
        label, aus = None, ""
        if group == "N" and code == "N":
            label = NEUTRAL
        elif group == "E":
            if code not in BOSPHORUS_EMOTIONS:
                index.skip(path, f"unknown emotion {code!r} (known: {sorted(BOSPHORUS_EMOTIONS)})")
                continue
            label = BOSPHORUS_EMOTIONS[code]
        elif group in BOSPHORUS_AU_CLASSES:
            if not include_au:
                index.ignore(path, "action-unit scan (pass include_au=True to keep it)")
                continue
            aus = f"{group}_{code}"
        elif group in BOSPHORUS_IGNORED:
            index.ignore(path, f"{BOSPHORUS_IGNORED[group]}: not part of the expression protocol")
            continue
        else:
            index.skip(path, f"unknown scan class {group!r}")
            continue
        if (reason := check_mesh_file(path)) is not None:
            index.skip(path, reason)
        else:
            index.samples.append(Sample((str(path),), label, subject, aus=aus))


def _index_bp4d(root: Path, index: Index, include_au: bool) -> None:
    for subject in _dirs(root, index):
        if not SEQUENCE_SUBJECT.match(subject.name):
            index.ignore(subject, "folder name is not a BP4D subject (F001, M018, ...)")
            continue
        for folder in _dirs(subject, index):
            if folder.name not in BP4D_TASKS:
                index.skip(folder, f"unknown task folder (known: {sorted(BP4D_TASKS)})")
            elif (label := BP4D_TASKS[folder.name][1]) is None:
                index.ignore(folder, f"task {folder.name} ({BP4D_TASKS[folder.name][0]}) "
                                     "has no basic-emotion label")
            elif frames := _mesh_frames(folder, index):
                index.samples.append(Sample(tuple(map(str, frames)), label, subject.name,
                                            sex=_sex(subject.name)))


def _index_4dme(root: Path, index: Index, include_au: bool) -> None:
    """4DME-like clips: `<root>/<subject>/<clip>/<NNN>.<ext>` listed in `<root>/labels.csv`
    (the synthetic writer's layout, see facet.synth), else `<root>/<subject>/<class>/<clip>/`."""
    if (root / "labels.csv").is_file():
        _index_4dme_csv(root, index)
        return
    for subject in _dirs(root, index):
        for folder in _dirs(subject, index):
            if folder.name.lower() not in FOURDME_CLASSES:
                index.skip(folder, f"unknown 4DME class folder (known: {FOURDME_CLASSES})")
                continue
            for clip in _dirs(folder, index):
                if frames := _mesh_frames(clip, index):
                    index.samples.append(Sample(tuple(map(str, frames)), folder.name.lower(),
                                                subject.name))


def _index_4dme_csv(root: Path, index: Index) -> None:
    """One sample per row of labels.csv (subject, clip, emotion, kind, sex, age_group,
    ethnicity, num_frames, onset, apex, offset, aus); clip folders it does not list are ignored."""
    path = root / "labels.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"subject", "clip", "emotion"} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    listed = set()
    for row in rows:
        folder = root / row["subject"] / row["clip"]
        listed.add(folder)
        label = row["emotion"].strip().lower()
        if label not in FOURDME_CLASSES:
            index.skip(folder, f"labels.csv: unknown class {label!r} (known: {FOURDME_CLASSES})")
        elif not folder.is_dir():
            index.skip(folder, "listed in labels.csv but the clip folder is missing")
        elif frames := _mesh_frames(folder, index):
            numbers = {k: row.get(k) or "-1" for k in ("num_frames", "apex")}
            if not all(re.fullmatch(r"-?\d+", v.strip()) for v in numbers.values()):
                index.skip(folder, f"labels.csv: num_frames/apex are not integers: {numbers}")
            elif int(numbers["num_frames"]) not in (-1, len(frames)):
                index.skip(folder, f"labels.csv says {numbers['num_frames']} frames, "
                                   f"found {len(frames)}")
            else:
                index.samples.append(Sample(
                    tuple(map(str, frames)), label, row["subject"], sex=row.get("sex", ""),
                    age_group=row.get("age_group", ""), ethnicity=row.get("ethnicity", ""),
                    aus=row.get("aus", ""), apex=int(numbers["apex"]),
                    clip_kind=row.get("kind", "")))
    for subject in _dirs(root, index):
        for clip in _dirs(subject, index):
            if clip not in listed:
                index.ignore(clip, "clip folder not listed in labels.csv")


def _index_folder(root: Path, index: Index, include_au: bool) -> None:
    """`<root>/<class>/<subject>_<anything>.<ext>` scans, or `<subject>_<clip>/` frame folders."""
    for folder in _dirs(root, index):
        label = LABEL_ALIASES.get(folder.name.lower(), folder.name.lower())
        for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
            subject = path.stem.split("_")[0] if "_" in path.stem else ""
            if not subject:
                index.ignore(path, "name does not start with '<subject>_'")
            elif path.is_dir():
                if frames := _mesh_frames(path, index):
                    index.samples.append(Sample(tuple(map(str, frames)), label, subject))
            elif path.suffix.lower() not in MESH_SUFFIXES:
                index.ignore(path, "not a mesh file")
            elif (reason := check_mesh_file(path)) is not None:
                index.skip(path, reason)
            else:
                index.samples.append(Sample((str(path),), label, subject))


INDEXERS = {"bu3dfe": _index_bu3dfe, "bu4dfe": _index_bu4dfe, "bosphorus": _index_bosphorus,
            "bp4d": _index_bp4d, "4dme": _index_4dme, "folder": _index_folder}


def detect_layout(root: Path) -> str | None:
    """The kind whose names appear in the first two levels of `root`, or None."""
    if (root / "labels.csv").is_file():  # the 4DME-like index of facet.synth
        return "4dme"
    top = [p for p in root.iterdir() if p.is_dir()]
    names = [c.name for d in top for c in d.iterdir()]
    if any(BU3DFE_NAME.match(n) for n in names):
        return "bu3dfe"
    if any(BOSPHORUS_NAME.match(n) for n in names):
        return "bosphorus"
    if any(SEQUENCE_SUBJECT.match(d.name) for d in top):
        if any(n in BU4DFE_FOLDERS for n in names):
            return "bu4dfe"
        if any(BP4D_TASK.match(n) for n in names):
            return "bp4d"
    if any(n.lower() in FOURDME_CLASSES for n in names):
        return "4dme"
    if any(Path(n).suffix.lower() in MESH_SUFFIXES or "_" in n for n in names):
        return "folder"
    return None
