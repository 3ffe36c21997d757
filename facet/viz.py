"""Figures for runs and reports: confusion matrix, training curves, view weights, view grids.

Uses matplotlib's Agg backend (no display needed, safe in workers and CI). Every function draws
one figure, writes it to `path` as PNG and closes it, so long runs never accumulate open figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: must happen before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


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


def plot_curves(records: list[dict], path: str | Path) -> Path:
    """Training curves from log records (one dict per logged step or epoch).

    Plots every numeric key found among "loss*", "lr" and "*acc*" against "step" (or the record
    index): losses on the left, accuracies on the right, learning rate on its own axis.

    Args:
        records: log.jsonl rows, e.g. {"step": 10, "loss": 1.2, "lr": 1e-3} or
            {"epoch": 0, "step": 40, "train_acc": 0.5, "test_acc": 0.4}.
        path: output PNG.

    Returns:
        The written path.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    groups = (("loss", axes[0]), ("acc", axes[1]), ("lr", axes[2]))
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
    for word, ax in groups:
        for key in (k for k in keys if word in k and k not in ("step", "epoch")):
            pts = [(r.get("step", i), r[key]) for i, r in enumerate(records) if key in r]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o" if len(pts) < 30 else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(word)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_view_weights(weights: np.ndarray | torch.Tensor, view_names: Sequence[str],
                      path: str | Path, class_names: Sequence[str] | None = None) -> Path:
    """Mean text-guided view weight (MTGF beta) per view, optionally per true class.

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
    labels = list(class_names) if class_names is not None else ["all"]
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * groups * max(1, views) / 3, 3.2))
    width = 0.8 / views
    for v in range(views):
        ax.bar(np.arange(groups) + (v - (views - 1) / 2) * width, w[:, v], width,
               label=view_names[v])
    ax.axhline(1.0 / views, color="grey", linestyle="--", linewidth=0.8)  # uniform weighting
    ax.set_xticks(range(groups), labels[:groups], rotation=30, ha="right")
    ax.set_ylabel("mean view weight")
    ax.set_title("text-guided view weights (dashed: uniform)", fontsize=9)
    ax.legend(fontsize=7, ncol=min(views, 5))
    return _save(fig, path)


def plot_view_grid(views: np.ndarray | torch.Tensor, path: str | Path,
                   row_titles: Sequence[str] | None = None,
                   col_titles: Sequence[str] | None = None) -> Path:
    """Contact sheet of rendered views.

    Args:
        views: (V, 3, H, W) or (R, V, 3, H, W) images, float in [0, 1] or uint8.
        path: output PNG.
        row_titles: R labels (e.g. the emotion of each face).
        col_titles: V labels (e.g. the view angles).

    Returns:
        The written path.
    """
    x = torch.as_tensor(np.asarray(views)) if not torch.is_tensor(views) else views
    if x.dim() == 4:
        x = x.unsqueeze(0)  # (1, V, 3, H, W)
    if x.dim() != 5 or x.shape[2] != 3:
        raise ValueError(f"views must be (V,3,H,W) or (R,V,3,H,W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    rows, cols = x.shape[:2]
    img = x.clamp(0, 1).permute(0, 1, 3, 4, 2).cpu().numpy()  # (R, V, H, W, 3)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(img[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=8)
    return _save(fig, path)
