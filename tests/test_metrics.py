"""facet.metrics against hand-computed oracles."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facet.metrics import (confusion_matrix, fold_table, fold_table_markdown, intensity_counts,
                           summarize)

# 3 classes; true: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
TARGETS = torch.tensor([0, 0, 0, 1, 1, 2])
PREDS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_confusion_counts():
    c = confusion_matrix(TARGETS, PREDS, 3)
    assert c.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def test_summary_matches_hand_computation():
    m = summarize(confusion_matrix(TARGETS, PREDS, 3), ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    # F1 = 2TP / (2TP + FP + FN): a 4/5, b 2/4, c 2/3
    f1 = [4 / 5, 2 / 4, 2 / 3]
    assert m["per_class_f1"] == pytest.approx(dict(zip("abc", f1)))
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3) == pytest.approx(m["uf1"])
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_absent_class_is_excluded_not_zero():
    # class 2 never occurs as a true label: its recall is undefined, not 0
    m = summarize(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 2]), 3), list("abc"))
    assert m["per_class"]["c"] is None
    assert m["uar"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)


def test_counts_from_two_ranks_add_up_to_the_whole():
    # the DDP story: per-rank confusions summed == confusion of all samples
    whole = confusion_matrix(TARGETS, PREDS, 3)
    parts = confusion_matrix(TARGETS[::2], PREDS[::2], 3) + confusion_matrix(TARGETS[1::2],
                                                                             PREDS[1::2], 3)
    assert torch.equal(whole, parts)


def test_per_intensity():
    levels = torch.tensor([3, 3, 4, 4, -1, 4])
    counts = intensity_counts(TARGETS, PREDS, levels, 5)
    assert counts[3].tolist() == [2, 2] and counts[4].tolist() == [2, 3]
    m = summarize(confusion_matrix(TARGETS, PREDS, 3), list("abc"), counts)
    assert m["per_intensity"] == pytest.approx({"3": 1.0, "4": 2 / 3})


def test_fold_table():
    table = fold_table([{"accuracy": 0.8, "macro_f1": 0.7}, {"accuracy": 0.9, "macro_f1": None}])
    assert table["accuracy"]["mean"] == pytest.approx(0.85)
    assert table["accuracy"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert table["macro_f1"]["std"] == 0.0 and not math.isnan(table["macro_f1"]["mean"])
    assert "| accuracy | 85.00 +- 7.07 |" in fold_table_markdown(table)
