"""Evaluation protocols: label tables, sample filters, and subject-independent splits.

The literature evaluates 3D/4D facial expression recognition *subject-independently*: no person
appears in both the training and the test set, so a model cannot score by recognising faces.
This module holds the tables and splits that make that concrete (DESIGN.md, "Data"):

- label tables: the canonical emotion names, the BP4D task -> emotion mapping, the 4DME classes;
- `PROTOCOLS`: the common setting per dataset (BU-3DFE: 60 subjects, two highest intensities,
  10-fold; BU-4DFE: 10-fold; Bosphorus: 60 subjects, 10-fold; BP4D: cross-dataset test set;
  4DME: leave-one-subject-out);
- filters (`filter_samples`, `first_subjects`), splits (`subject_kfold`,
  `leave_one_subject_out`) and `cross_dataset` (train on one root, test on another).

Splits work on anything with `.subject` and `.label` attributes (a `facet.datasets.Sample`) and
return lists in the input order, so a fixed index gives fixed folds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # type hints only: facet.datasets imports this module's tables
    from facet.datasets import Sample

EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")  # the six basic
NEUTRAL = "neutral"

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

# 4DME (Li et al., IEEE Trans. Affective Computing 2022) labels clips with 5 emotion categories.
# Recalled from the dataset's description, not verified against the release (FORMATS.md).
FOURDME_CLASSES = ("positive", "negative", "surprise", "repression", "others")


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


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: "F2" < "F10", "9.wrl" < "10.wrl"."""
    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in re.split(r"(\d+)", str(text)))


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


def apply_protocol(samples: Sequence[Sample], kind: str) -> list[Sample]:
    """Filter `samples` by the usual setting of dataset `kind` (see `PROTOCOLS`)."""
    if kind not in PROTOCOLS:
        raise ValueError(f"no protocol for dataset kind {kind!r}; known: {sorted(PROTOCOLS)}")
    p = PROTOCOLS[kind]
    return filter_samples(samples, p.expressions, p.intensities, p.subjects)


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


def leave_one_subject_out(samples: Sequence[Sample]) -> list[tuple[list[Sample], list[Sample]]]:
    """One fold per subject (natural order): test on that subject, train on all others."""
    subjects = sorted({s.subject for s in samples}, key=natural_key)
    if len(subjects) < 2:
        raise ValueError(f"leave-one-subject-out needs >= 2 subjects, got {len(subjects)}")
    return [([s for s in samples if s.subject != subject],
             [s for s in samples if s.subject == subject]) for subject in subjects]


def cross_dataset(train: Sequence[Sample], test: Sequence[Sample]
                  ) -> tuple[list[Sample], list[Sample], tuple[str, ...]]:
    """Train on one dataset, test on another, over the classes both have.

    E.g. train on BU-4DFE, test on BP4D (whose tasks map to a subset of the emotions through
    `BP4D_TASKS`). Subjects of different datasets are different people by construction.

    Returns:
        (train samples, test samples, shared class names in `class_names` order).
    """
    shared = set(class_names(train)) & set(class_names(test))
    if not shared:
        raise ValueError(f"the datasets share no class: train has {class_names(train)}, "
                         f"test has {class_names(test)}")
    classes = tuple(c for c in class_names(train) if c in shared)
    return ([s for s in train if s.label in shared], [s for s in test if s.label in shared],
            classes)
