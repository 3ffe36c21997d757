"""What a run reports: metrics from confusion matrices, per-sample predictions, and figures.

The last stage of facet's pipeline. Everything derives from counts, because counts add up: each
DDP rank builds its own confusion matrix (K, K) and per-intensity counts,
`facet.runtime.all_reduce_sum` adds them, and the metrics are computed once from the totals.

Conventions: confusion[i, j] = number of samples of true class i predicted as class j.
- accuracy: trace / total.
- per-class accuracy = recall of that class = confusion[i, i] / row sum (None if class i has
  no sample; such classes are left out of UAR).
- macro-F1: mean over classes of F1 = 2 TP / (2 TP + FP + FN), over every class that occurs as
  a true label or is predicted: a chosen class with no true sample that takes samples has
  F1 = 0 and counts (as sklearn's macro-F1 over all labels); one neither true nor predicted has
  no F1 (0 / 0) and is left out.
- UAR (unweighted average recall) and UF1 (unweighted F1), the micro-expression metrics of the
  MEGC / 4DME protocol: with leave-one-subject-out, TP/FP/FN are summed over all folds *before*
  the per-class scores, which is what computing them from the pooled (summed) confusion matrix
  does (`pooled_metrics`). So UAR = mean per-class recall and UF1 = macro-F1 of the pooled
  matrix; averaging per-fold UF1 instead would weigh a one-sample fold like a large one.
Figures use matplotlib's Agg backend (no display needed); each function draws one figure,
writes it as PNG and closes it.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: must happen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from facet.atomic import atomic_file, write_atomic  # noqa: E402
from facet.camera import view_name  # noqa: E402

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
    # F1 counts every class that occurs or is predicted: a chosen class that takes samples it
    # should not is an error (F1 0), as in sklearn's macro-F1 over all labels; only a class
    # neither true nor predicted (0 / 0) is left out. Recall (UAR) needs true samples.
    defined = ~np.isnan(scores["f1"])
    macro_f1 = float(np.mean(scores["f1"][defined])) if defined.any() else None
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
        result["intensity_counts"] = counts.tolist()  # [correct, total] per level, for pooling
        result["per_intensity"] = {str(level): float(ok / n)
                                   for level, (ok, n) in enumerate(counts) if n > 0}
    return result


def write_predictions(path: str | Path, predictions: list[dict], classes: Sequence[str]) -> Path:
    """predictions.csv: one row per sample -- file, subject, true label, predicted label, and the
    probability of every class (columns p_<class>), written atomically."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "subject", "label", "predicted", *(f"p_{c}" for c in classes)])
    for p in predictions:
        writer.writerow([p["path"], p["subject"], p["label"], p["predicted"],
                         *(f"{q:.4f}" for q in p["probabilities"])])
    write_atomic(path, text.getvalue())
    return Path(path)


