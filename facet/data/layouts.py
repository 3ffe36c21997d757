"""Dataset roots -> samples: the benchmark layouts, their label tables, and `index_dataset`.

The data stage after mesh files: a `Sample` is one scan (BU-3DFE, Bosphorus) or one sequence
(BU-4DFE, BP4D, 4DME) -- its frame files in natural order, canonical label, subject, metadata.
`index_dataset(root, kind)` picks the layout's indexer, which sorts every file under the root
into one of three places, so nothing is dropped by accident:
- a sample (or a frame of one);
- `Index.ignored` (path, rule): not part of the protocol *by rule* -- BU-3DFE RAW scans, 2D
  images, textures and landmark files, Bosphorus rotations/occlusions/AU scans (unless
  `include_au`), BP4D tasks without a basic emotion, names that follow no pattern;
- `Index.skipped` (path, reason): meant to be a sample but unusable -- empty or corrupt file
  (`facet.data.meshio.check_mesh_file` reads a few header bytes), unknown expression code.
  `strict=True` raises instead of skipping.
Layouts (root-relative):
- bu3dfe     `<subject>/F0001_HA03WH_F3D.wrl` (only `_F3D.wrl` are samples)
- bu4dfe     `<F001>/<Happy>/<NNN>.wrl`, one sample per sequence folder
- bosphorus  `<bs000>/bs000_E_HAPPY_0.bnt` (E_* emotions, N_N_* neutral, *FAU/CAU with include_au)
- bp4d       `<F001>/<T1>/<NNNN>.<ext>`, tasks mapped to emotions through `BP4D_TASKS`
- 4dme       `<S01>/<S01_C01>/<NNN>.<ext>` listed in `labels.csv` (facet.faces.synth's layout), else
             `<subject>/<class>/<clip>/<NNN>.<ext>`
- folder     `<class>/<subject>_<anything>.<ext>` scans or `<class>/<subject>_<clip>/` sequences
A `subjects.csv` at the root with a `subject` column and any of `sex`, `age_group`, `ethnicity`
fills those fields (our convention, for what file names do not carry).

This module is the one place for every label and code table; other modules derive from them
(e.g. the synthetic writers invert `BU3DFE_CODES`, `BU4DFE_FOLDERS` and `BOSPHORUS_EMOTIONS`
to name their files, so a code the indexer reads and the code a writer writes are one fact).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from facet.data.meshio import MESH_SUFFIXES, check_mesh_file

EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")  # the six basic
NEUTRAL = "neutral"
KINDS = ("bu3dfe", "bu4dfe", "bosphorus", "bp4d", "4dme", "folder")

# BP4D-Spontaneous (Zhang et al., "BP4D-Spontaneous", Image Vis. Comput. 2014, Table 1): each task
# was designed to elicit one emotion. Tasks whose target is not a basic emotion map to None and
# are excluded by the indexer (embarrassment, physical pain). The elicitation is spontaneous, so
# the label is the *intended* emotion of the task, not an annotation of every frame.
BP4D_TASKS: dict[str, tuple[str, str | None]] = {
    #      task                                                    -> emotion
    "T1": ("talk with the experimenter and listen to a joke",        "happiness"),
    "T2": ("watch and discuss a recorded documentary",               "sadness"),
    "T3": ("experience a sudden, unexpected burst of sound",         "surprise"),
    "T4": ("improvise a silly song (embarrassment)",                 None),
    "T5": ("anticipate a physical threat (fear / nervousness)",      "fear"),
    "T6": ("submerge a hand in ice water (physical pain)",           None),
    "T7": ("react to an experimenter who is rude (anger / upset)",   "anger"),
    "T8": ("smell an unpleasant odour",                              "disgust"),
}

# 4DME (Li et al., IEEE Trans. Affective Computing 2022) labels clips with 5 emotion categories,
# as recalled from the dataset's description (not verified against the release).
FOURDME_CLASSES = ("positive", "negative", "surprise", "repression", "others")

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


@dataclass(frozen=True)
class Sample:
    """One scan or one sequence of scans, with its label and subject metadata."""

    frames: tuple[str, ...]  # mesh files in time order (one for a static scan)
    label: str | None  # canonical class name; None = no emotion label (AU-only scan)
    subject: str  # dataset subject id, e.g. "F0001", "bs012"
    intensity: int = -1  # BU-3DFE level 1-4, 0 for neutral; -1 when the dataset has none
    sex: str = ""  # "female", "male" or "" (unknown)
    age_group: str = ""  # free text from subjects.csv, "" when unknown
    ethnicity: str = ""  # the dataset's code (BU-3DFE: WH, BL, AE, ...), opaque
    dataset: str = ""  # the indexer that produced it
    aus: str = ""  # the dataset's AU annotation, opaque: Bosphorus "LFAU_12", 4DME "6+12"
    apex: int = -1  # annotated apex frame (4DME labels.csv); -1: use the displacement apex
    clip_kind: str = ""  # 4DME: "micro" or "macro" expression
    # a static scan compared with a neutral scan of the same person (`--onset` on a 3D
    # dataset, `facet.data.datasets.with_neutral_references`): that scan's file; "" = none
    reference: str = ""

    @property
    def rendered(self) -> tuple[str, ...]:
        """The files the view cache renders, in order: the neutral reference (if any) first,
        the frame of reference for the rest, then the sample's frames."""
        return ((self.reference,) if self.reference else ()) + self.frames

    @property
    def path(self) -> str:
        """The scan file, or the folder holding a sequence's frames."""
        return self.frames[0] if len(self.frames) == 1 else str(Path(self.frames[0]).parent)


