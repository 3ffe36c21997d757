"""Atomic file writes: every file facet writes appears whole or not at all.

`atomic_file(path)` writes into a temporary file beside `path` (`.<name>.<pid>.tmp`), flushes and
fsyncs it, then renames it over `path` (a rename within one folder is atomic on POSIX and
Windows), so a crash, a kill or a full disk never leaves a half-written checkpoint, cache entry
or report behind: readers see the old file or the new one. The temporary files of writers that
were killed are removed by the next write of the same file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files of `path` left by writers that died (kill -9 mid-write): the
    name carries the writer's pid, and a pid that no longer runs will never finish its file."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # it exists (another user's): not ours to delete
            pass


class _RecordingFile:
    """A binary file that remembers the OSError of a failed write. torch.save reports a full
    disk as "unexpected pos 768 vs 662" (its writer swallows the OSError); this keeps the cause."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):  # flush, tell, fileno, ...: the file's own
        return getattr(self.file, name)


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Open `path` for binary writing through a temporary file that replaces it only when the
    block completes (flushed and fsynced); on an error the old file, if any, is untouched.
    Temporary files of writers that were killed are removed first.

    Raises:
        OSError: naming `path` and the cause (a full disk, a read-only folder, ...), also when
            the writer inside the block hid it behind an error of its own.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    recorder = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        with open(tmp, "wb") as f:
            recorder = _RecordingFile(f)
            yield recorder
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        cause = recorder.error if recorder is not None and recorder.error else err
        if not isinstance(cause, OSError):
            raise
        raise OSError(cause.errno, f"{path}: cannot write it ({cause.strerror or cause}); "
                                   "an earlier version of it, if any, is intact") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
