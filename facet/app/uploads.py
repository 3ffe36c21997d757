"""Uploads to the app: files a person sends, written safely, and the scans they make.

`save_uploads` writes the uploaded files into a folder the caller makes temporary, refuses more
than MAX_UPLOAD_MB, and unpacks zips member by member: no absolute paths, no "..", no links out
of the folder, at most MAX_UNPACKED_MB and MAX_MEMBERS (no zip bombs), no encrypted members and
no two members on one path (each refusal names the member). What comes back is what
`facet.app.explain` reads, one item per prediction: each mesh file on its own (the default: one
prediction per uploaded scan), or, when the person says the files are the frames of one 4D
sequence, the folder that holds them. A file that is neither a mesh nor a file that goes with
one (landmarks, a texture) is set aside with the reason, and the others are still used.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from facet.data.layouts import natural_key
from facet.data.meshio import MESH_SUFFIXES

MAX_UPLOAD_MB = 50  # uploads together; a BU-3DFE scan with its texture is a few MB
MAX_UNPACKED_MB = 500  # everything a zip unpacks to
MAX_MEMBERS = 2000  # files in a zip (a BU-4DFE sequence has about 100 frames)
MAX_SCANS = 20  # separate predictions per upload (a sequence counts once): about 20 s each
# with saliency on two cores; more is a job for `python evaluate.py --ckpt CKPT SCAN...`
# files read beside a mesh of the same stem: landmarks (facet.data.meshio) and textures
COMPANION_SUFFIXES = (".bnd", ".lm3", ".bmp", ".png", ".jpg", ".jpeg", ".mtl")
UPLOAD_SUFFIXES = (*MESH_SUFFIXES, ".zip", *COMPANION_SUFFIXES)  # what the app accepts


@dataclass
class Uploads:
    """What a set of uploaded files makes."""

    scans: list[Path]  # one per prediction: mesh files, or the folder of one sequence's frames
    refused: list[tuple[str, str]]  # (file name, why) of files that are in no scan


def _unzip(name: str, data: bytes, folder: Path, max_mb: float) -> None:
    """Unpack a zip into `folder`, member by member, refusing what could escape or explode."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError(f"{name}: not a readable zip file") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"{name}: {len(members)} files, more than the {MAX_MEMBERS} allowed")
    if sum(m.file_size for m in members) > max_mb * 2**20:
        raise ValueError(f"{name}: unpacks to more than {max_mb:g} MB")
    root = folder.resolve()
    for member in members:
        parts = Path(member.filename.replace("\\", "/")).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
            raise ValueError(f"{name}: refused member {member.filename!r} (a path outside the "
                             "archive's folder)")
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue  # hidden files and macOS resource forks ("._000.wrl" is not a mesh)
        target = folder.joinpath(*parts)
        if not target.resolve().is_relative_to(root):
            raise ValueError(f"{name}: refused member {member.filename!r}")
        if member.flag_bits & 0x1:  # bit 0 of the general-purpose flags: encrypted
            raise ValueError(f"{name}: member {member.filename!r} is encrypted; upload a zip "
                             "without a password")
        try:
            if target.exists():  # the same name twice: the second would replace the first
                raise FileExistsError
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src:  # reads at most the declared size
                target.write_bytes(src.read(member.file_size + 1)[:member.file_size])
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise ValueError(f"{name}: member {member.filename!r} collides with another member "
                             "(the same name twice, or a file and a folder of one name)") from None
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
            raise ValueError(f"{name}: cannot unpack {member.filename!r} ({err})") from None


def save_uploads(files: Sequence[tuple[str, bytes]], folder: str | Path, sequence: bool = False,
                 max_mb: float = MAX_UPLOAD_MB, max_unpacked_mb: float = MAX_UNPACKED_MB,
                 max_scans: int = MAX_SCANS) -> Uploads:
    """Write uploaded files into `folder` and return the scans they make.

    Args:
        files: (file name, content) pairs: mesh files (with companion files: landmarks,
            texture), zips of them, or the frames of one sequence.
        folder: where to write; the caller makes it temporary (`tempfile.TemporaryDirectory`).
        sequence: the meshes are the frames of one 4D sequence (natural order of their names):
            one scan, their folder. False: every mesh is a scan of its own.
        max_mb: the most the uploads may weigh together; max_unpacked_mb: the most a zip may
            unpack to; max_scans: the most separate scans (sequence=False).
    Returns:
        Uploads: the scans in name order, and the files refused with the reason (a suffix the
        app does not read).
    Raises:
        ValueError: nothing uploaded, over max_mb, an unsafe or unreadable zip, no mesh, more
            than max_scans scans, or (sequence) meshes in several folders.
    """
    folder = Path(folder)
    if not files:
        raise ValueError("nothing uploaded")
    total = sum(len(data) for _, data in files)
    if total > max_mb * 2**20:
        raise ValueError(f"the upload is {total / 2**20:.1f} MB, more than the {max_mb:g} MB "
                         "allowed")
    folder.mkdir(parents=True, exist_ok=True)
    refused = []
    for name, data in files:
        base = Path(name.replace("\\", "/")).name  # a name, never a path
        if not base or base.startswith("."):
            raise ValueError(f"{name!r}: not a usable file name")
        suffix = Path(base).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            refused.append((base, f"not a scan: {suffix or 'no'} suffix; meshes are read from "
                                  f"{', '.join(MESH_SUFFIXES)} (or a .zip of them), beside them "
                                  f"{', '.join(COMPANION_SUFFIXES)}"))
        elif suffix == ".zip":
            _unzip(base, data, folder / Path(base).stem, max_unpacked_mb)
        else:
            (folder / base).write_bytes(data)
    meshes = sorted((p for p in folder.rglob("*") if p.is_file()
                     and p.suffix.lower() in MESH_SUFFIXES), key=lambda p: natural_key(str(p)))
    if not meshes:
        raise ValueError(f"no mesh among the uploads ({', '.join(n for n, _ in files)}); "
                         f"formats read: {', '.join(MESH_SUFFIXES)}")
    if not sequence:
        if len(meshes) > max_scans:
            raise ValueError(f"{len(meshes)} scans, more than the {max_scans} predicted at once "
                             "here: upload fewer, say they are the frames of one sequence, or "
                             "run python evaluate.py --ckpt CKPT SCAN...")
        return Uploads(meshes, refused)
    places = sorted({str(p.parent.relative_to(folder)) for p in meshes})
    if len(places) > 1:
        raise ValueError(f"meshes in several folders ({', '.join(places[:4])}): upload the "
                         "frames of one sequence")
    return Uploads([meshes[0].parent if len(meshes) > 1 else meshes[0]], refused)
