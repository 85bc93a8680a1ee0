"""Is the edge-case backdoor's landscape flatter than the pixel trigger's? (Invariant App. D.1)

For each seed: train a clean Fashion-MNIST CNN centrally (the "minimum"; no attack), then walk
from it along three unit directions and record, at each distance d (parameter-space norm):

- ``edge-case``: minus the gradient of the cross-entropy of the attack's edge-case training half
  (scikit-learn's digits, labelled ``--target``), the direction the edge-case attacker pushes;
- ``pixel``: the same for FMNIST training images of other classes with the BadNets pixel trigger;
- ``random``: a Gaussian direction (seeded), the paper's comparison.

At each point: the benign test loss and accuracy, and each backdoor's held-out loss and success
rate (the edge-case test half; triggered test images of other classes). Flatter, in the paper's
sense, means the backdoor loss falls while the benign loss barely rises. Writes
``<out>/flatness.json`` and ``<out>/flatness.png``.

    python scripts/flatness.py --seeds 0 1 2 --out docs/data/flatness
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attacks.backdoor import digits_edge_cases, edge_case_split  # noqa: E402
from attacks.triggers import apply_trigger, trigger_mask  # noqa: E402
from immunefl.flatness import first_distance_below, loss_gradient, losses_along, unit  # noqa: E402
from task.data import Dataset, ImageSplit, load_dataset  # noqa: E402
from task.models import init_model  # noqa: E402
from task.seeding import derive_seed  # noqa: E402
from task.training import evaluate, train_sgd  # noqa: E402

DIRECTIONS = ("edge-case", "pixel", "random")
COLUMNS = ("benign_loss", "benign_acc", "edge_loss", "edge_asr", "pixel_loss", "pixel_asr")


def backdoor_sets(data: Dataset, target: int, trigger_size: int, seed: int) -> dict[str, tuple]:
    """{name: (train images, test images)} uint8, every image labelled `target` by the attack."""
    train_edge, test_edge = edge_case_split(digits_edge_cases(*data.train.images.shape[1:]))
    mask = trigger_mask(*data.train.images.shape[-2:], trigger_size)
    g = torch.Generator().manual_seed(derive_seed(seed, "flatness-pixel"))
    others = torch.nonzero(data.train.labels != target).flatten()
    pick = others[torch.randperm(len(others), generator=g)[: len(train_edge)]]
    test_others = torch.nonzero(data.test.labels != target).flatten()
    test_pixel = apply_trigger(data.test.images[test_others], mask)
    return {
        "edge-case": (train_edge, test_edge),
        "pixel": (apply_trigger(data.train.images[pick], mask), test_pixel),
    }


def measure(data: Dataset, seed: int, args: argparse.Namespace) -> dict:
    """One seed: train the clean model, then the curves along every direction."""
    torch.manual_seed(derive_seed(seed, "flatness-train"))
    model = init_model("cnn-fmnist", "fmnist", seed)
    g = torch.Generator().manual_seed(derive_seed(seed, "flatness-data"))
    t0 = time.perf_counter()
    train_sgd(
        model, data, data.train, torch.arange(len(data.train)), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, generator=g,
        device=torch.device("cpu"),
    )  # fmt: skip
    model.eval()
    sets = backdoor_sets(data, args.target, args.trigger_size, seed)
    bench = torch.randperm(len(data.test), generator=g)[: args.benign_test]
    tests = {k: ImageSplit(v[1], torch.full((len(v[1]),), args.target)) for k, v in sets.items()}

    def losses(m: torch.nn.Module) -> list[float]:
        out = list(evaluate(m, data, data.test, torch.device("cpu"), indices=bench))
        for name in ("edge-case", "pixel"):
            out += evaluate(m, data, tests[name], torch.device("cpu"))
        return out

    directions = {}
    for name, (train_images, _) in sets.items():
        x = data.normalize(train_images)
        y = torch.full((len(x),), args.target)
        directions[name] = unit(loss_gradient(model, x, y))  # w - d*u descends the backdoor loss
    dim = directions["edge-case"].numel()
    rnd = torch.Generator().manual_seed(derive_seed(seed, "flatness-random"))
    directions["random"] = unit(torch.randn(dim, generator=rnd))
    curves = {n: losses_along(model, u, args.distances, losses) for n, u in directions.items()}
    return {
        "seed": seed,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "parameters": dim,
        "cos_edge_pixel": float(directions["edge-case"] @ directions["pixel"]),
        "curves": {
            k: [dict(zip(COLUMNS, row, strict=True)) for row in v] for k, v in curves.items()
        },
    }


ASR_LEVELS = (0.5, 0.9)


def summarize(result: dict, distances: list[float]) -> dict:
    """Per backdoor direction, the benign price of the backdoor: the benign loss rise and
    accuracy drop at the first distance where the backdoor's own held-out success rate reaches
    each of `ASR_LEVELS` (None: not within the distances walked)."""
    out = {}
    for name in ("edge-case", "pixel"):
        key = "edge" if name == "edge-case" else "pixel"
        rows = result["curves"][name]
        start = rows[0]
        entry: dict = {"backdoor_loss": start[f"{key}_loss"], "asr": start[f"{key}_asr"]}
        for level in ASR_LEVELS:
            short = [1.0 - r[f"{key}_asr"] for r in rows]
            d = first_distance_below(distances, short, 1.0 - level)
            at = rows[distances.index(d)] if d is not None else None
            entry[f"asr_{level}"] = None if at is None else {
                "distance": d,
                "benign_loss_rise": at["benign_loss"] - start["benign_loss"],
                "benign_acc_drop": start["benign_acc"] - at["benign_acc"],
            }  # fmt: skip
        out[name] = entry
    return out


def plot(results: list[dict], distances: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = {"edge-case": "tab:red", "pixel": "tab:blue", "random": "tab:gray"}
    for name in DIRECTIONS:
        for ax, col in zip(axes, ("benign_loss", "own"), strict=True):
            if col == "own" and name == "random":
                continue
            key = col if col != "own" else ("edge_loss" if name == "edge-case" else "pixel_loss")
            ys = [[r["curves"][name][i][key] for r in results] for i in range(len(distances))]
            mean = [statistics.fmean(v) for v in ys]
            sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in ys]
            ax.plot(distances, mean, color=colors[name], label=name)
            ax.fill_between(
                distances, [m - s for m, s in zip(mean, sd, strict=True)],
                [m + s for m, s in zip(mean, sd, strict=True)], color=colors[name], alpha=0.2,
            )  # fmt: skip
    axes[0].set(xlabel="distance along the direction (parameter norm)", ylabel="benign test loss")
    axes[1].set(xlabel="distance along the direction", ylabel="the backdoor's own test loss")
    axes[0].set_title("benign loss along each direction")
    axes[1].set_title("backdoor loss along its gradient")
    for ax in axes:
        ax.legend()
    n = len(results)
    fig.suptitle(f"Clean FMNIST CNN, {n} seed{'s' if n > 1 else ''} (mean ± sd)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-dir", default="")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--trigger-size", type=int, default=4)
    p.add_argument("--benign-test", type=int, default=5000)
    p.add_argument("--max-distance", type=float, default=1.5)
    p.add_argument("--points", type=int, default=31)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.points < 2 or args.max_distance <= 0:
        p.error("--points must be >= 2 and --max-distance > 0")
    if not 0 <= args.target < 10:
        p.error(f"--target must be a Fashion-MNIST class in [0, 10), got {args.target}")
    if not 1 <= args.trigger_size <= 26:
        p.error(f"--trigger-size must be in [1, 26], got {args.trigger_size}")
    if args.epochs < 1 or args.batch_size < 1 or args.benign_test < 1 or args.lr <= 0:
        p.error("--epochs, --batch-size and --benign-test must be >= 1, --lr > 0")
    if any(s < 0 for s in args.seeds) or len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct and >= 0, got {args.seeds}")
    torch.set_num_threads(args.threads)
    step = args.max_distance / (args.points - 1)
    args.distances = [round(step * i, 6) for i in range(args.points)]
    data = load_dataset("fmnist", args.data_dir, allow_download=False)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        r = measure(data, seed, args)
        r["summary"] = summarize(r, args.distances)
        results.append(r)
        print(json.dumps({"seed": seed, "cos_edge_pixel": r["cos_edge_pixel"], **r["summary"]}))
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    (args.out / "flatness.json").write_text(
        json.dumps({"settings": settings, "runs": results}, indent=1, default=str) + "\n"
    )
    plot(results, args.distances, args.out / "flatness.png")
    print(f"wrote {args.out / 'flatness.json'} and {args.out / 'flatness.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
