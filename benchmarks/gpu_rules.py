"""Every aggregation rule and pre-aggregator on CUDA vs CPU: same result, and the speed-up.

Workload: n stacked updates of ResNet-18 size (11,173,962 float32 each), seeded. For each rule:
CPU seconds, CUDA seconds (synchronised; inputs already on the device), max |CUDA - CPU|
relative to the result's scale. Randomised rules (DnC's coordinate sample, bucketing's shuffle)
draw from device-specific generators, so only their time is compared.

The pure rules import only torch (`tests/test_layout.py` keeps them below Flower), so this runs
where Flower is not installed (the lent GPU machine's image): the `strategies` package's
``__init__`` (the Flower strategies) is not imported, only its pure modules.

    python benchmarks/gpu_rules.py --clients 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
D_RESNET18 = 11_173_962


def _pure_strategies() -> None:
    """Import `strategies.<pure module>` without the package's Flower-importing __init__."""
    if "strategies" not in sys.modules:
        pkg = types.ModuleType("strategies")
        pkg.__path__ = [str(ROOT / "strategies")]  # type: ignore[attr-defined]
        sys.modules["strategies"] = pkg


def rules(n: int):  # noqa: ANN201 - name -> (function of U, deterministic)
    import torch

    _pure_strategies()
    from strategies.centered_clipping import centered_clipping
    from strategies.dnc import dnc
    from strategies.flame import flame
    from strategies.fltrust import fltrust
    from strategies.foolsgold import foolsgold_aggregate
    from strategies.geomed import geometric_median
    from strategies.invariant import invariant_aggregate
    from strategies.mean import weighted_mean
    from strategies.median import coordinate_median
    from strategies.norm_bound import norm_bound
    from strategies.preaggregators import adaptive_clipping, bucketing, nnm, static_clipping
    from strategies.trimmed_mean import trimmed_mean

    def gen(U):  # noqa: ANN001, ANN202
        return torch.Generator(device=U.device).manual_seed(0)

    def norm(U):  # noqa: ANN001, ANN202
        return float(torch.linalg.vector_norm(U, dim=1).median())

    return {
        "mean": (lambda U: weighted_mean(U, torch.ones(n, device=U.device)), True),
        "median": (coordinate_median, True),
        "trimmed-mean": (lambda U: trimmed_mean(U, 0.1), True),
        "invariant": (lambda U: invariant_aggregate(U, 0.2, 0.25), True),
        "geomed": (lambda U: geometric_median(U), True),
        "centered-clipping": (lambda U: centered_clipping(U, None, norm(U), 3), True),
        "norm-bound": (lambda U: norm_bound(U, norm(U)), True),
        "fltrust": (lambda U: fltrust(U, U.mean(0)).aggregate, True),
        "foolsgold": (lambda U: foolsgold_aggregate(U, U).aggregate, True),
        "flame (no noise)": (lambda U: flame(U, noise_lambda=0.0).aggregate, True),
        "dnc": (lambda U: dnc(U, 2, generator=gen(U)), False),
        "nnm": (lambda U: nnm(U, 2), True),
        "bucketing": (lambda U: bucketing(U, 2, gen(U)), False),
        "static-clipping": (lambda U: static_clipping(U, norm(U)), True),
        "arc": (lambda U: adaptive_clipping(U, 2), True),
    }


def _time(fn, U, sync) -> tuple[float, object]:  # noqa: ANN001
    fn(U)  # warm-up (CUDA kernels, allocator)
    sync()
    t0 = time.perf_counter()
    out = fn(U)
    sync()
    return time.perf_counter() - t0, out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--dim", type=int, default=D_RESNET18)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    U = torch.randn(args.clients, args.dim, generator=g) * 0.01
    U[:2] *= 20.0  # two large updates, so the robust rules have something to do
    Ug = U.cuda()
    rows = []
    for name, (fn, deterministic) in rules(args.clients).items():
        t_cpu, out_cpu = _time(fn, U, lambda: None)
        t_gpu, out_gpu = _time(fn, Ug, torch.cuda.synchronize)
        scale = float(out_cpu.abs().max()) or 1.0
        diff = float((out_gpu.cpu() - out_cpu).abs().max()) / scale if deterministic else None
        rows.append({"rule": name, "cpu_s": t_cpu, "cuda_s": t_gpu, "speedup": t_cpu / t_gpu,
                     "max_rel_diff": diff})  # fmt: skip
        print(
            f"{name:18} cpu {t_cpu:8.3f}s  cuda {t_gpu:8.4f}s  x{t_cpu / t_gpu:7.1f}  "
            f"max rel diff {'-' if diff is None else f'{diff:.2e}'}",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "clients": args.clients,
                    "dim": args.dim,
                    "device": torch.cuda.get_device_name(0),
                    "torch": torch.__version__,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
