"""CPU memory policy for facet's processes: keep freed memory for reuse instead of returning it.

PyTorch allocates every CPU tensor with the C library's malloc. glibc serves a large block
(above a threshold that adapts between 128 KiB and 32 MiB) with freshly mapped pages and unmaps
them again on free, so a function that creates many multi-megabyte temporaries pays a page
fault for every 4 KiB it touches, on every call. The rasterizer is such a function: at 30k
faces, 9 views, 224 px on 2 cores, `render_views` took 6-9 thousand page faults and 15-30 ms of
kernel time per call, a third of its time (`bench.py --only raster` prints both settings).
Raising glibc's mmap and trim thresholds keeps freed blocks in the heap, where the next call
reuses them: the effect PyTorch's CPU performance guide gets by preloading jemalloc or
tcmalloc, here with one standard C library call and no extra dependency.

The cost: a process keeps its peak heap instead of shrinking after it. facet's commands
(`train.py`, `evaluate.py`, `render_views.py`, `bench.py`) and the view cache's worker processes
opt in at start; library functions never change a process-wide setting by themselves.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_THRESHOLDS = (1 << 30, 1 << 25)  # 1 GiB; older glibc caps the mmap threshold at 32 MiB


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of unmapping them (see module docstring).

    Returns:
        True if the policy is in effect; False where there is nothing to tune (not Linux, or a
        C library without glibc's `mallopt`, such as musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for threshold in _THRESHOLDS:  # mallopt returns 1 on success, 0 for a rejected value
        if mallopt(_M_MMAP_THRESHOLD, threshold) and mallopt(_M_TRIM_THRESHOLD, threshold):
            return True
    return False
