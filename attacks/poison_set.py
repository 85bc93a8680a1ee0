"""The shared malicious dataset D_M of the targeted attack (FL-WBC §4.1, §7.1).

``poison-samples`` images drawn from the **test** split with a seeded generator (stream
``poison-set``), each given the adversarial label ``(y + target-shift) mod C``. Every attacker
and the server derive the same D_M from the run config; its images are removed from the benign
evaluation set, so benign accuracy never scores the attacked images, and they never appear in
any benign training partition (those come from the training split).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from task.data import Dataset
from task.seeding import torch_generator


@dataclass(frozen=True)
class PoisonSet:
    """D_M: indices into the test split, their true and their adversarial labels."""

    indices: torch.Tensor
    true_labels: torch.Tensor
    adv_labels: torch.Tensor

    def images(self, dataset: Dataset) -> torch.Tensor:
        return dataset.test.images[self.indices]


def poison_set(dataset: Dataset, samples: int, seed: int, shift: int = 1) -> PoisonSet:
    """The D_M of a run (deterministic in ``(seed, samples, shift)``)."""
    n = len(dataset.test)
    if not 1 <= samples <= n:
        raise ValueError(f"poison-samples must be in [1, {n}], got {samples}")
    if shift % dataset.num_classes == 0:
        raise ValueError(f"target-shift {shift} maps every label to itself")
    order = torch.randperm(n, generator=torch_generator(seed, "poison-set"))
    idx = order[:samples].sort().values
    y = dataset.test.labels[idx]
    return PoisonSet(idx, y, (y + shift) % dataset.num_classes)


def benign_test_indices(dataset: Dataset, excluded: torch.Tensor | None) -> torch.Tensor | None:
    """Test-split indices without `excluded` (None when nothing is excluded)."""
    if excluded is None or excluded.numel() == 0:
        return None
    keep = torch.ones(len(dataset.test), dtype=torch.bool)
    keep[excluded] = False
    return torch.nonzero(keep).flatten()
