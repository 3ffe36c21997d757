"""Evaluation protocols: which samples count, and subject-independent splits.

The data stage after `facet.layouts`: the literature evaluates 3D/4D facial expression
recognition *subject-independently* -- no person appears in both the training and the test set,
so a model cannot score by recognising faces. `PROTOCOLS` holds the common setting per dataset
(BU-3DFE: 60 subjects, the two highest intensities, 10-fold; BU-4DFE: 10-fold; Bosphorus: 60
subjects, 10-fold; BP4D: a cross-dataset test set; 4DME: leave-one-subject-out);
`filter_samples` applies one, `subject_kfold` and `leave_one_subject_out` split.

Splits work on `facet.layouts.Sample`s and return lists in the input order, so a fixed index
gives fixed folds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from facet.layouts import EMOTIONS, FOURDME_CLASSES, NEUTRAL, Sample, natural_key


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


def leave_one_subject_out(samples: Sequence[Sample]) -> list[tuple[list[Sample], list[Sample]]]:
    """One fold per subject (natural order): test on that subject, train on all others."""
    subjects = sorted({s.subject for s in samples}, key=natural_key)
    if len(subjects) < 2:
        raise ValueError(f"leave-one-subject-out needs >= 2 subjects, got {len(subjects)}")
    return [([s for s in samples if s.subject != subject],
             [s for s in samples if s.subject == subject]) for subject in subjects]