def write_skipped(path: str | Path, skipped: Sequence[tuple[str, str]],
                  failed: Sequence[tuple[str, str]]) -> Path:
    """skipped.csv: every file that was meant to be a sample and is not, with the stage that
    dropped it ("index": unusable file or labels.csv row; "render": failed to load or render)
    and the reason; a header alone when nothing was dropped. Written atomically."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", "stage", "reason"])
    writer.writerows([path, stage, reason] for stage, rows in (("index", skipped),
                                                               ("render", failed))
                     for path, reason in rows)
    write_atomic(path, text.getvalue())
    return Path(path)


def dropped_summary(skipped: Sequence[tuple[str, str]], failed: Sequence[tuple[str, str]],
                    listing: Path, show: int = 5) -> str:
    """The lines a run prints about its dropped files: counts, the first few, where the rest are."""
    rows = [("skipped", p, r) for p, r in skipped] + [("render failed", p, r) for p, r in failed]
    lines = [f"{len(skipped)} file(s) skipped while indexing, {len(failed)} failed to render"
             + (f"; all listed in {listing}" if rows else "")]
    lines += [f"  {what} {path}: {reason}" for what, path, reason in rows[:show]]
    if len(rows) > show:
        lines.append(f"  ... and {len(rows) - show} more in {listing}")
    return "\n".join(lines)


def metrics_table(metrics: dict) -> str:
    """Per-class accuracy (recall) and F1, then the summary line (and per intensity), as text."""
    fmt = lambda x: "-" if x is None else f"{100 * x:.1f}"
    lines = [f"{'class':>14}  {'n':>5}  {'acc %':>6}  {'F1 %':>6}"]
    for name, row in zip(metrics["classes"], metrics["confusion"]):
        lines.append(f"{name:>14}  {sum(row):>5}  {fmt(metrics['per_class'][name]):>6}  "
                     f"{fmt(metrics['per_class_f1'][name]):>6}")
    lines.append(f"accuracy {fmt(metrics['accuracy'])}%  macro-F1 {fmt(metrics['macro_f1'])}%  "
                 f"UAR {fmt(metrics['uar'])}%  (n = {metrics['n']})")
    if metrics.get("per_intensity"):
        lines.append("per intensity: " + ", ".join(f"{k}: {100 * v:.1f}%"
                                                   for k, v in metrics["per_intensity"].items()))
    return "\n".join(lines)


def write_report(folder: str | Path, metrics: dict, classes: Sequence[str],
                 views: Sequence[tuple[float, float]], curves: tuple | None = None,
                 **extra) -> None:
    """A run's or an evaluation's files in `folder`: metrics.json (the metrics and `extra`, e.g.
    the config), predictions.csv, confusion.png, view_weights.png (for a model that weighs its
    views: not the CNN baseline), and curves.png (its panels:
    `curves`, default CURVES, see `plot_curves`) when `extra` holds the training log as
    `log`."""
    folder = Path(folder)
    log = extra.pop("log", None)
    scalars = {k: v for k, v in metrics.items() if k != "predictions"}
    write_atomic(folder / "metrics.json", json.dumps({**scalars, **extra}, indent=1))
    if "predictions" in metrics:
        write_predictions(folder / "predictions.csv", metrics["predictions"], classes)
    plot_confusion(metrics["confusion"], classes, folder / "confusion.png")
    if metrics.get("view_weights") is not None:
        names = [view_name(yaw, pitch) for yaw, pitch in views]
        plot_view_weights([metrics["view_weights"][c] for c in classes], names,
                          folder / "view_weights.png", class_names=list(classes))
    if log is not None:
        plot_curves(log, folder / "curves.png", curves or CURVES)


def _num(x: float) -> float | None:
    """NaN -> None so JSON stays valid."""
    return None if np.isnan(x) else float(x)


def pooled_metrics(fold_metrics: list[dict]) -> dict:
    """Metrics of the predictions of all folds together: `summarize` of the summed confusion
    matrices (and intensity counts). The literature's UF1 / UAR for leave-one-subject-out."""
    confusion = sum(np.asarray(m["confusion"], dtype=np.int64) for m in fold_metrics)
    levels = [m.get("intensity_counts") for m in fold_metrics]
    counts = sum(np.asarray(c, dtype=np.int64) for c in levels) if all(levels) else None
    return summarize(confusion, fold_metrics[0]["classes"], counts)


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


def fold_table_markdown(table: dict, pooled: dict | None = None) -> str:
    """`fold_table` output as a markdown table in percent: mean +- std over folds, every fold,
    and the score of all folds' predictions pooled (`pooled_metrics`) when given."""
    lines = ["| metric | mean +- std over folds (%) | pooled (%) | folds |", "|---|---|---|---|"]
    for key, row in table.items():
        folds = " ".join(f"{100 * v:.1f}" for v in row["folds"])
        both = pooled is not None and pooled.get(key) is not None
        pooled_text = f"{100 * pooled[key]:.2f}" if both else "-"
        lines.append(f"| {key} | {100 * row['mean']:.2f} +- {100 * row['std']:.2f} | "
                     f"{pooled_text} | {folds} |")
    return "\n".join(lines) + "\n"


# --- figures --------------------------------------------------------------------------------

def _save(fig, path: str | Path) -> Path:
    """Write a figure as PNG (atomically) and close it."""
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_confusion(confusion: np.ndarray | list, class_names: Sequence[str], path: str | Path,
                   title: str = "confusion (rows: true, cells: % of row)") -> Path:
    """Confusion matrix as a row-normalised heat map with counts.

    Args:
        confusion: (K, K) counts, rows = true class.
        class_names: K labels.
        path: output PNG.
        title: figure title.

    Returns:
        The written path.
    """
    c = np.asarray(confusion, dtype=np.float64)
    rows = c.sum(axis=1, keepdims=True)
    frac = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * frac[i, j]:.0f}\n({int(c[i, j])})", ha="center", va="center",
                    fontsize=7, color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


