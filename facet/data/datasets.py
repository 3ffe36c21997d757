"""The samples of a run: the evaluation protocols, subject-independent splits, torch Datasets.

The last data stage before the model.

Protocols. The literature evaluates 3D/4D expression recognition *subject-independently* -- no
person appears in both the training and the test set, so a model cannot score by recognising
faces. `PROTOCOLS` holds the common setting per dataset (BU-3DFE: 60 subjects, the two highest
intensities, 10-fold; BU-4DFE: 10-fold; Bosphorus: 60 subjects, 10-fold; BP4D: a cross-dataset
test set; 4DME: leave-one-subject-out); `filter_samples` applies one, `subject_kfold` and
`leave_one_subject_out` split (lists in the input order, so a fixed index gives fixed folds).

Datasets. `FaceViewsDataset[i]` reads one entry of the view cache (`facet.data.view_cache`) and
returns `(views (T, V, 3, H, W) float32 in [0, 1], label index, meta)`. A static scan repeats
its one frame T times; a sequence contributes T of its frames:
- "uniform": T frames spread over the whole sequence. Evaluation takes evenly spaced frames;
  training draws one frame at random inside each of T equal segments (TSN-style), so each epoch
  sees other frames of the same expression.
- "apex": T consecutive frames centred on the apex: the annotated one where the dataset has it
  (`Sample.apex`, 4DME), else the frame of largest mean displacement from the first frame
  (computed from the meshes at cache time). Training shifts the window by up to T // 2 frames.
- "expressive": frames ranked by how far the face moved from the first frame. Training draws
  T of the frames that move at least half as much as the apex (several per sequence and epoch,
  across the expressive part, never the neutral onset); evaluation takes the T frames of
  largest displacement, the apex region, in time order.
Onset reference (`onset`, 4D): the expression is the change from the sequence's neutral first
frame (the view cache renders every frame rigidly aligned to it). "difference" gives each
frame's views as 0.5 + alpha (x_t - x_0), the identity and the scanner cancelled; "magnified"
as x_0 + alpha (x_t - x_0), a face whose expression is amplified alpha times (Eulerian motion
magnification in pixels); alpha = `magnify`, or, with `change_rms`, chosen per sample so that
its most changed frame has that RMS: a micro-expression is three times fainter than a broad one
and varies more in strength, and the normalised change leaves the classifier the change's shape,
not its size. Our design, after the onset-apex differences and dynamic images of the
micro-expression literature. A static scan has no first frame; with an onset reference it is
compared with a neutral scan of the same person instead (`with_neutral_references`: BU-3DFE's
NE00, Bosphorus' N_N_0), which the view cache renders first, the scan rigidly aligned to it.
Random choices come from a generator seeded by (seed, epoch, index), not from global state, so
batches do not depend on the number of DataLoader workers and a resumed run draws the same
frames; each item also carries such a seed for its view augmentation (`facet.augment`). Call
`set_epoch` each epoch, as with DistributedSampler. Items hold no open file or memory map, so
the datasets pickle into worker processes. `CaptionedViews` serves CLIP pretraining pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from facet.data.layouts import (EMOTIONS, FOURDME_CLASSES, NEUTRAL, Sample, action_units,
                                natural_key)
from facet.data.view_cache import ViewCache

@dataclass(frozen=True)
class Protocol:
    """The usual evaluation setting of one dataset."""

    expressions: tuple[str, ...] | None  # labels kept (None = all labelled samples)
    intensities: tuple[int, ...] | None  # intensity levels kept (None = no filter)
    subjects: int | None  # first n subjects in natural order (None = all)
    folds: int | None  # k of subject k-fold; None = leave-one-subject-out or test-only
    split: str  # "kfold", "loso" or "test" (a cross-dataset test set)


PROTOCOLS: dict[str, Protocol] = {
    # 60 subjects and the two highest of four intensities: the setting most BU-3DFE papers report
    "bu3dfe": Protocol(EMOTIONS, (3, 4), 60, 10, "kfold"),
    "bu4dfe": Protocol(EMOTIONS, None, None, 10, "kfold"),
    "bosphorus": Protocol(EMOTIONS, None, 60, 10, "kfold"),
    "bp4d": Protocol(EMOTIONS, None, None, None, "test"),  # train on BU-4DFE, test here
    "4dme": Protocol(FOURDME_CLASSES, None, None, None, "loso"),
    "folder": Protocol(None, None, None, 10, "kfold"),
}


def class_names(samples: Sequence[Sample]) -> tuple[str, ...]:
    """The labels present, in a fixed order: the six emotions, neutral, then others sorted.

    Use the same tuple for training and testing (e.g. computed on the whole index) so that a
    label index means the same class in every split.
    """
    present = {s.label for s in samples if s.label is not None}
    fixed = [c for c in (*EMOTIONS, NEUTRAL, *FOURDME_CLASSES) if c in present]
    return tuple(dict.fromkeys(fixed + sorted(present - set(fixed))))


def first_subjects(samples: Sequence[Sample], n: int) -> list[Sample]:
    """Keep the samples of the first `n` subjects in natural order (e.g. the common 60).

    Raises:
        ValueError: if fewer than `n` subjects are present.
    """
    subjects = sorted({s.subject for s in samples}, key=natural_key)
    if n > len(subjects):
        raise ValueError(f"asked for {n} subjects but the samples hold only {len(subjects)}")
    keep = set(subjects[:n])
    return [s for s in samples if s.subject in keep]


def filter_samples(samples: Sequence[Sample], expressions: Sequence[str] | None = None,
                   intensities: Sequence[int] | None = None,
                   subjects: int | None = None) -> list[Sample]:
    """Keep labelled samples of the given expressions, intensity levels and first n subjects.

    Args:
        samples: indexed samples.
        expressions: labels to keep (canonical names); None keeps every labelled sample.
        intensities: levels to keep (BU-3DFE: 0 neutral, 1-4); samples without an intensity
            (-1) are dropped when this is given. None: no intensity filter.
        subjects: keep only the first n subjects (natural order), applied after the other filters.
    Returns:
        the kept samples, in input order. Samples without a label (AU-only scans) never pass.
    """
    kept = [s for s in samples if s.label is not None
            and (expressions is None or s.label in expressions)
            and (intensities is None or s.intensity in intensities)]
    return first_subjects(kept, subjects) if subjects is not None else kept


def subject_kfold(samples: Sequence[Sample], k: int,
                  seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """Subject-independent k-fold: each subject's samples all land in one test fold.

    Subjects (natural order) are shuffled with `seed` and dealt into k groups whose sizes differ
    by at most one subject; fold i tests on group i and trains on the rest.

    Args:
        samples: the samples to split.
        k: number of folds, 2 <= k <= number of subjects.
        seed: shuffling seed; the same samples and seed give the same folds.
    Returns:
        k pairs (train, test); every sample is in exactly one test list, no subject in both
        lists of a pair.
    """
    subjects = sorted({s.subject for s in samples}, key=natural_key)
    if not 2 <= k <= len(subjects):
        raise ValueError(f"k-fold needs 2 <= k <= number of subjects ({len(subjects)}), got k={k}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    groups = np.array_split(order, k)  # k groups of subject indices
    fold_of = {subjects[j]: i for i, group in enumerate(groups) for j in group}
    return [([s for s in samples if fold_of[s.subject] != i],
             [s for s in samples if fold_of[s.subject] == i]) for i in range(k)]


def validation_split(train: Sequence[Sample], count: int,
                     seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Hold `count` subjects of a training fold out for validation: (train, validation).

    Designs, epochs and hyper-parameters are chosen on these subjects, so the test fold is read
    once, at the end. The subjects are drawn with their own `seed` (not the run's), so runs of
    any seed see the same validation people; every sample of a subject is on one side.

    Raises:
        ValueError: fewer than count + 1 subjects to choose from.
    """
    subjects = sorted({s.subject for s in train}, key=natural_key)
    if not 1 <= count < len(subjects):
        raise ValueError(f"--val_subjects={count}: the training fold has {len(subjects)} "
                         "subjects; hold out at least 1 and leave at least 1 to train on")
    held = {subjects[j] for j in np.random.default_rng(seed).permutation(len(subjects))[:count]}
    return ([s for s in train if s.subject not in held], [s for s in train if s.subject in held])


