"""A clean model trained centrally on a held-out slice no client holds: an ``initial-model``.

The Invariant Aggregator's authors fine-tune a pretrained model (their §6: an ImageNet ResNet-18);
this trains its counterpart for our models (issue 32): SGD on `task.partition.pretrain_indices`,
the ``pretrain-holdout`` slice that a run with the same ``pretrain-holdout`` keeps out of every
client's partition (the slice is one seeded draw for every run seed). ``--seed`` seeds the
model's initialisation and the batch order.

It writes the state_dict (``--out``, loaded as data by ``initial-model``) and beside it
``<out>.json``: the settings, the clean model's test accuracy, and the share of the edge-case
test images (the half an edge-case run's ASR is measured on) it assigns to each class, so that
a backdoor target the clean model already predicts can be ruled out before any run
(``--max-target-share``: the classes under it are listed). A run whose ``pretrain-holdout``
differs from the one recorded there is refused (`task.models.initial_model_problems`).

    python scripts/pretrain.py --holdout 6000 --epochs 5 --out pretrained/fmnist-cnn.pt
    immunefl run configs/invariant-pretrained-fmnist.yaml
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import torch

from attacks.backdoor import EDGE_CASE_SOURCES, edge_case_images, edge_case_split
from task.data import Dataset, load_dataset
from task.models import init_model
from task.partition import PRETRAIN_SLICE_SEED, pretrain_indices
from task.resultsio import atomic_write_bytes, atomic_write_json
from task.runconfig import RunConfig
from task.seeding import torch_generator
from task.training import evaluate, resolve_device, train_sgd

#: the sidecar's format; `task.models.initial_model_problems` reads its ``pretrain-holdout``
SIDECAR_FORMAT = 1


def class_shares(model: torch.nn.Module, dataset: Dataset, images: torch.Tensor,
                 device: torch.device) -> list[float]:  # fmt: skip
    """The share of `images` (uint8, like the dataset's) the model assigns to each class."""
    model.to(device).eval()
    with torch.no_grad():
        pred = model(dataset.normalize(images).to(device)).argmax(1).cpu()
    counts = torch.bincount(pred, minlength=10)[:10]
    return [float(c) / len(images) for c in counts]


def pretrain(cfg: RunConfig, holdout: int, epochs: int, device: torch.device) -> dict[str, Any]:
    """Train ``cfg.model`` on the pretraining slice; return the state_dict and the report."""
    dataset = load_dataset(cfg.dataset, cfg.data_dir)
    indices = torch.from_numpy(pretrain_indices(len(dataset.train.labels), holdout))
    model = init_model(cfg.model, cfg.dataset, cfg.seed)
    gen = torch_generator(cfg.seed, "pretrain", 0, device=device.type)
    result = train_sgd(
        model, dataset, dataset.train, indices, epochs=epochs, batch_size=cfg.batch_size,
        lr=cfg.lr, momentum=cfg.momentum, generator=gen, device=device,
    )  # fmt: skip
    _, acc = evaluate(model, dataset, dataset.test, device)
    _, edge_test = edge_case_split(edge_case_images(cfg, dataset.train.images))
    shares = class_shares(model, dataset, edge_test, device)
    report = {
        "format": SIDECAR_FORMAT,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "pretrain-holdout": holdout,
        "slice-seed": PRETRAIN_SLICE_SEED,
        "seed": cfg.seed,
        "epochs": epochs,
        "batch-size": cfg.batch_size,
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "steps": result.steps,
        "train_loss": result.mean_loss,
        "test_acc": acc,
        "edge-case-source": cfg.edge_case_source,
        "edge_case_test_images": int(len(edge_test)),
        "edge_case_class_share": shares,
    }
    return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "report": report}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="where the state_dict goes (.pt)")
    p.add_argument("--holdout", required=True, type=int,
                   help="pretrain-holdout: examples in the slice (runs must use the same)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--model", default="cnn-fmnist")
    p.add_argument("--data-dir", default="")
    p.add_argument("--edge-case-source", default="digits", choices=EDGE_CASE_SOURCES)
    p.add_argument("--edge-case-file", default="")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-target-share", type=float, default=0.02,
                   help="list the classes the clean model gives less than this share of the "
                        "edge-case test images (candidate backdoor targets)")  # fmt: skip
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.out.suffix != ".pt":
        p.error(f"--out must name a .pt file, got {args.out}")
    try:
        cfg = RunConfig.defaults(
            seed=args.seed, dataset=args.dataset, model=args.model, data_dir=args.data_dir,
            batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
            edge_case_source=args.edge_case_source, edge_case_file=args.edge_case_file,
            pretrain_holdout=args.holdout,
        )  # fmt: skip
        out = pretrain(cfg, args.holdout, args.epochs, resolve_device(args.device))
    except ValueError as exc:
        print(f"pretrain: {exc}", file=sys.stderr)
        return 2
    report = out["report"]
    # the sidecar first: a model is never on disk without the slice it saw
    atomic_write_json(Path(f"{args.out}.json"), report)
    buffer = io.BytesIO()
    torch.save(out["state"], buffer)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"clean model: {args.out} (test accuracy {report['test_acc']:.4f}, "
          f"{args.holdout} pretraining examples, {args.epochs} epochs)")  # fmt: skip
    print(f"\nshare of the {report['edge_case_test_images']} edge-case test images per class:")
    print("| class | share |\n| --- | --- |")
    for k, share in enumerate(report["edge_case_class_share"]):
        print(f"| {k} | {share:.3f} |")
    low = [k for k, s in enumerate(report["edge_case_class_share"]) if s < args.max_target_share]
    print(f"\nclasses under {args.max_target_share:.0%}: {low or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