# log.jsonl keys drawn by `plot_curves`, panel by panel: (title, y label, {key: legend label})
CURVES = (("losses", "loss (nats)", {"loss": "total (per step)", "ce": "cross-entropy",
                                     "cons": "multiview consistency", "aff": "AffectVLM",
                                     "train_loss": "total (epoch mean)"}),
          ("accuracy", "accuracy", {"train_acc": "training split", "val_acc": "validation split",
                                    "val_acc_ema": "validation split, moving average",
                                    "test_acc": "held-out split",
                                    "test_acc_ema": "held-out split, moving average"}),
          ("learning rate", "learning rate", {"lr": "lr"}))
# CLIP pretraining logs the same keys for other quantities: train_acc is in-batch retrieval
# (each image's caption among the batch's, chance 1 / batch size) and val_acc the zero-shot
# accuracy over the classes (chance 1 / K) on its validation people (test_acc: the evaluation
# set, in the logs of runs made before those existed), so each gets its own panel and axis
PRETRAINING_CURVES = (
    ("InfoNCE", "loss (nats)", {"loss": "per step", "train_loss": "epoch mean"}),
    ("caption retrieval (training split)", "in-batch top-1 image -> caption",
     {"train_acc": "training split"}),
    ("zero-shot classification (people never trained on)", "accuracy over the classes",
     {"val_acc": "validation people", "test_acc": "evaluation set (older runs)"}),
    ("learning rate", "learning rate", {"lr": "lr"}))


def curve_series(records: list[dict], panels: tuple = CURVES) -> dict[str, dict[str, tuple]]:
    """The curves `plot_curves` draws: panel -> legend label -> (steps, values)."""
    series = {}
    for title, _, keys in panels:
        for key, label in keys.items():
            points = [(r["step"], r[key]) for r in records if key in r and "step" in r]
            if points:
                series.setdefault(title, {})[label] = tuple(zip(*points))
    return series


def plot_curves(records: list[dict], path: str | Path, panels: tuple = CURVES) -> Path:
    """Training curves from log.jsonl records against the optimizer step, one panel per
    quantity: by default the loss and its parts (cross-entropy, multiview consistency,
    AffectVLM), accuracies, learning rate; `PRETRAINING_CURVES` for CLIP pretraining.

    Args:
        records: log rows, e.g. {"step": 10, "loss": 1.2, "ce": 1.1, "cons": 0.9, "lr": 1e-3}
            or {"epoch": 0, "step": 40, "train_acc": 0.5, "test_acc": 0.4}.
        path: output PNG.
        panels: (title, y label, {log key: legend label}) per panel.
    Returns:
        The written path.
    """
    series = curve_series(records, panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.5))
    for ax, (title, ylabel, _) in zip(axes, panels):
        for label, (x, y) in series.get(title, {}).items():
            ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, label=label)
        ax.set(xlabel="optimizer step", ylabel=ylabel, title=title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def draw_view_weights(ax, weights: np.ndarray | torch.Tensor, view_names: Sequence[str],
                      group_labels: Sequence[str] | None = None) -> None:
    """Mean view weights as bars that start at the uniform weight 1 / V, on a zoomed axis.

    MTGF's weights stay within a few hundredths of 1 / V, which bars from 0 would show as equal
    columns; drawn from 1 / V, a bar's length is its view's departure from equal trust, and the
    axis label says that the axis does not start at 0.

    Args:
        ax: the matplotlib axes to draw into.
        weights: (V,) mean weights, one bar per view named on the x axis; or (K, V), a group
            of V bars (a legend) per group, e.g. per true class.
        view_names: V labels, e.g. "yaw -20".
        group_labels: K x-axis labels of the groups of (K, V) weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    views = w.shape[-1]
    uniform = 1.0 / views
    if w.ndim == 1:
        ax.bar(np.arange(views), w - uniform, 0.7, bottom=uniform, color="C2")
        ax.set_xticks(range(views), list(view_names), fontsize=8)
        for i, x in enumerate(w):  # the value, since a bar may have no length at all
            ax.annotate(f"{x:.3f}", (i, max(x, uniform)), xytext=(0, 2),
                        textcoords="offset points", ha="center", fontsize=7)
    else:
        width = 0.8 / views
        for v in range(views):
            ax.bar(np.arange(len(w)) + (v - (views - 1) / 2) * width, w[:, v] - uniform, width,
                   bottom=uniform, label=view_names[v])
        ax.set_xticks(range(len(w)), list(group_labels or [""] * len(w))[:len(w)], rotation=30,
                      ha="right")
        ax.legend(fontsize=7, ncol=min(views, 5), loc="upper center")
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=0.8)
    spread = max(float(np.abs(w - uniform).max()), 0.005)  # at least +-0.005 around uniform
    room = 0.8 * spread if w.ndim > 1 else 0.3 * spread  # above the bars: legend, values
    ax.set_ylim(max(0.0, uniform - 1.3 * spread), min(1.0, uniform + 1.3 * spread + room))
    ax.set_ylabel(f"mean view weight\n(bars from uniform {uniform:.3f};\naxis from "
                  f"{ax.get_ylim()[0]:.3f}, not 0)", fontsize=7)


def plot_view_weights(weights: np.ndarray | torch.Tensor, view_names: Sequence[str],
                      path: str | Path, class_names: Sequence[str] | None = None) -> Path:
    """Mean text-guided view weight (MTGF beta) per view, optionally per true class
    (`draw_view_weights`).

    Args:
        weights: (V,) overall mean weights, or (K, V) mean weights per class.
        view_names: V labels, e.g. "yaw -20".
        path: output PNG.
        class_names: K labels when `weights` is (K, V).

    Returns:
        The written path.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))  # (K, V) or (1, V)
    groups, views = w.shape
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * groups * max(1, views) / 3, 3.2))
    draw_view_weights(ax, w, view_names, class_names if class_names is not None else ["all"])
    ax.set_title("text-guided view weights (dashed: uniform, every view trusted equally)",
                 fontsize=9)
    return _save(fig, path)