def leave_one_subject_out(samples: Sequence[Sample]) -> list[tuple[list[Sample], list[Sample]]]:
    """One fold per subject (natural order): test on that subject, train on all others."""
    subjects = sorted({s.subject for s in samples}, key=natural_key)
    if len(subjects) < 2:
        raise ValueError(f"leave-one-subject-out needs >= 2 subjects, got {len(subjects)}")
    return [([s for s in samples if s.subject != subject],
             [s for s in samples if s.subject == subject]) for subject in subjects]


# --- the torch Datasets ---------------------------------------------------------------------

SAMPLING = ("uniform", "apex", "expressive")
ONSETS = ("none", "difference", "magnified")


def with_neutral_references(samples: Sequence[Sample], index: Sequence[Sample]
                            ) -> list[Sample]:
    """Each static scan with `reference` set to its person's neutral scan from `index` (the
    first in natural order); sequences are returned unchanged (their first frame is the
    reference). A neutral scan is compared with itself: no change, as it should read.

    Raises:
        ValueError: people with a static scan but no neutral scan in the index, named.
    """
    neutral: dict[str, str] = {}
    for s in sorted((s for s in index if s.label == NEUTRAL and len(s.frames) == 1),
                    key=lambda s: natural_key(s.path)):
        neutral.setdefault(s.subject, s.path)
    static = [s for s in samples if len(s.frames) == 1]
    missing = sorted({s.subject for s in static} - set(neutral), key=natural_key)
    if missing:
        raise ValueError(f"--onset compares each scan with a neutral scan of the same person, and "
                         f"{len(missing)} people have none: {', '.join(missing[:10])}"
                         f"{' ...' if len(missing) > 10 else ''}; pass --onset=none")
    return [replace(s, reference=neutral[s.subject]) if len(s.frames) == 1 else s
            for s in samples]


