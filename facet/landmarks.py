"""Landmark files: BU-3DFE/BU-4DFE `.bnd` (83 rows `idx x y z`) and Bosphorus `.lm3` (named points)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facet.fileio import write_atomic


def save_bnd(indices: np.ndarray, points: np.ndarray, path: str | Path) -> None:
    """Write BU-3DFE landmarks: one line `idx x y z` per point (idx = vertex index)."""
    indices, points = np.asarray(indices), np.asarray(points, dtype=np.float64)
    text = "".join(f"{int(i)}\t{p[0]:.6f}\t{p[1]:.6f}\t{p[2]:.6f}\n" for i, p in zip(indices, points))
    write_atomic(path, text)


