"""facet.reports: metrics against hand-computed oracles, pooled leave-one-subject-out scores,
predictions.csv, and readable figures."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from facet import reports
from facet.reports import (confusion_matrix, fold_table, fold_table_markdown, intensity_counts,
                           pooled_metrics, summarize)

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


def test_an_absent_class_has_no_recall_but_an_f1_of_0_when_predicted():
    # class c never occurs as a true label: its recall is undefined (not in the UAR), but it
    # took a sample of b, so its F1 is 0 and counts in the macro-F1 (sklearn: labels=all);
    # class d, neither true nor predicted, has no F1 at all
    m = summarize(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 2]), 4), list("abcd"))
    assert m["per_class"]["c"] is None and m["per_class_f1"]["c"] == 0.0
    assert m["per_class_f1"]["d"] is None
    assert m["uar"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)


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
    assert "| accuracy | 85.00 +- 7.07 | - |" in fold_table_markdown(table)


def test_pooled_loso_metrics_are_computed_on_the_summed_confusion():
    # Two LOSO folds. Fold 1: one sample of class a, predicted a. Fold 2: classes a, b, b, b;
    # predictions a, a, a, b. Pooled: a 2/2 right, b 1/3 right.
    fold1 = summarize(confusion_matrix(torch.tensor([0]), torch.tensor([0]), 2), ["a", "b"])
    fold2 = summarize(confusion_matrix(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 0, 1]), 2),
                      ["a", "b"])
    pooled = pooled_metrics([fold1, fold2])
    assert pooled["confusion"] == [[2, 0], [2, 1]]
    # by hand: recall a = 2/2, b = 1/3; F1 a = 2*2 / (2*2 + 2 + 0) = 2/3, b = 2 / (2 + 0 + 2) = 1/2
    assert pooled["uar"] == pytest.approx((1 + 1 / 3) / 2)
    assert pooled["uf1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # the mean of per-fold UF1 weighs the one-sample fold like the four-sample one: different
    assert np.mean([fold1["uf1"], fold2["uf1"]]) != pytest.approx(pooled["uf1"])
    text = fold_table_markdown(fold_table([fold1, fold2], ("uf1",)), pooled)
    assert f"| {100 * pooled['uf1']:.2f} |" in text


def test_predictions_csv_has_one_row_per_sample(tmp_path):
    rows = [{"path": "F1/a.wrl", "subject": "F1", "label": "a", "predicted": "b",
             "probabilities": [0.25, 0.75]}]
    reports.write_predictions(tmp_path / "p.csv", rows, ["a", "b"])
    got = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert got == [{"file": "F1/a.wrl", "subject": "F1", "label": "a", "predicted": "b",
                    "p_a": "0.2500", "p_b": "0.7500"}]


def _size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.verify()  # a complete, valid PNG
    with Image.open(path) as img:
        return img.size


def test_figures_are_written_and_curves_show_the_loss_parts(tmp_path):
    names = ["anger", "joy", "fear"]
    confusion = np.eye(3, dtype=int) * 4
    assert _size(reports.plot_confusion(confusion, names, tmp_path / "c.png"))[0] > 100
    records = [{"step": s, "loss": 2.0 / s, "ce": 1.8 / s, "cons": 0.2, "lr": 1e-3}
               for s in range(1, 5)]
    records.append({"epoch": 0, "step": 4, "train_acc": 0.5, "test_acc": 0.4})
    drawn = reports.curve_series(records)
    assert drawn["losses"].keys() == {"total (per step)", "cross-entropy", "multiview consistency"}
    assert drawn["accuracy"]["held-out split"] == ((4,), (0.4,))
    assert _size(reports.plot_curves(records, tmp_path / "sub" / "curves.png"))[0] > 100
    weights = torch.softmax(torch.randn(3, 5), dim=-1)  # (K, V)
    reports.plot_view_weights(weights, [f"yaw {y}" for y in range(5)], tmp_path / "w.png", names)
    assert _size(tmp_path / "w.png")[0] > 100


def test_pretraining_curves_keep_retrieval_and_zero_shot_apart(tmp_path):
    """In-batch retrieval (chance 1 / batch) and zero-shot accuracy (chance 1 / K) are two
    quantities: each gets its own panel, so no axis mixes them."""
    records = [{"step": s, "loss": 4.8 - s / 10, "lr": 1e-3} for s in range(1, 5)]
    records.append({"epoch": 0, "step": 4, "train_loss": 4.5, "train_acc": 0.02, "val_acc": 0.3})
    drawn = reports.curve_series(records, reports.PRETRAINING_CURVES)
    homes = {label: panel for panel, curves in drawn.items() for label in curves}
    assert homes["training split"] != homes["validation people"]
    assert drawn[homes["training split"]]["training split"] == ((4,), (0.02,))
    path = reports.plot_curves(records, tmp_path / "p.png", reports.PRETRAINING_CURVES)
    assert _size(path)[0] > _size(reports.plot_curves(records, tmp_path / "c.png"))[0]  # 4 panels


def test_view_weights_start_at_uniform_on_an_axis_that_says_it_is_zoomed():
    import matplotlib.pyplot as plt

    weights = np.array([[0.32, 0.33, 0.35], [0.34, 0.33, 0.33]])  # (K, V): MTGF's usual range
    fig, ax = plt.subplots()
    reports.draw_view_weights(ax, weights, ["yaw -20", "yaw +0", "yaw +20"], ["a", "b"])
    low, high = ax.get_ylim()
    assert 0.3 < low < 0.32 and 0.35 < high < 0.4  # the axis shows the differences
    assert f"{low:.3f}, not 0" in ax.get_ylabel()
    bars = [patch for patch in ax.patches]
    assert all(abs(bar.get_y() - 1 / 3) < 1e-9 for bar in bars)  # each bar starts at uniform
    tops = sorted(round(bar.get_y() + bar.get_height(), 6) for bar in bars)
    assert tops == sorted(weights.ravel().round(6).tolist())  # and ends at its weight
    plt.close(fig)
