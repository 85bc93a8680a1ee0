"""Cost of FL-WBC in local training: one real Fashion-MNIST client, with and without it.

Paper CNN, 600 training images, B=32, E=1 (19 steps), SGD lr 0.01, one thread; `--repeat`
interleaved repetitions of each variant, best and median wall time reported, and the ratio
of medians (target <= 1.10 on CPU). `--epochs 10 --batch-size 10 --momentum 0.5 --variant
official` is the authors' code's setting (`client_app/wbc_official.py`).

    python benchmarks/wbc_overhead.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--s", type=float, default=0.4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--variant", choices=("paper", "official", "dense"), default="paper")
    args = ap.parse_args()

    import torch

    from client_app.wbc import FLWBC
    from client_app.wbc_official import OfficialWBC
    from task.data import load_dataset
    from task.models import init_model
    from task.seeding import torch_generator
    from task.training import resolve_device, train_sgd

    torch.set_num_threads(1)
    device = resolve_device(args.device)
    ds = load_dataset("fmnist")
    idx = torch.arange(600)

    def once(wbc: bool) -> float:
        model = init_model("cnn-fmnist", "fmnist", 0).to(device)
        gen = torch_generator(0, "wbc", 1, 0, device=device.type)
        if args.variant in ("official", "dense"):
            dense = args.variant == "dense"
            hooks = [OfficialWBC(model.named_parameters(), 0.01, args.s, gen, dense=dense)]
        else:
            hooks = [FLWBC(model.parameters(), 0.01, args.s, gen)]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_sgd(
            model,
            ds,
            ds.train,
            idx,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=0.01,
            momentum=args.momentum,
            generator=torch_generator(0, "data", 1, 0),
            device=device,
            hooks=hooks if wbc else (),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once(False), once(True)  # warm-up
    plain, wbc = [], []
    for _ in range(args.repeat):
        plain.append(once(False))
        wbc.append(once(True))
    steps = args.epochs * -(-600 // args.batch_size)
    print(
        f"one client: 600 images, E={args.epochs}, B={args.batch_size} ({steps} steps), "
        f"s={args.s}, variant={args.variant}, momentum={args.momentum}, device={device}, "
        f"{args.repeat} repeats"
    )
    print(f"plain SGD : best {min(plain):.4f}s  median {statistics.median(plain):.4f}s")
    print(f"FL-WBC    : best {min(wbc):.4f}s  median {statistics.median(wbc):.4f}s")
    print(
        f"RATIO wbc/plain (median) = {statistics.median(wbc) / statistics.median(plain):.3f} "
        "(target <= 1.10)"
    )


if __name__ == "__main__":
    main()
