"""Loss landscape along a backdoor's gradient direction (Invariant Aggregator paper, App. D.1).

The paper's Section 4.1 argues that an edge-case backdoor flattens the benign clients' loss
landscape: its inputs never appear in benign data, so moving the model toward the backdoor
costs the benign loss little, and a benign gradient has little magnitude to pull it back.
Appendix D.1 (its Fig. 4) shows it as curves of the loss along the malicious gradient
direction and along a random direction, distance measured in the parameter space.

These are the pure pieces of that measurement: the gradient of a loss as one flat vector, a
unit direction, and losses at ``w - d * u`` for a list of distances ``d``.
`scripts/flatness.py` runs them on Fashion-MNIST with the edge-case digits and the pixel
trigger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from task.statevec import flatten_update, state_from_update


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``grad_w CE(model(x), y)`` (mean over the batch) as one flat float32 vector, in the
    layout of `task.statevec` (the floating-point tensors of the state, in key order).

    >>> m = nn.Linear(2, 2, bias=False)
    >>> _ = m.weight.data.zero_()
    >>> g = loss_gradient(m, torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    >>> [round(v, 3) + 0.0 for v in g.tolist()]  # softmax of zeros is 1/2: d/dW = (p - onehot) x^T
    [-0.5, 0.0, 0.5, 0.0]
    """
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    state = model.state_dict()
    parts = []
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        grad = params[key].grad if key in params else None
        parts.append(torch.zeros_like(value).reshape(-1) if grad is None else grad.reshape(-1))
    model.zero_grad(set_to_none=True)
    return torch.cat(parts).float()


def unit(vector: torch.Tensor) -> torch.Tensor:
    """``v / ||v||_2``; a zero vector has no direction and is refused.

    >>> unit(torch.tensor([3.0, 4.0])).tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    norm = torch.linalg.vector_norm(vector)
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError(f"a direction needs a finite non-zero norm, got {float(norm)}")
    return vector / norm


def losses_along(
    model: nn.Module,
    direction: torch.Tensor,
    distances: Sequence[float],
    losses: Callable[[nn.Module], Sequence[float]],
) -> list[list[float]]:
    """``losses(model at w - d * direction)`` for every ``d`` in `distances`, where ``w`` is the
    model's state now (restored afterwards). With ``direction`` the unit gradient of a loss,
    positive ``d`` descends that loss: App. D.1's "distance", in parameter-space norm.

    >>> m = nn.Linear(1, 1, bias=False)
    >>> _ = m.weight.data.fill_(2.0)
    >>> losses_along(m, torch.tensor([1.0]), [0.0, 0.5, 2.0], lambda mm: [mm.weight.item()])
    [[2.0], [1.5], [0.0]]
    >>> m.weight.item()  # unchanged
    2.0
    """
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    zero = flatten_update(start, start)
    if direction.shape != zero.shape:
        raise ValueError(f"direction has {direction.numel()} entries, the model {zero.numel()}")
    out = []
    try:
        for d in distances:
            model.load_state_dict(state_from_update(-float(d) * direction, start))
            out.append([float(v) for v in losses(model)])
    finally:
        model.load_state_dict(start)
    return out


def first_distance_below(
    distances: Sequence[float], values: Sequence[float], level: float
) -> float | None:
    """The first distance at which ``values`` is at or below ``level`` (None: never).

    >>> first_distance_below([0, 1, 2, 3], [4.0, 3.0, 1.5, 0.5], 2.0)
    2
    >>> first_distance_below([0, 1], [4.0, 3.0], 1.0) is None
    True
    """
    for d, v in zip(distances, values, strict=True):
        if v <= level:
            return d
    return None
