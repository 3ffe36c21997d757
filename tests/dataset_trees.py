"""Tiny dataset trees in each benchmark layout, with decoys, for the dataset-layer tests.

Every writer returns the tree's root; the expected counts are spelled out in the tests that use
them. Meshes are small bumpy grids (a 6x6 grid = 50 triangles) so that writing, loading and
rendering stay in the milliseconds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facet.data.meshio import save_bnt
from facet.data.meshio import save_wrl
from facet.mesh import Mesh


def grid_mesh(bump: float = 0.0, n: int = 6) -> Mesh:
    """An n x n grid in [-1, 1]^2 with a dome (z up to 0.5) plus a `bump` in its lower half."""
    u, v = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    z = 0.5 * np.exp(-(u**2 + v**2)) + bump * np.exp(-((u**2 + (v + 0.5) ** 2) * 4))
    verts = np.stack([u, v, z], axis=-1).reshape(-1, 3) * 50  # (N, 3) in "mm"
    i = np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]  # (n-1, n-1) lower-left corners
    faces = np.concatenate([np.stack([i, i + 1, i + n + 1], -1).reshape(-1, 3),
                            np.stack([i, i + n + 1, i + n], -1).reshape(-1, 3)])
    return Mesh(verts, faces)


def write_wrl(path: Path, bump: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_wrl(grid_mesh(bump), path)
    return path


def write_bnt(path: Path, rows: int = 5, cols: int = 6, truncate: bool = False) -> Path:
    """A small Bosphorus range scan (a dome), optionally cut 40 bytes short."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    z = 10 + np.exp(-((x - cols / 2) ** 2 + (y - rows / 2) ** 2) / 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_bnt(path, x, -y, z, x / (cols - 1), y / (rows - 1), zmin=-1e9,
             image_name=path.with_suffix(".png").name)
    if truncate:
        path.write_bytes(path.read_bytes()[:-40])
    return path


def touch(path: Path, text: str = "decoy") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def bu3dfe_tree(root: Path) -> Path:
    """3 subjects x 7 F3D meshes (NE00, HA01-04, SU03-04) = 21 samples; 2 skipped, decoys."""
    for sid, eth in (("F0001", "WH"), ("M0002", "BL"), ("F0010", "AE")):
        for code in ("NE00", "HA01", "HA02", "HA03", "HA04", "SU03", "SU04"):
            stem = f"{sid}_{code}{eth}"
            write_wrl(root / sid / f"{stem}_F3D.wrl")
            touch(root / sid / f"{stem}_F3D.bnd")
            touch(root / sid / f"{stem}_F3D.bmp")
            touch(root / sid / f"{stem}_F2D.bmp")
        write_wrl(root / sid / f"{sid}_HA04{eth}_RAW.wrl")  # raw scan: ignored by rule
    write_wrl(root / "F0001" / "F0001_XX03WH_F3D.wrl")  # unknown code: skipped, reported
    touch(root / "M0002" / "M0002_AN01BL_F3D.wrl", "garbage")  # corrupt: skipped
    touch(root / "F0001" / "notes.txt")  # stray file: ignored
    return root


def bu4dfe_tree(root: Path) -> Path:
    """F001 Happy (12 frames) + Sad (3), M002 Angry (3): 3 samples; Bored skipped; decoys."""
    for i in range(12):  # unpadded names: natural order 0, 1, ..., 10, 11
        write_wrl(root / "F001" / "Happy" / f"{i}.wrl", bump=float(i))
        touch(root / "F001" / "Happy" / f"{i}.jpg")
    for subject, expression in (("F001", "Sad"), ("M002", "Angry")):
        for i in range(3):
            write_wrl(root / subject / expression / f"{i:03d}.wrl")
    write_wrl(root / "F001" / "Bored" / "000.wrl")  # unknown expression: skipped
    touch(root / "BU4DFE_BND_V1.1" / "F001" / "Happy" / "000.bnd")  # not a subject: ignored
    touch(root / "readme.txt")
    return root


def bosphorus_tree(root: Path) -> Path:
    """bs000, bs001: neutral + HAPPY + ANGER each = 6 samples (+2 AU scans with include_au)."""
    for subject in ("bs000", "bs001"):
        for code in ("N_N_0", "E_HAPPY_0", "E_ANGER_0", "LFAU_12_0", "YR_R10_0", "O_EYE_0"):
            write_bnt(root / subject / f"{subject}_{code}.bnt")
            touch(root / subject / f"{subject}_{code}.png")
            touch(root / subject / f"{subject}_{code}.lm3")
    write_bnt(root / "bs001" / "bs001_E_BORED_0.bnt")  # unknown emotion: skipped
    write_bnt(root / "bs001" / "bs001_E_FEAR_0.bnt", truncate=True)  # truncated: skipped
    return root


def bp4d_tree(root: Path) -> Path:
    """F001 T1 (obj, 3 frames) + T8, M002 T7: 3 samples; T4 ignored, T9 skipped."""
    obj = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    for subject, task in (("F001", "T1"), ("F001", "T8"), ("M002", "T7"), ("F001", "T4")):
        for i in range(3):
            touch(root / subject / task / f"{i:04d}.obj", obj)
            touch(root / subject / task / f"{i:04d}.jpg")
    touch(root / "F001" / "T9" / "0000.obj", obj)
    return root
