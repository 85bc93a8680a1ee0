"""Server-side evaluation speed: batch size and glibc's allocator thresholds.

Evaluates the paper's FMNIST CNN on the 10,000 real test images (all cores, as the ServerApp
does), each variant in a fresh process: the old setting (batches of 1000, glibc defaults), the
new batch size alone, and the new batch size with `task.allocator.configure_allocator`
(what the ServerApp, the ClientApp and the benchmarks' plain loop now do). Prints the median
seconds per pass, the system (kernel) time and minor page faults per pass, and the speed-up
against the old setting measured in the same invocation.

    python benchmarks/eval_speed.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PASS = """
import json, resource, statistics, sys, time
sys.path.insert(0, {root!r})
import torch
from task.allocator import configure_allocator
from task.data import load_dataset
from task.models import init_model
from task.training import evaluate
if {allocator}:
    assert configure_allocator()
ds = load_dataset("fmnist")
model = init_model("cnn-fmnist", "fmnist", 0)
cpu = torch.device("cpu")
evaluate(model, ds, ds.test, cpu, batch_size={batch})  # warm-up
seconds = []
r0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range({repeat}):
    t = time.perf_counter()
    evaluate(model, ds, ds.test, cpu, batch_size={batch})
    seconds.append(time.perf_counter() - t)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"median": statistics.median(seconds),
                  "sys": (r1.ru_stime - r0.ru_stime) / {repeat},
                  "faults": (r1.ru_minflt - r0.ru_minflt) / {repeat}}}))
"""

VARIANTS = [  # (label, batch size, configure_allocator)
    ("batch 1000, glibc defaults (before)", 1000, False),
    ("batch 256, glibc defaults", 256, False),
    ("batch 256 + configure_allocator (now)", 256, True),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    results = []
    for label, batch, allocator in VARIANTS:
        code = PASS.format(root=str(ROOT), allocator=allocator, batch=batch, repeat=args.repeat)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=ROOT)  # fmt: skip
        results.append((label, json.loads(out.stdout.strip().splitlines()[-1])))
    base = results[0][1]["median"]
    print(f"{'variant':42}{'median s':>10}{'sys s':>8}{'faults':>10}{'speed-up':>10}")
    for label, r in results:
        print(f"{label:42}{r['median']:10.3f}{r['sys']:8.2f}{r['faults']:10.0f}"
              f"{base / r['median']:9.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
