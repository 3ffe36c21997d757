"""Bosphorus `.bnt` range scans: a (rows, cols) grid of 3D points turned into a triangle mesh.

Layout (little-endian, FORMATS.md): `uint16 nrows, uint16 ncols, float64 zmin, uint16 len,
char[len] image name, uint32 n (= nrows*ncols*5), float64[n]`, the doubles in five blocks of
nrows*ncols values: all x, all y, all z, all u, all v. Inside a block the grid is stored row by
row (ncols values each) and the rows bottom-up, as the Bosphorus MATLAB reader (`read_bntfile.m`)
flips them; we flip on reading, so grid row 0 is the top of the face. A pixel whose z equals zmin
is background (no measurement).

The mesh joins each 2x2 block of pixels with two triangles along a fixed diagonal, keeping only
triangles whose three pixels are all measured, wound counter-clockwise seen from +z (x grows
with the column, y upward). Vertices no triangle uses are dropped and the rest re-indexed; u, v
become per-vertex uv (N, 2), exactly as stored.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from facet.fileio import write_atomic
from facet.mesh import Mesh

_HEAD = struct.Struct("<HHdH")  # nrows, ncols, zmin, name length


def save_bnt(path: str | Path, x: np.ndarray, y: np.ndarray, z: np.ndarray, u: np.ndarray,
             v: np.ndarray, zmin: float, image_name: str) -> None:
    """Write a Bosphorus `.bnt` file (used by tests and synthetic data).

    Args:
        path: output file.
        x, y, z, u, v: (R, C) float grids, row 0 at the top (the reader's orientation); background
            pixels have z == zmin.
        zmin: the background depth value.
        image_name: the 2D image file name stored in the header (ASCII).
    """
    grids = np.stack([np.asarray(g, dtype=np.float64) for g in (x, y, z, u, v)])  # (5, R, C)
    if grids.ndim != 3:
        raise ValueError(f"{path}: x, y, z, u, v must be (rows, cols) grids, got {grids.shape[1:]}")
    _, rows, cols = grids.shape
    name = image_name.encode("ascii")
    blocks = grids[:, ::-1, :].reshape(5, -1)  # (5, R*C): rows bottom-up, each row left to right
    payload = (_HEAD.pack(rows, cols, zmin, len(name)) + name
               + struct.pack("<I", blocks.size) + blocks.astype("<f8").tobytes())
    write_atomic(path, payload)


def grid_triangles(valid: np.ndarray) -> np.ndarray:
    """Triangles over a (R, C) grid of valid pixels, as flat pixel indices (row-major).

    Each 2x2 block a b / c d (a top-left) gives (a, c, b) and (b, c, d): counter-clockwise when
    the row index grows downward and the column rightward. A triangle is kept only if its three
    pixels are valid.

    Returns:
        (F, 3) int64 flat indices into the (R*C,) pixel array.
    """
    rows, cols = valid.shape
    idx = np.arange(rows * cols).reshape(rows, cols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]  # each (R-1, C-1)
    tris = np.stack([np.stack([a, c, b], -1), np.stack([b, c, d], -1)], -2)  # (R-1, C-1, 2, 3)
    tris = tris.reshape(-1, 3)  # (2*(R-1)*(C-1), 3): block by block, row-major
    flat_valid = valid.reshape(-1)  # (R*C,)
    return tris[flat_valid[tris].all(axis=1)]


def read_bnt(path: str | Path) -> Mesh:
    """Read a Bosphorus `.bnt` range scan as a triangle mesh with per-vertex uv.

    Args:
        path: the `.bnt` file.
    Returns:
        Mesh with verts (N, 3) float32 (mm), faces (F, 3) int64, uv (N, 2) float32, source = path.
    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file: truncated file, size field not nrows*ncols*5, trailing bytes,
            no measured pixel, or no triangle.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    data = path.read_bytes()
    if len(data) < _HEAD.size:
        raise ValueError(f"{where}: truncated .bnt header ({len(data)} bytes)")
    rows, cols, zmin, name_len = _HEAD.unpack_from(data)
    count_at = _HEAD.size + name_len
    if len(data) < count_at + 4:
        raise ValueError(f"{where}: truncated or not a .bnt file ({len(data)} bytes, but the "
                         f"header's image name alone is {name_len} bytes)")
    (count,) = struct.unpack_from("<I", data, count_at)
    if count != rows * cols * 5:
        raise ValueError(f"{where}: not a .bnt file: data size {count} != 5 * {rows} rows * "
                         f"{cols} columns")
    expected = count_at + 4 + 8 * count
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "trailing bytes after the data"
        raise ValueError(f"{where}: {problem}: {len(data)} bytes, the header implies {expected}")
    blocks = np.frombuffer(data, dtype="<f8", offset=count_at + 4).reshape(5, rows, cols)
    grids = blocks[:, ::-1, :]  # (5, R, C): stored bottom-up, flipped so row 0 is the top
    x, y, z, u, v = grids
    valid = z != zmin
    if not valid.any():
        raise ValueError(f"{where}: no measured pixel (every z equals zmin = {zmin})")
    faces = grid_triangles(valid)
    if len(faces) == 0:
        raise ValueError(f"{where}: no 2x2 block of measured pixels to triangulate")
    used = np.zeros(rows * cols, bool)
    used[faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1  # (R*C,) pixel -> vertex index, valid where used
    verts = np.stack([x, y, z], -1).reshape(-1, 3)[used]  # (N, 3)
    uv = np.stack([u, v], -1).reshape(-1, 2)[used]  # (N, 2)
    return Mesh(verts=verts, faces=new_index[faces], uv=uv, source=where)
