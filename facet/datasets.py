"""Dataset roots -> samples: what a sample is, and `index_dataset`, the one entry point.

A `Sample` is one scan (BU-3DFE, Bosphorus) or one sequence (BU-4DFE, BP4D, 4DME): its frame
files, naturally sorted (1 for a static scan), canonical label, subject and metadata. The
per-dataset indexers (`facet.layouts`) read names, plus a few header bytes per file to catch
empty, truncated or foreign files early; parsing the meshes is left to the view cache
(`facet.view_cache`), which renders them once.

Every file under the root ends up in one of three places, so nothing is dropped by accident:
- a sample (or a frame of one);
- `Index.ignored` (path, reason): not part of the protocol *by rule* -- BU-3DFE RAW scans, 2D
  images, textures and landmark files, Bosphorus rotations/occlusions/AU scans (unless
  `include_au`), BP4D tasks without a basic emotion, names that follow no pattern;
- `Index.skipped` (path, reason): meant to be a sample but unusable -- empty or corrupt file,
  unknown expression code. `strict=True` raises instead of skipping.

Optional subject metadata: a `subjects.csv` at the root with a header naming `subject` and any of
`sex`, `age_group`, `ethnicity` fills those fields (our convention, for what names do not carry).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path

from facet.protocols import natural_key

KINDS = ("bu3dfe", "bu4dfe", "bosphorus", "bp4d", "4dme", "folder")  # see facet.layouts


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

    @property
    def path(self) -> str:
        """The scan file, or the folder holding a sequence's frames."""
        return self.frames[0] if len(self.frames) == 1 else str(Path(self.frames[0]).parent)


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


def _subject_metadata(root: Path) -> dict[str, dict[str, str]]:
    """subjects.csv -> {subject: {"sex":..., "age_group":..., "ethnicity":...}} (may be empty)."""
    path = root / "subjects.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "subject" not in rows[0]:
        raise ValueError(f"{path}: header must name a 'subject' column, got {list(rows[0])}")
    keys = ("sex", "age_group", "ethnicity")
    return {r["subject"]: {k: r[k] for k in keys if r.get(k)} for r in rows}


def detect_kind(root: str | Path) -> str:
    """Guess a root's layout from the names of its first two levels (see FORMATS.md).

    Raises:
        FileNotFoundError: if `root` is not a folder.
        ValueError: if no layout fits.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    from facet.layouts import detect_layout  # imported here: layouts builds on Sample, Index

    kind = detect_layout(root)
    if kind is None:
        raise ValueError(f"cannot tell the layout of {root} from its names; "
                         f"pass kind= one of {KINDS}")
    return kind



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
    from facet.layouts import INDEXERS  # imported here: layouts builds on Sample, Index

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
