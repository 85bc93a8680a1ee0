"""The model and each node's data: a linear classifier on a synthetic 2-class problem, so the
example needs no download. Your own app would have its model and data loaders here."""

from __future__ import annotations

import torch
from torch import nn


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(10, 2)


def node_data(partition_id: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A node's examples: x ~ N(0, I), label 1 when the sum of the first 3 features is > 0."""
    g = torch.Generator().manual_seed(1000 + partition_id)
    x = torch.randn(n, 10, generator=g)
    return x, (x[:, :3].sum(1) > 0).long()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return float(loss)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
