"""Landmark files: BU-3DFE/BU-4DFE `.bnd` (83 rows `idx x y z`) and Bosphorus `.lm3` (named points).

`.bnd`: one landmark per line, `<vertex index> <x> <y> <z>` separated by tabs or spaces; the
index is the 0-based vertex of the F3D mesh. `.lm3`: a few header lines (3 in the files we know
of), then pairs of lines, a landmark name (`Nose tip`) and its `x y z`; files miss some points,
so they are read by name. Points are in the scan's units (mm).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facet.fileio import write_atomic


def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a text landmark file ({err.reason})") from None


def _xyz(fields: list[str]) -> np.ndarray | None:
    """(3,) float64 if `fields` are exactly three finite numbers, else None."""
    if len(fields) != 3:
        return None
    try:
        point = np.array([float(f) for f in fields])
    except ValueError:
        return None
    return point if np.isfinite(point).all() else None


def read_bnd(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read BU-3DFE/BU-4DFE landmarks.

    Args:
        path: a `.bnd` file, one `idx x y z` row per landmark; blank lines are ignored.
    Returns:
        (indices (M,) int64 vertex indices, points (M, 3) float32).
    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and line: a row that is not `idx x y z` with a non-negative
            integer index and finite coordinates, or no rows at all.
    """
    indices, points = [], []
    for number, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        point = _xyz(fields[1:])
        if len(fields) != 4 or point is None or not fields[0].isdecimal():
            raise ValueError(f"{path}: line {number}: expected 'index x y z' with a non-negative "
                             f"integer index and finite numbers, got {line.strip()[:60]!r}")
        indices.append(int(fields[0]))
        points.append(point)
    if not points:
        raise ValueError(f"{path}: no landmark rows")
    return np.array(indices, dtype=np.int64), np.array(points, dtype=np.float32)


def save_bnd(indices: np.ndarray, points: np.ndarray, path: str | Path) -> None:
    """Write BU-3DFE landmarks: one line `idx x y z` per point (idx = vertex index)."""
    indices, points = np.asarray(indices), np.asarray(points, dtype=np.float64)
    text = "".join(f"{int(i)}\t{p[0]:.6f}\t{p[1]:.6f}\t{p[2]:.6f}\n" for i, p in zip(indices, points))
    write_atomic(path, text)


def read_lm3(path: str | Path) -> dict[str, np.ndarray]:
    """Read Bosphorus named 3D landmarks.

    The header is every line before the first name that is followed by a coordinate line; after
    it the file must alternate name / `x y z` (blank lines ignored).

    Args:
        path: a `.lm3` file.
    Returns:
        name (as written, e.g. "Nose tip") -> (3,) float32 point; only the points in the file.
    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and line: no landmark, a name without coordinates, a
            malformed coordinate line, or a name given twice.
    """
    rows = [(n, line.strip()) for n, line in enumerate(_read_lines(path), start=1) if line.strip()]
    first = next((i for i in range(len(rows) - 1)
                  if _xyz(rows[i][1].split()) is None and _xyz(rows[i + 1][1].split()) is not None),
                 None)
    if first is None:
        raise ValueError(f"{path}: no landmark (a name line followed by an 'x y z' line)")
    points: dict[str, np.ndarray] = {}
    for i in range(first, len(rows), 2):
        name_line, name = rows[i]
        point = _xyz(rows[i + 1][1].split()) if i + 1 < len(rows) else None
        if point is None:
            raise ValueError(f"{path}: line {name_line}: landmark {name!r} is not followed by an "
                             f"'x y z' line of three finite numbers")
        if name in points:
            raise ValueError(f"{path}: line {name_line}: landmark {name!r} appears twice")
        points[name] = point.astype(np.float32)
    return points


def save_lm3(points: dict[str, np.ndarray], path: str | Path) -> None:
    """Write Bosphorus-style named landmarks: a 3-line header, then name / `x y z` pairs."""
    lines = ["#Landmark3D File", f"{len(points)} landmarks:", "labels and coordinates:"]
    for name, point in points.items():
        x, y, z = np.asarray(point, dtype=np.float64).reshape(3)
        lines += [name, f"{x:.6f} {y:.6f} {z:.6f}"]
    write_atomic(path, "\n".join(lines) + "\n")
