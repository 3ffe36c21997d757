"""facet.viz writes readable PNGs of the expected layout; bad inputs are named."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facet import viz


def _size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.verify()  # a complete, valid PNG
    with Image.open(path) as img:
        return img.size


def test_figures_are_written(tmp_path):
    names = ["anger", "joy", "fear"]
    assert _size(viz.plot_confusion(np.eye(3, dtype=int) * 4, names, tmp_path / "c.png"))[0] > 100
    records = [{"step": s, "loss": 2.0 / s, "lr": 1e-3} for s in range(1, 5)]
    records.append({"epoch": 0, "step": 4, "train_acc": 0.5, "test_acc": 0.4})
    assert _size(viz.plot_curves(records, tmp_path / "sub" / "curves.png"))[0] > 100
    weights = torch.softmax(torch.randn(3, 5), dim=-1)  # (K, V)
    viz.plot_view_weights(weights, [f"yaw {y}" for y in range(5)], tmp_path / "w.png", names)
    assert (tmp_path / "w.png").is_file()


def test_view_grid_layout(tmp_path):
    small = viz.plot_view_grid(torch.rand(3, 3, 8, 8), tmp_path / "one.png")  # (V, 3, H, W)
    big = viz.plot_view_grid(torch.randint(0, 255, (4, 3, 3, 8, 8), dtype=torch.uint8),
                             tmp_path / "four.png", row_titles=list("abcd"))
    assert _size(big)[1] > 2.5 * _size(small)[1]  # four rows of views are ~four times as tall
    with pytest.raises(ValueError, match=r"\(V,3,H,W\) or \(R,V,3,H,W\)"):
        viz.plot_view_grid(torch.rand(3, 8, 8), tmp_path / "bad.png")