def action_units(annotation: str) -> tuple[int, ...]:
    """The FACS action-unit numbers an AU annotation names, sorted: 4DME "6+12" -> (6, 12),
    Bosphorus "LFAU_12" -> (12,), "" -> ()."""
    return tuple(sorted({int(n) for n in re.findall(r"\d+", annotation)}))


@dataclass
class Index:
    """The result of indexing a root: samples plus every file that did not become one."""

    root: str
    kind: str
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why unusable)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, rule that excludes it)

    def summary(self) -> str:
        """One line: counts of samples, frames, subjects, labels, skipped and ignored files."""
        frames = sum(len(s.frames) for s in self.samples)
        subjects = len({s.subject for s in self.samples})
        labels = sorted({str(s.label) for s in self.samples})
        return (f"{self.kind} at {self.root}: {len(self.samples)} samples ({frames} frames, "
                f"{subjects} subjects, labels {labels}); {len(self.skipped)} skipped, "
                f"{len(self.ignored)} ignored by rule")

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def ignore(self, path: Path, reason: str) -> None:
        self.ignored.append((str(path), reason))


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: "F2" < "F10", "9.wrl" < "10.wrl"."""
    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in re.split(r"(\d+)", str(text)))


def files_in(root: Path) -> list[Path]:
    """Every file under `root`, in natural order (F0002 before F0010, 2.wrl before 10.wrl)."""
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: natural_key(str(p)))


def _read_csv(path: Path, required: set[str]) -> list[dict[str, str]]:
    """The rows of a small metadata CSV; ValueError naming the file for text that is not UTF-8,
    a missing column, or a row with more or fewer fields than the header."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from None
    if required - set(header):
        raise ValueError(f"{path}: missing column(s) {sorted(required - set(header))} "
                         f"(header: {header})")
    for number, row in enumerate(rows, start=1):
        if None in row or None in row.values():  # DictReader's marks of extra / missing fields
            raise ValueError(f"{path}: data row {number} does not have the header's "
                             f"{len(header)} fields")
    return rows


