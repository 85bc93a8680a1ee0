"""Label flipping (data poisoning), as used e.g. by Fang et al. (USENIX Security 2020) and
Karimireddy et al. (ICLR 2022, "LF": ``l -> L - 1 - l``) and Tolpegin et al. (ESORICS 2020,
source -> target).

Threat model. The attacker controls only its own clients' training data: it relabels its own
examples and then trains honestly. It needs to know nothing about the other clients or the
aggregation rule; it knows the number of classes L of the task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attacks.base import Attack, AttackContext, State
from task.params import Param
from task.runconfig import RunConfig


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


def _class_or_none(key: str) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        if value == -1 or 0 <= value < 10:
            return None
        return f"'{key}' must be -1 or a class in [0, 10), got {value}"

    return check


class LabelFlip(Attack):
    """``attack = label-flip``: the attacker trains like a benign node (``local-epochs`` over its
    own partition, the run's optimiser) on flipped labels: every ``l -> L - 1 - l`` (both keys
    -1, the default) or ``label-flip-source -> label-flip-target``. Threat model: the module
    docstring (its own data only)."""

    PARAMS = (
        Param("label-flip-source", "source", -1, "label-flip: source class (-1: all l -> L-1-l)",
              check=_class_or_none("label-flip-source")),
        Param("label-flip-target", "target", -1, "label-flip: target class of the source",
              check=_class_or_none("label-flip-target")),
    )  # fmt: skip

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        source, target = config.label_flip_source, config.label_flip_target
        if (source == -1) != (target == -1):
            return [
                f"'label-flip-source' ({source}) and 'label-flip-target' ({target}) are set "
                "together (a source -> target pair) or both -1 (every l -> L-1-l)"
            ]
        if source != -1 and source == target:
            return [f"'label-flip-source' = 'label-flip-target' = {source} flips nothing"]
        return []

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        source, target = self.params["source"], self.params["target"]
        pair = (None, None) if source == -1 else (source, target)
        classes = ctx.dataset.num_classes

        def flip(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, flip_labels(y, classes, *pair)

        state, _ = ctx.train(indices, ctx.config.local_epochs, generator, batch_transform=flip)
        return state
