"""CPU memory policy for facet's processes: keep freed memory for reuse instead of returning it.

PyTorch allocates every CPU tensor with the C library's malloc. glibc serves a large block
(above a threshold that adapts between 128 KiB and 32 MiB) with freshly mapped pages and unmaps
them again on free, so a function that creates many multi-megabyte temporaries pays a page
fault for every 4 KiB it touches, on every call. The rasterizer is such a function: at 30k
faces, 9 views, 224 px on 2 cores, `render_views` took up to 16 thousand page faults and 28 ms
of kernel time per call (`bench.py --only raster` prints both settings).
Fixing glibc's mmap and trim thresholds at 32 MiB (the largest mmap threshold glibc documents
for 64-bit systems) keeps freed blocks up to that size in the heap, where the next call reuses
them: the effect PyTorch's CPU performance guide gets by preloading jemalloc or tcmalloc, here
with one standard C library call and no extra dependency. Larger blocks are still mapped
afresh; at 9 views of 224 px the rasterizer's temporaries stay below that size.

Measured in three `bench.py` runs (same process, before and after): 1.44x, 1.33x and 1.0x
faster -- in the third, glibc's adaptive threshold had settled by itself. The effect depends
on the heap's history (a small probe that set the policy and then rendered still saw page
faults), which is not fully explained; it never made rendering slower.

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
THRESHOLD = 32 << 20  # bytes; glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems


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
    # mallopt returns 1 on success, 0 for a rejected value.
    return all(mallopt(option, THRESHOLD) == 1 for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
