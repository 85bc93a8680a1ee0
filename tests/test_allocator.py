"""`configure_allocator`: large buffers stop costing page faults on every allocation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# glibc keeps a chunk's size just below the pointer; bit 0x2 (IS_MMAPPED) says the chunk is its
# own kernel mapping: fresh, zero-filled pages on every allocation, unmapped again on free.
PROBE = """
import ctypes, sys
from task.allocator import configure_allocator
if sys.argv[1] == "on":
    assert configure_allocator() and configure_allocator()  # idempotent
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
for mb in (8, 30):  # an evaluation batch's activations: ~13-26 MB per layer
    p = libc.malloc(mb << 20)
    mapped = bool(ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value & 2)
    ctypes.memset(p, 1, mb << 20)
    libc.free(p)
    q = libc.malloc(mb << 20)
    print(mb, int(mapped), int(p == q))
    libc.free(q)
"""


def _chunks(mode: str) -> list[tuple[int, bool, bool]]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, cwd=PROJECT_ROOT, env={"PATH": "/usr/bin"})  # fmt: skip
    return [(int(mb), m == "1", r == "1") for mb, m, r in map(str.split, out.stdout.splitlines())]


def test_large_buffers_stay_in_the_heap_and_are_reused() -> None:
    """What the thresholds change, observed on glibc's own chunk headers (deterministic).

    The page faults and seconds this saves are measured by `benchmarks/eval_speed.py`.
    """
    assert _chunks("off") == [(8, True, False), (30, True, False)]  # glibc's defaults
    assert _chunks("on") == [(8, False, True), (30, False, True)]


def test_the_environment_wins() -> None:
    code = (
        "import os; os.environ['MALLOC_TRIM_THRESHOLD_'] = '0'; "
        "from task.allocator import configure_allocator; print(configure_allocator())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PROJECT_ROOT)  # fmt: skip
    assert out.stdout.strip() == "False"
