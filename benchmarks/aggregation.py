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

Second table (``--table defenses``, issue 29): the rules and pre-aggregators of issue 29 at
their run-config defaults, as a ratio to a plain weighted mean (`strategies.mean`) of the same
updates: ``geomed``, ``centered-clipping`` (a non-zero centre), ``fltrust`` (server update
given), ``foolsgold`` (histories = 2 x U), ``flame``, ``dnc``, ``norm-bound`` (noise 0.01),
and ``bucketing`` (s 2), ``nnm`` (f 1), ``clipping`` (static c 1) and ``arc`` (f 1) alone.

    python benchmarks/aggregation.py                   # both tables
    python benchmarks/aggregation.py --table defenses  # issue 29's table only
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
#: issue 29's rules and pre-aggregators, measured against "mean"
DEFENSES = ("geomed", "centered-clipping", "fltrust", "foolsgold", "flame", "dnc", "norm-bound",
            "bucketing", "nnm", "clipping", "arc")  # fmt: skip


def defense(method: str, U, gen):  # noqa: ANN001, ANN201 - benchmark glue
    """Run one of `DEFENSES` (or the plain mean) on ``U`` at its run-config defaults."""
    import torch

    from strategies import centered_clipping, dnc, flame, fltrust, foolsgold, geomed, norm_bound
    from strategies import preaggregators as pre
    from strategies.mean import weighted_mean

    w = torch.ones(U.shape[0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    return {
        "mean": lambda: weighted_mean(U, w),
        "geomed": lambda: geomed.geometric_median_result(U, w),
        "centered-clipping": lambda: centered_clipping.centered_clipping(U, U[0], 1.0, 1),
        "fltrust": lambda: fltrust.fltrust(U, U[1]),
        "foolsgold": lambda: foolsgold.foolsgold_aggregate(U, 2 * U),
        "flame": lambda: flame.flame(U, noise_lambda=0.001, generator=g),
        "dnc": lambda: dnc.dnc_result(U, 1, generator=g),
        "norm-bound": lambda: norm_bound.norm_bound(U, 1.0, weights=w, noise_std=0.01, generator=g),
        "bucketing": lambda: pre.bucketing(U, 2, g),
        "nnm": lambda: pre.nnm(U, 1),
        "clipping": lambda: pre.static_clipping(U, 1.0),
        "arc": lambda: pre.adaptive_clipping(U, 1),
    }[method]


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

    fn = defense(method, U, None) if method in ("mean", *DEFENSES) else None

    def run() -> None:
        if fn is not None:
            fn()
        elif method == "median":
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
    ap.add_argument("--table", choices=("flower", "defenses", "all"), default="all")
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
    if args.table in ("defenses", "all"):
        mean = measure("mean")
        print(f"{'rule':19}{'s':>8}{'x mean':>9}{'mem':>8}   (mean: {mean['seconds']:.3f} s; "
              "mem: extra peak RSS / stacked updates)")  # fmt: skip
        for method in DEFENSES:
            r = measure(method)
            print(f"{method:19}{r['seconds']:8.3f}{r['seconds'] / mean['seconds']:8.1f}x"
                  f"{r['extra_bytes'] / r['stacked_bytes']:7.2f}x")  # fmt: skip
        print("target: <= 10x the mean, except where the math is inherently heavier")
    if args.table == "defenses":
        return
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
