"""Label flipping (data poisoning), as used e.g. by Fang et al. (USENIX Security 2020) and
Karimireddy et al. (ICLR 2022, "LF": ``l -> L - 1 - l``) and Tolpegin et al. (ESORICS 2020,
source -> target).

Threat model. The attacker controls only its own clients' training data: it relabels its own
examples and then trains honestly. It needs to know nothing about the other clients or the
aggregation rule; it knows the number of classes L of the task.
"""

from __future__ import annotations

import torch


def flip_labels(
    y: torch.Tensor, num_classes: int, source: int | None = None, target: int | None = None
) -> torch.Tensor:
    """Flipped copy of the integer labels ``y`` (values in ``[0, num_classes)``).

    Without ``source`` / ``target``: every label ``l`` becomes ``num_classes - 1 - l``. With both:
    only labels equal to ``source`` become ``target``; the others are unchanged. Giving only one
    of the two is an error.

    >>> flip_labels(torch.tensor([0, 1, 2, 9]), 10)
    tensor([9, 8, 7, 0])
    >>> flip_labels(torch.tensor([0, 7, 2, 7]), 10, source=7, target=1)
    tensor([0, 1, 2, 1])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"y must lie in [0, num_classes) = [0, {num_classes})")
    if (source is None) != (target is None):
        raise ValueError("source and target must be given together (or neither)")
    if source is None:
        return num_classes - 1 - y
    for name, value in (("source", source), ("target", target)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 0 <= value < num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}), got {value}")
    return torch.where(y == source, torch.full_like(y, target), y)