def _subject_metadata(root: Path) -> dict[str, dict[str, str]]:
    """subjects.csv -> {subject: {"sex":..., "age_group":..., "ethnicity":...}} (may be empty)."""
    path = root / "subjects.csv"
    if not path.is_file():
        return {}
    keys = ("sex", "age_group", "ethnicity")
    return {r["subject"]: {k: r[k] for k in keys if r.get(k)}
            for r in _read_csv(path, {"subject"})}


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
    for path in files_in(root):
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
    for path in files_in(root):
        match = BOSPHORUS_NAME.match(path.name)
        if match is None:
            index.ignore(path, "name does not follow the Bosphorus pattern "
                               "bs<id>_<class>_<code>_<n>")
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
    (the synthetic writer's layout, see facet.faces.synth), else
    `<root>/<subject>/<class>/<clip>/`."""
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
    listed = set()
    for line, row in enumerate(_read_csv(root / "labels.csv", {"subject", "clip", "emotion"}), 2):
        folder = root / row["subject"] / row["clip"]
        label = row["emotion"].strip().lower()
        names = (row["subject"], row["clip"])
        if any(n in ("", ".", "..") or re.search(r"[/\\]", n) for n in names):  # "../../x"
            index.skip(folder, f"labels.csv line {line}: subject and clip must be folder names "
                               f"inside {root}, not {'/'.join(names)!r}")
        elif folder in listed:  # the same clip twice would count twice in training and scores
            index.skip(folder, f"labels.csv line {line}: a second row for this clip (ignored)")
        elif label not in FOURDME_CLASSES:
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
            elif not -1 <= int(numbers["apex"]) < len(frames):
                index.skip(folder, f"labels.csv: apex {numbers['apex']} is not a frame of the "
                                   f"{len(frames)} found (0..{len(frames) - 1}, or -1: unknown)")
            else:
                index.samples.append(Sample(
                    tuple(map(str, frames)), label, row["subject"], sex=row.get("sex", ""),
                    age_group=row.get("age_group", ""), ethnicity=row.get("ethnicity", ""),
                    aus=row.get("aus", ""), apex=int(numbers["apex"]),
                    clip_kind=row.get("kind", "")))
        listed.add(folder)
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


def detect_kind(root: str | Path) -> str:
    """The layout of a root, guessed from the names of its first two levels.

    Raises:
        FileNotFoundError: `root` is not a folder.
        ValueError: no layout fits.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    if (root / "labels.csv").is_file():  # the 4DME-like index of facet.faces.synth
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
    raise ValueError(f"cannot tell the layout of {root} from its names; "
                     f"pass kind= one of {KINDS}")


def index_dataset(root: str | Path, kind: str = "auto", strict: bool = False,
                  include_au: bool = False) -> Index:
    """Index a dataset root into samples (see the module docstring for the rules).

    Args:
        root: the dataset folder.
        kind: one of `KINDS`, or "auto" to detect it from the names.
        strict: raise if any file is unusable, instead of skipping it.
        include_au: Bosphorus only: also keep action-unit scans (label None, `aus` set).
    Returns:
        an `Index` with samples sorted by subject then path, and the skipped / ignored files.
    Raises:
        FileNotFoundError: if `root` is not a folder.
        ValueError: unknown kind; with `strict`, any skipped file (all of them are listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    kind = detect_kind(root) if kind == "auto" else kind
    if kind not in INDEXERS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose 'auto' or one of {KINDS}")
    index = Index(str(root), kind)
    INDEXERS[kind](root, index, include_au)
    metadata = _subject_metadata(root)
    ours = {root / "subjects.csv", root / "labels.csv"}  # metadata files, not decoys
    index.ignored = [(p, r) for p, r in index.ignored if Path(p) not in ours]
    index.samples = sorted((replace(s, dataset=kind, **metadata.get(s.subject, {}))
                            for s in index.samples),
                           key=lambda s: (natural_key(s.subject), natural_key(s.path)))
    if strict and index.skipped:
        listing = "\n".join(f"  {p}: {r}" for p, r in index.skipped)
        raise ValueError(f"{len(index.skipped)} unusable file(s) under {root}:\n{listing}")
    return index
