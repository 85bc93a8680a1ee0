"""Aggregation speed and memory: our rules vs Flower's `FedMedian` / `FedTrimmedAvg` math.

Workload: 20 client updates of ResNet-18 size (11,173,962 float32 parameters each), CPU.
Each method runs in a fresh subprocess that builds the same seeded updates, then measures the
rule's wall time (best of `--repeat`) and its peak extra RSS above the process's RSS with the
inputs already in memory (sampled every 2 ms), printed as a multiple of the stacked updates'
size (20 x 11.2 M x 4 B = 894 MB).

- ours: `coordinate_median`, `trimmed_mean` (beta 0.1), `invariant_aggregate` (tau 0.2,
  alpha 0.25) on the stacked ``(n, d)`` tensor;
- Flower: what `FedMedian` / `FedTrimmedAvg` do per layer: ``np.median(np.stack(layers), 0)``
  and ``flwr...fedtrimmedavg.trim_mean(np.stack(layers), beta)`` over ResNet-18's layers.

    python benchmarks/aggregation.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_CLIENTS = 20
METHODS = {
    "median": ("ours", "flower-median"),
    "trimmed-mean": ("ours", "flower-trimmed-mean"),
    "invariant": ("ours", None),
}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(method: str, repeat: int) -> dict:
    """Run one method in this process and return its timing and memory."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from task.models import build_model

    torch.manual_seed(0)
    shapes = [tuple(p.shape) for p in build_model("resnet18", "cifar10").parameters()]
    d = sum(int(np.prod(s)) for s in shapes)
    U = torch.randn(N_CLIENTS, d)
    layers = None
    if method.startswith("flower"):  # Flower keeps one array per layer per client
        offs = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
        Un = U.numpy()
        layers = [
            [Un[i, offs[j] : offs[j + 1]].reshape(s) for i in range(N_CLIENTS)]
            for j, s in enumerate(shapes)
        ]

    def run() -> None:
        if method == "median":
            from strategies.median import coordinate_median

            coordinate_median(U)
        elif method == "trimmed-mean":
            from strategies.trimmed_mean import trimmed_mean

            trimmed_mean(U, 0.1)
        elif method == "invariant":
            from strategies.invariant import invariant_aggregate

            invariant_aggregate(U, 0.2, 0.25)
        elif method == "flower-median":
            [np.median(np.stack(layer), axis=0) for layer in layers]
        elif method == "flower-trimmed-mean":
            from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

            [trim_mean(np.stack(layer), 0.1) for layer in layers]

    run()  # warm-up (imports, allocator)
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    stop.set()
    thread.join()
    return {
        "seconds": min(times),
        "extra_bytes": peak[0] - base,
        "stacked_bytes": U.numel() * 4,
        "d": d,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeat)))
        return

    def measure(method: str) -> dict:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", method, "--repeat", str(args.repeat)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(
        f"{N_CLIENTS} updates x ResNet-18 size, CPU ({os.cpu_count()} cores), best of {args.repeat}"
    )
    print(
        f"{'rule':14}{'ours s':>9}{'flower s':>10}{'speed-up':>10}{'ours mem':>10}"
        f"{'flower mem':>12}   (extra peak RSS / stacked updates)"
    )
    for rule, (_, flower) in METHODS.items():
        ours = measure(rule)
        ref = measure(flower) if flower else None
        speed = f"{ref['seconds'] / ours['seconds']:.2f}x" if ref else "-"
        mem_o = ours["extra_bytes"] / ours["stacked_bytes"]
        mem_f = f"{ref['extra_bytes'] / ref['stacked_bytes']:.2f}x" if ref else "-"
        ref_s = f"{ref['seconds']:.3f}" if ref else "-"
        print(f"{rule:14}{ours['seconds']:9.3f}{ref_s:>10}{speed:>10}{mem_o:9.2f}x{mem_f:>12}")
    print("targets: speed-up >= 3x, ours mem <= 2x")


if __name__ == "__main__":
    main()
