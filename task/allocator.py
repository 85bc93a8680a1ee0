"""Keep large tensor buffers in the process instead of handing them back to the kernel each time.

glibc serves an allocation above its mmap threshold with fresh pages from the kernel and unmaps
them on free; below it, memory at the top of the heap is returned once more than the trim
threshold is free. PyTorch's CPU allocator calls malloc/free for every activation, so an
evaluation pass over batches of a few hundred images allocated and released tens of MB per
layer and page-faulted ~250k times per pass over the FMNIST test set: 1.0 s instead of 0.76 s
on 2 cores (measured in `docs/performance.md`). Raising both thresholds keeps those buffers
mapped; at most ``TRIM_THRESHOLD`` of free memory stays with each malloc arena.

`configure_allocator` is called once per process by the ServerApp, the ClientApp and the
benchmarks' plain loop. It does nothing on other C libraries, or when the environment already
sets ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (yours win).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own upper bound for its dynamic threshold
TRIM_THRESHOLD = 64 << 20
_configured = False


def configure_allocator() -> bool:
    """Set glibc's mmap and trim thresholds (idempotent); whether they are in effect."""
    global _configured
    if _configured:
        return True
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _configured = (
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    return _configured
