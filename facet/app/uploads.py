"""Uploads to the app: files a person sends, written safely, and the scan they make.

`save_uploads` writes the uploaded files into a folder the caller makes temporary, refuses more
than MAX_UPLOAD_MB, and unpacks zips member by member: no absolute paths, no "..", no links out
of the folder, at most MAX_UNPACKED_MB and MAX_MEMBERS (no zip bombs), no encrypted members and
no two members on one path (each refusal names the member). What comes back is what
`facet.app.explain` reads: one mesh file, or the folder holding the frames of one sequence.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Sequence

from facet.data.meshio import MESH_SUFFIXES

MAX_UPLOAD_MB = 50  # uploads together; a BU-3DFE scan with its texture is a few MB
MAX_UNPACKED_MB = 500  # everything a zip unpacks to
MAX_MEMBERS = 2000  # files in a zip (a BU-4DFE sequence has about 100 frames)


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


def save_uploads(files: Sequence[tuple[str, bytes]], folder: str | Path,
                 max_mb: float = MAX_UPLOAD_MB, max_unpacked_mb: float = MAX_UNPACKED_MB) -> Path:
    """Write uploaded files into `folder` and return the scan they make.

    Args:
        files: (file name, content) pairs: one mesh (with companion files: landmarks, texture),
            several mesh files (the frames of a sequence), or a zip of either.
        folder: where to write; the caller makes it temporary (`tempfile.TemporaryDirectory`).
        max_mb: the most the uploads may weigh together; max_unpacked_mb: the most a zip may
            unpack to.
    Returns:
        The mesh file, or the folder holding the frames of a sequence.
    Raises:
        ValueError: nothing uploaded, over max_mb, an unsafe or unreadable zip, no mesh,
            or meshes in several folders.
    """
    folder = Path(folder)
    if not files:
        raise ValueError("nothing uploaded")
    total = sum(len(data) for _, data in files)
    if total > max_mb * 2**20:
        raise ValueError(f"the upload is {total / 2**20:.1f} MB, more than the {max_mb:g} MB "
                         "allowed")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        base = Path(name.replace("\\", "/")).name  # a name, never a path
        if not base or base.startswith("."):
            raise ValueError(f"{name!r}: not a usable file name")
        if base.lower().endswith(".zip"):
            _unzip(base, data, folder / Path(base).stem, max_unpacked_mb)
        else:
            (folder / base).write_bytes(data)
    meshes = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES]
    if not meshes:
        raise ValueError(f"no mesh among the uploads ({', '.join(n for n, _ in files)}); "
                         f"formats read: {', '.join(MESH_SUFFIXES)}")
    if len(meshes) == 1:
        return meshes[0]
    places = sorted({str(p.parent.relative_to(folder)) for p in meshes})
    if len(places) > 1:
        raise ValueError(f"meshes in several folders ({', '.join(places[:4])}): upload one scan, "
                         "or the frames of one sequence")
    return meshes[0].parent