def plot_onset_change(pairs: Sequence[torch.Tensor | np.ndarray],
                      inputs: Sequence[torch.Tensor | np.ndarray], labels: Sequence[str],
                      path: str | Path, input_title: str, apex_title: str = "apex",
                      view: int = 0) -> Path:
    """What an onset run compares, one sequence per row: its first frame (the neutral onset,
    the frames rigidly aligned to it), its apex frame, the size of their per-pixel change, and
    what the model reads of the apex (e.g. onset + alpha * change, `--onset=magnified`).

    Args:
        pairs: per sequence, (2, V, 3, H, W) in [0, 1]: first frame, apex frame
            (`FaceViewsDataset.onset_and_apex`).
        inputs: per sequence, (V, 3, H, W) in [0, 1]: the model's input at the apex
            (`FaceViewsDataset.apex_input`).
        labels: a row label per sequence (e.g. its emotion).
        path: the PNG to write. input_title, apex_title: what the last and second columns show.
        view: the view slot drawn (e.g. the frontal).
    """
    pairs = [np.asarray(p, dtype=np.float32)[:, view] for p in pairs]  # each (2, 3, H, W)
    inputs = [np.asarray(x, dtype=np.float32)[view] for x in inputs]  # each (3, H, W)
    changes = [np.abs(apex - first).sum(axis=0) for first, apex in pairs]  # each (H, W)
    # one colour scale for every row, at the 99.5th percentile: a few silhouette pixels that
    # the head's residual motion flips between face and background would set it otherwise
    top = max(float(np.percentile(np.stack(changes), 99.5)), 1e-6)
    titles = ("onset\n(first frame)", apex_title, "change\n|apex - onset|",
              f"model input\n{input_title}")
    fig, axes = plt.subplots(len(pairs), 4, figsize=(8.4, 2.1 * len(pairs) + 0.6),
                             squeeze=False)
    fig.subplots_adjust(bottom=0.6 / (2.1 * len(pairs) + 0.6), top=0.95, hspace=0.08)
    for row, ((first, apex), change, shown, label) in enumerate(zip(pairs, changes, inputs,
                                                                    labels)):
        images = (first.transpose(1, 2, 0), apex.transpose(1, 2, 0), change,
                  shown.transpose(1, 2, 0))
        for col, (ax, image) in enumerate(zip(axes[row], images)):
            if col == 2:
                heat = ax.imshow(image, cmap="magma", vmin=0, vmax=top)
            else:
                ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
        axes[row, 0].set_ylabel(label, fontsize=9)
    below = axes[-1, 2].get_position()  # the colour bar under the change column, its width
    bar = fig.add_axes((below.x0, below.y0 - 0.25 / fig.get_figheight(), below.width,
                        0.08 / fig.get_figheight()))
    fig.colorbar(heat, cax=bar, orientation="horizontal")
    bar.tick_params(labelsize=7)
    bar.set_xlabel("sum over RGB of |apex - onset| (top 0.5 % clipped)", fontsize=7)
    return _save(fig, path)
