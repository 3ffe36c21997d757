"""Protocols: filters, subject-disjoint folds that cover every sample once, deterministic."""
from __future__ import annotations

from collections import Counter

import pytest

from facet.build import make_splits
from facet.config import TrainConfig
from facet.data.datasets import (PROTOCOLS, class_names, filter_samples, first_subjects,
                                 leave_one_subject_out, subject_kfold, validation_split)
from facet.data.layouts import EMOTIONS, Sample


def bu3dfe_like(subjects: int = 13) -> list[Sample]:
    """Per subject: neutral + 6 emotions x 4 intensities = 25 samples, subjects F1..F<n>."""
    out = []
    for j in range(1, subjects + 1):
        out.append(Sample((f"F{j}/ne.wrl",), "neutral", f"F{j}", 0))
        out += [Sample((f"F{j}/{e}{i}.wrl",), e, f"F{j}", i) for e in EMOTIONS for i in range(1, 5)]
    return out


def test_kfold_is_subject_disjoint_covers_once_and_is_deterministic():
    samples = bu3dfe_like(13)
    folds = subject_kfold(samples, k=5, seed=3)
    tested = Counter(s.path for _, test in folds for s in test)
    assert tested == Counter(s.path for s in samples)  # every sample in exactly one test fold
    for train, test in folds:
        assert not {s.subject for s in train} & {s.subject for s in test}
        assert len(train) + len(test) == len(samples)
    sizes = sorted(len({s.subject for s in test}) for _, test in folds)
    assert sizes == [2, 2, 3, 3, 3]  # 13 subjects dealt as evenly as possible
    assert subject_kfold(samples, 5, seed=3) == folds
    assert subject_kfold(samples, 5, seed=4) != folds
    with pytest.raises(ValueError, match="k-fold needs"):
        subject_kfold(samples, k=14)


def test_the_fold_split_depends_on_the_folds_not_the_seed():
    """A seed study compares seeds on the same test people."""
    samples = bu3dfe_like(13)
    assert make_splits(samples, TrainConfig(seed=0)) == make_splits(samples, TrainConfig(seed=7))
    assert make_splits(samples, TrainConfig(folds=5)) != make_splits(samples, TrainConfig())


def test_validation_split_holds_out_whole_training_subjects():
    samples = bu3dfe_like(13)
    for i, (train, test) in enumerate(subject_kfold(samples, k=5)):
        kept, validation = validation_split(train, 2, seed=i)
        people = {s.subject for s in validation}
        assert len(people) == 2
        assert not people & {s.subject for s in kept}  # whole subjects
        assert not people & {s.subject for s in test}  # never a test person
        assert sorted(kept + validation, key=str) == sorted(train, key=str)
        assert validation_split(train, 2, seed=i) == (kept, validation)  # deterministic
    with pytest.raises(ValueError, match="--val_subjects=13"):
        validation_split(samples, 13)


def test_leave_one_subject_out():
    samples = bu3dfe_like(3)
    folds = leave_one_subject_out(samples)
    assert [{s.subject for s in test} for _, test in folds] == [{"F1"}, {"F2"}, {"F3"}]
    assert all(len(train) == 50 and len(test) == 25 for train, test in folds)


def test_bu3dfe_protocol_two_highest_intensities_first_60_subjects():
    samples = bu3dfe_like(70)
    protocol = PROTOCOLS["bu3dfe"]
    kept = filter_samples(samples, protocol.expressions, protocol.intensities, protocol.subjects)
    assert len(kept) == 60 * 6 * 2
    assert {s.intensity for s in kept} == {3, 4} and "neutral" not in {s.label for s in kept}
    # natural order: F1..F60, not the ASCII order that would take F1, F10, F100...
    assert {s.subject for s in kept} == {f"F{j}" for j in range(1, 61)}
    assert PROTOCOLS["bu3dfe"].folds == 10


def test_filters():
    samples = bu3dfe_like(4) + [Sample(("au.bnt",), None, "F1", aus="LFAU_12")]
    assert len(filter_samples(samples)) == 100  # the unlabelled AU scan never passes
    assert {s.label for s in filter_samples(samples, expressions=["fear"])} == {"fear"}
    assert len(filter_samples(samples, intensities=[0])) == 4
    assert len(first_subjects(samples, 2)) == 51  # F1 and F2, F1 with its AU scan
    with pytest.raises(ValueError, match="only 4"):
        first_subjects(samples, 5)


def test_class_names_fixed_order():
    samples = [Sample(("a",), lab, "s") for lab in ("surprise", "neutral", "anger", "zz", "others")]
    assert class_names(samples) == ("anger", "surprise", "neutral", "others", "zz")


def test_train_macro_trains_on_macro_clips_and_scores_micro_clips_only():
    """4DME's protocol (--train_macro): macro clips join the training side of every fold; the
    held-out side keeps the micro clips, so the score is a micro-expression score."""
    clips = [Sample((f"S{j}/{kind}{c}",), "positive", f"S{j}", clip_kind=kind)
             for j in range(1, 4) for kind in ("micro", "macro") for c in range(2)]
    for train, test in make_splits(clips, TrainConfig(split="loso", train_macro=True)):
        assert {s.clip_kind for s in train} == {"micro", "macro"}
        assert {s.clip_kind for s in test} == {"micro"} and len(test) == 2
    folds = make_splits(clips, TrainConfig(split="loso"))  # without it, the folds keep all
    assert all(len(test) == 4 for _, test in folds)
