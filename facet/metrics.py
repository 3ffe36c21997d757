"""Classification metrics for expression recognition, computed from a confusion matrix.

Everything derives from counts, because counts add up: each DDP rank builds its own confusion
matrix (K, K) and per-intensity counts, `facet.distributed.all_reduce_sum` adds them, and the
metrics below are computed once from the totals, so no prediction has to travel between ranks.

Conventions: confusion[i, j] = number of samples of true class i predicted as class j.
- accuracy: trace / total.
- per-class accuracy = recall of that class = confusion[i, i] / row sum (NaN if class i has no
  sample; such classes are left out of UAR and macro-F1).
- macro-F1: mean over classes of F1 = 2 TP / (2 TP + FP + FN), over classes that occur as a true
  label (a class never true but predicted only adds false positives to others' precision).
- UAR (unweighted average recall) and UF1 (unweighted F1), the micro-expression metrics of the
  MEGC / 4DME protocol: with leave-one-subject-out, TP/FP/FN are summed over all folds *before*
  the per-class scores, which is what computing them from the summed confusion matrix does.
  So UAR = mean per-class recall and UF1 = macro-F1 of the pooled confusion matrix.
"""
from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(targets: torch.Tensor | np.ndarray, predictions: torch.Tensor | np.ndarray,
                     num_classes: int) -> torch.Tensor:
    """Count (true, predicted) pairs.

    Args:
        targets: (N,) integer class indices in [0, K).
        predictions: (N,) integer class indices in [0, K).
        num_classes: K.

    Returns:
        (K, K) int64 tensor, rows = true class, columns = predicted class.

    Raises:
        ValueError: mismatched lengths or an index outside [0, K).
    """
    targets = torch.as_tensor(targets).long().flatten()
    predictions = torch.as_tensor(predictions).long().flatten()
    if targets.shape != predictions.shape:
        raise ValueError(f"targets {tuple(targets.shape)} and predictions "
                         f"{tuple(predictions.shape)} differ in length")
    for name, t in (("targets", targets), ("predictions", predictions)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} hold indices outside [0, {num_classes})")
    flat = targets * num_classes + predictions  # one bin per (true, predicted) pair
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def intensity_counts(targets: torch.Tensor, predictions: torch.Tensor, intensities: torch.Tensor,
                     num_levels: int) -> torch.Tensor:
    """Correct and total counts per expression intensity level.

    Args:
        targets, predictions: (N,) class indices.
        intensities: (N,) integer level per sample (e.g. BU-3DFE 1..4; 0 = neutral; -1 = unknown,
            ignored).
        num_levels: number of level slots I (levels 0..I-1).

    Returns:
        (I, 2) int64 tensor: [:, 0] correct, [:, 1] total.
    """
    intensities = torch.as_tensor(intensities).long().flatten()
    keep = (intensities >= 0) & (intensities < num_levels)
    correct = (torch.as_tensor(targets) == torch.as_tensor(predictions)).long().flatten()
    counts = torch.zeros(num_levels, 2, dtype=torch.long)
    counts[:, 0].index_add_(0, intensities[keep], correct[keep])
    counts[:, 1].index_add_(0, intensities[keep], torch.ones_like(correct[keep]))
    return counts


def per_class_scores(confusion: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Per-class recall, precision and F1 from a confusion matrix.

    Args:
        confusion: (K, K) counts.

    Returns:
        {"support": (K,) int, "recall": (K,), "precision": (K,), "f1": (K,)} as float64 arrays;
        recall is NaN for a class without samples, precision NaN for a class never predicted,
        F1 is 0 when TP = 0 and the class occurs.
    """
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    support, predicted = c.sum(axis=1), c.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        denom = 2 * tp + (predicted - tp) + (support - tp)  # 2TP + FP + FN
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    return {"support": support.astype(np.int64), "recall": recall, "precision": precision, "f1": f1}


def summarize(confusion: torch.Tensor | np.ndarray, class_names: list[str],
              intensity: torch.Tensor | np.ndarray | None = None) -> dict:
    """All reported metrics as a JSON-ready dict.

    Args:
        confusion: (K, K) counts (rows true, columns predicted).
        class_names: K names, in class-index order.
        intensity: optional (I, 2) [correct, total] counts per level from `intensity_counts`.

    Returns:
        {"n": int, "accuracy": float, "per_class": {name: recall}, "per_class_f1": {...},
         "macro_f1": float, "uar": float, "uf1": float, "confusion": list[list[int]],
         "classes": list[str], "per_intensity": {level: accuracy} (levels with samples only)}.
        Undefined values (no samples) are None.

    Raises:
        ValueError: confusion is not (K, K) with K = len(class_names).
    """
    c = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if c.shape != (k, k):
        raise ValueError(f"confusion matrix has shape {c.shape}, expected ({k}, {k}) for "
                         f"{k} class names")
    scores = per_class_scores(c)
    present = scores["support"] > 0
    total = int(c.sum())
    macro_f1 = float(np.mean(scores["f1"][present])) if present.any() else None
    uar = float(np.mean(scores["recall"][present])) if present.any() else None
    result = {
        "n": total,
        "accuracy": float(np.trace(c) / total) if total else None,
        "per_class": {n: _num(r) for n, r in zip(class_names, scores["recall"])},
        "per_class_f1": {n: _num(f) for n, f in zip(class_names, scores["f1"])},
        "macro_f1": macro_f1,
        "uar": uar,
        "uf1": macro_f1,  # same quantity on a pooled confusion matrix (see module docstring)
        "confusion": c.tolist(),
        "classes": list(class_names),
    }
    if intensity is not None:
        counts = np.asarray(intensity, dtype=np.int64)
        result["per_intensity"] = {str(level): float(ok / n)
                                   for level, (ok, n) in enumerate(counts) if n > 0}
    return result


def _num(x: float) -> float | None:
    """NaN -> None so JSON stays valid."""
    return None if np.isnan(x) else float(x)


def fold_table(fold_metrics: list[dict], keys: tuple[str, ...] = ("accuracy", "macro_f1")) -> dict:
    """Mean and sample standard deviation (ddof=1) of metrics over k folds.

    Args:
        fold_metrics: one `summarize` dict per fold.
        keys: the scalar metrics to aggregate.

    Returns:
        {key: {"mean": float, "std": float, "folds": [per-fold values]}}; std is 0 for one fold.
    """
    table = {}
    for key in keys:
        values = [m[key] for m in fold_metrics if m.get(key) is not None]
        if not values:
            continue
        arr = np.asarray(values, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        table[key] = {"mean": float(arr.mean()), "std": std, "folds": [float(v) for v in arr]}
    return table


def fold_table_markdown(table: dict) -> str:
    """Render `fold_table` output as a markdown table (values in percent, mean +- std)."""
    lines = ["| metric | mean +- std (%) | folds |", "|---|---|---|"]
    for key, row in table.items():
        folds = " ".join(f"{100 * v:.1f}" for v in row["folds"])
        lines.append(f"| {key} | {100 * row['mean']:.2f} +- {100 * row['std']:.2f} | {folds} |")
    return "\n".join(lines) + "\n"
