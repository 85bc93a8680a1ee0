"""Local training and evaluation loops (plain PyTorch; used by clients, server and benchmarks).

Batches are drawn from a seeded `torch.Generator` permutation of the client's indices, with no
DataLoader worker processes: a Flower actor should use one core, and the data already sits in
memory as a uint8 tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from task.data import Dataset, ImageSplit

#: Evaluation batch size. Not larger: glibc serves allocations above its mmap threshold (at most
#: 32 MiB) with fresh pages from the kernel and returns them on free, so with 1000 FMNIST images
#: per batch (a 50 MB first activation) every batch page-faulted ~50k times and evaluating the
#: 10k test images took 1.5 s instead of 0.8 s on 2 cores (`docs/performance.md`).
EVAL_BATCH_SIZE = 256


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda requested but torch.cuda.is_available() is False")
    if requested not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{requested}'; valid: auto, cpu, cuda")
    return torch.device(requested)


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
BatchTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class StepHook(Protocol):
    """Called at the start of every local epoch and around every optimiser step (e.g. the
    FL-WBC defense)."""

    def start_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


class SGD:
    """The update of ``torch.optim.SGD(params, lr, momentum)`` (no dampening, Nesterov or weight
    decay): ``b <- momentum * b + g`` (``b = g`` at the first step), ``theta <- theta - lr * b``
    (``b = g`` without momentum), the local solver of FedAvg and of FL-WBC's Algorithm 1.

    Written out rather than taken from `torch.optim`: creating any torch optimizer imports
    ``torch._dynamo`` (~1.8 s of CPU), which every Ray actor paid in its first round.
    `tests/test_training.py` checks it against ``torch.optim.SGD`` step for step.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum = float(lr), float(momentum)
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            d = p.grad
            if self.momentum != 0.0:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = d.detach().clone()
                else:
                    buf.mul_(self.momentum).add_(d)
                d = buf
            p.add_(d, alpha=-self.lr)


@dataclass(frozen=True)
class TrainResult:
    """What a local training run reports."""

    num_examples: int
    steps: int
    mean_loss: float


def train_sgd(
    model: nn.Module,
    dataset: Dataset,
    split: ImageSplit,
    indices: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    generator: torch.Generator,
    device: torch.device,
    hooks: Sequence[StepHook] = (),
    loss_fn: LossFn | None = None,
    batch_transform: BatchTransform | None = None,
) -> TrainResult:
    """Train `model` in place with SGD on ``split[indices]`` for `epochs` epochs.

    Each epoch visits the indices in a fresh permutation drawn from `generator`; the last batch
    may be smaller (no samples are dropped). `hooks` run right before and after every
    ``optimizer.step()``. Attacks change the objective with `loss_fn(model, x, y)` (default:
    cross-entropy) or the data with `batch_transform(x, y) -> (x, y)` on normalised batches.
    """
    if indices.numel() == 0:
        raise ValueError("cannot train on an empty partition")
    model.to(device).train()
    images = dataset.normalize(split.images[indices]).to(device)
    labels = split.labels[indices].to(device)
    optimizer = SGD(model.parameters(), lr=lr, momentum=momentum)
    n = labels.shape[0]
    total_loss = torch.zeros((), device=device)
    steps = 0
    for _ in range(epochs):
        for hook in hooks:
            hook.start_epoch()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            x, y = images[batch], labels[batch]
            if batch_transform is not None:
                x, y = batch_transform(x, y)
            loss = loss_fn(model, x, y) if loss_fn else F.cross_entropy(model(x), y)
            loss.backward()
            for hook in hooks:
                hook.before_step()
            optimizer.step()
            for hook in hooks:
                hook.after_step()
            total_loss += loss.detach()
            steps += 1
    return TrainResult(num_examples=n, steps=steps, mean_loss=float(total_loss) / max(steps, 1))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    split: ImageSplit,
    device: torch.device,
    indices: torch.Tensor | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `model` on ``split`` (or ``split[indices]``)."""
    model.to(device).eval()
    images, labels = split.images, split.labels
    if indices is not None:
        images, labels = images[indices], labels[indices]
    n = labels.shape[0]
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for start in range(0, n, batch_size):
        x = dataset.normalize(images[start : start + batch_size]).to(device)
        y = labels[start : start + batch_size].to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    return float(loss_sum) / n, int(correct) / n
