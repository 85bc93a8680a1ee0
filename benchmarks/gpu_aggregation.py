"""Aggregation rules on CUDA vs CPU: same results, and the speed-up, on a GPU machine.

Workload: ``n`` client updates of ResNet-18 size (11,173,962 float32 parameters each, seeded),
for n in ``--clients`` (default 20 and 100). For each rule the CPU result (all cores) and the
CUDA result of the same stacked tensor are compared (max absolute difference, and whether they
are bit-identical: order statistics must be, means may differ in the last bits from summation
order), then timed: CPU best of ``--repeat``, CUDA best of ``--repeat`` after a warm-up
(synchronised), and CUDA including the host-to-device copy of the stack. Peak extra GPU memory
is printed as a multiple of the stacked updates' size. The CUDA path of the order statistics
sorts column blocks of at most ``strategies.order_stats.CUDA_BLOCK_ELEMENTS`` elements, which
these sizes exceed, so the blocked path is the one measured.

    python benchmarks/gpu_aggregation.py [--clients 20 100] [--repeat 3] [--json FILE]

Exits 2 without a CUDA device (nothing to compare).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rules():
    """name -> function of the stacked ``(n, d)`` tensor, with the project's default parameters."""
    import torch

    from strategies.cdp import clip_rows
    from strategies.invariant import invariant_aggregate
    from strategies.mean import weighted_mean
    from strategies.median import coordinate_median
    from strategies.rlr import robust_lr_aggregate
    from strategies.signsgd import majority_vote
    from strategies.trimmed_mean import trimmed_mean

    return {
        "mean": lambda U: weighted_mean(U, torch.ones(U.shape[0], device=U.device)),
        "median": coordinate_median,
        "trimmed-mean": lambda U: trimmed_mean(U, 0.1),
        "invariant": lambda U: invariant_aggregate(U, 0.2, 0.25),
        "rlr": lambda U: robust_lr_aggregate(U, 4),
        "signsgd": majority_vote,
        "cdp-clip": lambda U: clip_rows(U, 1.0).mean(0),  # cdp without its noise draw
    }


def best_of(fn, repeat: int, sync) -> float:
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()

    import numpy as np
    import torch

    from task.models import build_model

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare", file=sys.stderr)
        sys.exit(2)
    gpu = torch.device("cuda")
    shapes = [tuple(p.shape) for p in build_model("resnet18", "cifar10").parameters()]
    d = sum(int(np.prod(s)) for s in shapes)
    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; CPU threads "
          f"{torch.get_num_threads()}; d = {d:,}")  # fmt: skip
    rows = []
    for n in args.clients:
        U = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
        stacked = U.numel() * 4
        Ug = U.to(gpu)
        for name, fn in rules().items():
            cpu_out = fn(U)
            gpu_out = fn(Ug)  # warm-up
            torch.cuda.synchronize()
            diff = (gpu_out.cpu() - cpu_out).abs().max().item()
            identical = torch.equal(gpu_out.cpu(), cpu_out)
            sync = torch.cuda.synchronize
            t_cpu = best_of(lambda f=fn, x=U: f(x), args.repeat, lambda: None)
            t_gpu = best_of(lambda f=fn, x=Ug: f(x), args.repeat, sync)
            t_copy = best_of(lambda f=fn, x=U: f(x.to(gpu)), args.repeat, sync)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn(Ug)
            torch.cuda.synchronize()
            extra = (torch.cuda.max_memory_allocated() - base) / stacked
            row = {
                "n": n, "rule": name, "max_abs_diff": diff, "identical": identical,
                "cpu_s": t_cpu, "cuda_s": t_gpu, "cuda_with_copy_s": t_copy,
                "speedup": t_cpu / t_gpu, "speedup_with_copy": t_cpu / t_copy,
                "cuda_extra_mem_x": extra,
            }  # fmt: skip
            rows.append(row)
            print(f"n={n:<4} {name:<13} diff {diff:.2e} identical {identical!s:<5} "
                  f"cpu {t_cpu:7.3f}s cuda {t_gpu:7.4f}s (+copy {t_copy:7.4f}s) "
                  f"x{t_cpu / t_gpu:7.1f} (x{t_cpu / t_copy:5.1f} with copy) "
                  f"gpu extra mem {extra:.2f}x", flush=True)  # fmt: skip
        U = Ug = gpu_out = None  # free both copies before the next size
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