def sample_frames(length: int, count: int, sampling: str = "uniform", apex: int = 0,
                  rng: np.random.Generator | None = None,
                  displacement: Sequence[float] | None = None) -> np.ndarray:
    """Pick `count` frame indices from a sequence of `length` frames.

    Args:
        length: frames available (>= 1).
        count: frames wanted, T; may exceed `length` (frames then repeat).
        sampling: "uniform", "apex" or "expressive" (see the module docstring).
        apex: apex frame index, for "apex".
        rng: random jitter for training; None = deterministic (evaluation).
        displacement: (length,) how far the face moved from the first frame, for "expressive".
    Returns:
        (T,) int64 indices in [0, length), non-decreasing.
    """
    if sampling not in SAMPLING:
        raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {SAMPLING}")
    if length < 1 or count < 1:
        raise ValueError(f"need length >= 1 and count >= 1, got {length} and {count}")
    if sampling == "uniform":
        if rng is None:  # evenly spaced, first and last frame included
            return np.linspace(0, length - 1, count).round().astype(np.int64)
        offsets = rng.random(count)  # one random position inside each of T equal segments
        return np.minimum(((np.arange(count) + offsets) * length / count).astype(np.int64),
                          length - 1)
    if sampling == "expressive":
        if displacement is None or len(displacement) != length:
            raise ValueError(f"expressive sampling needs the {length} frames' displacement")
        moved = np.asarray(displacement, dtype=np.float64)
        ranked = np.argsort(-moved, kind="stable")  # (length,) most moved first
        if rng is None:  # the apex region: the T most moved frames (repeated if too few)
            return np.sort(np.resize(ranked[:count], count)).astype(np.int64)
        expressive = np.flatnonzero(moved >= 0.5 * moved.max())  # (n,) at least the apex
        if len(expressive) < count:
            expressive = ranked[:count]
        return np.sort(rng.choice(expressive, count, replace=len(expressive) < count)
                       ).astype(np.int64)
    start = apex - count // 2  # window [start, start + T) around the apex
    if rng is not None:
        start += int(rng.integers(-(count // 2), count // 2 + 1))
    start = min(max(start, 0), max(length - count, 0))
    return np.minimum(np.arange(start, start + count), length - 1).astype(np.int64)


# the smallest change `change_rms` normalises: half an 8-bit level, below which a cached
# change is mostly rounding (a neutral-only sequence is then left unamplified, not blown up)
MIN_CHANGE_RMS = 0.5 / 255


def model_input(pixels: torch.Tensor, onset: str = "none", magnify: float = 1.0,
                change_rms: float = 0.0, common: bool = False) -> torch.Tensor:
    """Cached uint8 views (T', V, C, H, W) -> what the model reads, float (T, V, 3, H, W) in
    [0, 1]: the frames / 255, or with an onset reference (then row 0 is the first frame, T =
    T' - 1) each frame's change from it (module docstring). Grey entries get three channels.

    The change is scaled by alpha = `magnify`, or, with `change_rms` > 0, by the alpha that
    gives the most changed of the T frames that RMS (over all its views and pixels): an
    intensity-normalised change, the same size for a faint micro-expression and a broad one.

    With `common`, a frame changes only where it and the first both show the face: frames of
    a real 4D scan are each scanned on their own, with a border and holes of their own, and a
    pixel that only one of them covers holds the scanner, not the expression. A pixel shows
    the face unless it is the white background in every channel (exact for normal maps and
    shaded renders, where no face pixel is pure white).
    """
    views = pixels.float().div_(255)
    if onset != "none":
        first, views = views[:1], views[1:]  # (1, V, C, H, W), (T, V, C, H, W)
        change = views - first
        if common:
            face = (pixels < 255).any(dim=2, keepdim=True)  # (T + 1, V, 1, H, W)
            change *= face[:1] & face[1:]  # (T, V, 1, H, W): both frames show the face
        if change_rms > 0:
            largest = change.square().flatten(1).mean(dim=1).max().sqrt()  # () RMS of one frame
            change *= change_rms / largest.clamp(min=MIN_CHANGE_RMS)
        else:
            change *= magnify
        views = (change + (0.5 if onset == "difference" else first)).clamp_(0, 1)
    return views.expand(-1, -1, 3, -1, -1).contiguous()  # (T, V, 3, H, W)


class FaceViewsDataset(Dataset):
    """Cached multiview renders of samples, for a DataLoader.

    Args:
        samples: indexed samples, each with a label in `classes` and an entry in `cache`.
        cache: a filled `ViewCache`.
        frames: T, frames per item (1 for static scans).
        sampling: "uniform", "apex" or "expressive" (4D frame sampling, `sample_frames`).
        onset: "none", "difference" or "magnified": frames relative to the first (module
            docstring); magnify: its alpha; change_rms: > 0 normalises the change instead
            (`model_input`); common: a change only where both frames show the face
            (`model_input`).
        train: draw random frames (seeded by seed, epoch and index) instead of fixed ones.
        seed: base seed of the random frame choice.
        classes: class names; label = position in this tuple. Default: `class_names(samples)`;
            pass the same tuple to the train and test sets.
        aus: the action units of the auxiliary AU loss (`--lambda_au`), e.g. (1, 2, 4, ...):
            each item's meta then holds its annotated ones as a multi-hot "aus" (A,) float32.
    Item:
        views (T, V, 3, H, W) float32 in [0, 1], label int, meta dict with subject (str),
        intensity (int, -1 if none), sex, age_group, ethnicity, path (str) -- all collatable.
    Raises:
        ValueError: a sample whose label is not in `classes`, or an unknown `sampling`.
        FileNotFoundError: a sample missing from the cache (naming it).
    """

    def __init__(self, samples: Sequence[Sample], cache: ViewCache, frames: int = 1,
                 sampling: str = "uniform", train: bool = False, seed: int = 0,
                 classes: Sequence[str] | None = None, onset: str = "none",
                 magnify: float = 1.0, change_rms: float = 0.0, common: bool = False,
                 aus: Sequence[int] = ()):
        if sampling not in SAMPLING:
            raise ValueError(f"unknown frame sampling {sampling!r}; choose one of {SAMPLING}")
        if onset not in ONSETS:
            raise ValueError(f"unknown onset reference {onset!r}; choose one of {ONSETS}")
        self.onset, self.magnify, self.change_rms, self.common = onset, magnify, change_rms, common
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.samples, self.cache = list(samples), cache
        self.frames, self.sampling, self.train, self.seed = frames, sampling, train, seed
        self.classes = tuple(classes) if classes is not None else class_names(self.samples)
        self.aus = tuple(aus)
        self.epoch = 0
        unknown = {str(s.label) for s in self.samples} - set(self.classes)
        if unknown:
            raise ValueError(f"labels {sorted(unknown)} are not in classes {self.classes}; "
                             "filter the samples (filter_samples) first")
        metadata = [cache.metadata(s) for s in self.samples]  # raises naming a missing sample
        self.lengths = [m["shape"][0] for m in metadata]
        self.displacements = [m["displacement"] for m in metadata]
        # an annotated apex (4DME labels.csv) wins over the displacement estimate of the cache
        # (a scan with a neutral reference is frame 1 of its entry: its own apex)
        self.apexes = [1 if s.reference else s.apex if s.apex >= 0 else m["apex"]
                       for s, m in zip(self.samples, metadata)]

    def set_epoch(self, epoch: int) -> None:
        """Change the random frame choice of the next epoch (training only)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, dict]:
        sample = self.samples[i]
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.train else None
        if sample.reference:  # (reference, scan): the scan, T times, as a static scan repeats
            picks = np.ones(self.frames, dtype=np.int64)
        else:
            picks = sample_frames(self.lengths[i], self.frames, self.sampling, self.apexes[i],
                                  rng, self.displacements[i])
        if self.onset != "none":  # the first frame is the reference: load it with the picks
            picks = np.concatenate([[0], picks])
        pixels = torch.from_numpy(self.cache.load(sample, picks))  # (T(+1), V, C, H, W) uint8
        views = model_input(pixels, self.onset, self.magnify, self.change_rms,
                            self.common)  # (T, V, 3, H, W)
        # the sample's own augmentation seed: the same draw in any batch, on any DDP rank
        seed = int(np.random.default_rng((self.seed, self.epoch, i, 1)).integers(2 ** 62))
        meta = {"subject": sample.subject, "intensity": sample.intensity, "sex": sample.sex,
                "age_group": sample.age_group, "ethnicity": sample.ethnicity, "path": sample.path,
                "seed": seed if self.train else 0}
        if self.aus:
            shown = action_units(sample.aus)
            meta["aus"] = torch.tensor([float(au in shown) for au in self.aus])  # (A,)
        return views, self.classes.index(sample.label), meta


    def onset_and_apex(self, i: int) -> torch.Tensor:
        """Item i's first frame and its apex frame as the cache holds them (rigidly aligned to
        the first), float (2, V, 3, H, W) in [0, 1]: the pair an onset run compares (pictures)."""
        pixels = torch.from_numpy(self.cache.load(self.samples[i], [0, self.apexes[i]]))
        return model_input(pixels)

    def apex_input(self, i: int) -> torch.Tensor:
        """What the model reads of item i's apex frame, float (V, 3, H, W) in [0, 1]."""
        picks = [0, self.apexes[i]] if self.onset != "none" else [self.apexes[i]]
        pixels = torch.from_numpy(self.cache.load(self.samples[i], picks))
        return model_input(pixels, self.onset, self.magnify, self.change_rms, self.common)[-1]


def view_statistics(dataset: Sequence) -> tuple[torch.Tensor, float]:
    """Mean rendering per view slot and the global pixel std around it, in one streaming pass.

    Used to standardise a from-scratch model's inputs (FacetVLM.set_input_statistics).

    Args:
        dataset: items (views (T, V, 3, H, W) float in [0, 1], label, meta).
    Returns:
        (mean (V, 3, H, W) float32, std float): std**2 = mean over pixels of E[x^2] - E[x]^2.
    """
    if len(dataset) == 0:
        raise ValueError("view_statistics: empty dataset")
    total = squares = None
    count = 0
    for i in range(len(dataset)):
        views = dataset[i][0].double()  # (T, V, 3, H, W); float64: sums of many squares
        total = views.sum(0) if total is None else total + views.sum(0)
        squares = (views**2).sum(0) if squares is None else squares + (views**2).sum(0)
        count += views.shape[0]
    mean = total / count  # (V, 3, H, W)
    variance = (squares / count - mean**2).clamp_min(0).mean()
    return mean.float(), float(variance.sqrt())


def collate(items: list) -> dict:
    """FaceViewsDataset items -> a batch dict, the one format `facet.loop` reads.

    Returns:
        {"views": (B, T, V, 3, H, W) float32, "label": (B,) int64, "intensity": (B,) int64
        (-1 = unknown), "seed": (B,) int64 augmentation seeds, "meta": B metadata dicts
        (subject, sex, age_group, ethnicity, path)}, and "aus" (B, A) float32 multi-hot when
        the dataset has an AU list.
    """
    views, labels, metas = zip(*items)
    batch = {"views": torch.stack(views),  # (B, T, V, 3, H, W)
             "label": torch.tensor(labels, dtype=torch.long),
             "intensity": torch.tensor([m["intensity"] for m in metas], dtype=torch.long),
             "seed": torch.tensor([m["seed"] for m in metas], dtype=torch.long),
             "meta": list(metas)}
    if "aus" in metas[0]:
        batch["aus"] = torch.stack([m["aus"] for m in metas])  # (B, A)
    return batch
