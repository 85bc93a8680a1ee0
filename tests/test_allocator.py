"""`configure_allocator`: large buffers stop costing page faults on every allocation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from immunefl.config import PROJECT_ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

PROBE = """
import resource, sys, torch
from immunefl.allocator import configure_allocator
from immunefl.models import build_model
if sys.argv[1] == "on":
    assert configure_allocator() and configure_allocator()  # idempotent
torch.set_num_threads(1)
model = build_model("cnn-fmnist", "fmnist").eval()
x = torch.randn(256, 1, 28, 28)  # one evaluation batch: activations of ~13 MB per layer
with torch.no_grad():
    model(x)  # warm-up: the first pass faults its pages in either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        model(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, cwd=PROJECT_ROOT, env={"PATH": "/usr/bin", **env})  # fmt: skip
    return int(out.stdout)


def test_evaluation_buffers_are_reused_instead_of_faulted_in_again() -> None:
    off, on = _faults("off"), _faults("on")
    assert off > 10_000  # glibc's default: fresh pages for the large buffers of every pass
    assert on < off / 3


def test_the_environment_wins() -> None:
    code = (
        "import os; os.environ['MALLOC_TRIM_THRESHOLD_'] = '0'; "
        "from immunefl.allocator import configure_allocator; print(configure_allocator())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PROJECT_ROOT)  # fmt: skip
    assert out.stdout.strip() == "False"
