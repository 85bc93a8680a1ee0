"""FL-WBC as the authors' code runs it (``wbc-variant = official``), beside Algorithm 1.

Sun et al.'s repository (jeremy313/FL-WBC, ``src/update.py``, ``LocalUpdate.update_weights``,
the ``defense == "WBC"`` branch) differs from the paper's Algorithm 1 (`client_app.wbc`) in what
it estimates and where it perturbs. Each choice below follows that source:

- **estimate**: the change of the *gradient* between consecutive batches,
  ``D = grad_i - grad_{i-1}`` (``grad_diff = grad_tensor - old_gradient[name]``), read from
  ``p.grad`` after ``optimizer.step()``; Algorithm 1 uses the change of the parameter change.
  With momentum (the code's SGD has momentum 0.5) the two differ;
- **rule**: ``Y ~ Laplace(0, scale = s)`` per coordinate (``np.random.laplace(0, pert_strength)``,
  so std = sqrt(2) * s), zeroed where ``|D| > |Y|`` (``np.where(abs(grad_diff) > abs(...), 0,
  ...)``), then ``W <- W + lr * Y`` (``p.data + pertubation * lr``);
- **which tensors**: parameters whose name contains ``weight`` (``if 'weight' in name``);
  biases are never perturbed;
- **when**: after every step but the first of each epoch (``if batch_idx != 0``); the previous
  gradient is recorded after every step and starts afresh each epoch (``old_gradient = {}`` at
  the top of the epoch loop).

``wbc-variant = dense`` is the same update with the null-space test removed: every entry of
every weight tensor gets ``lr * Y`` at the same steps, from the same noise stream (the same
seed draws the same Y), so its ``wbc_perturbed_fraction`` is 1.0. It is the control that asks
whether FL-WBC's mitigation is more than the Laplace noise it adds (issue 32).

Its other settings are run-config values (the ``official`` presets of
``configs/fl-wbc-*-fmnist.yaml``): E = 10, B = 10, lr 0.01, momentum 0.5 (``src/options.py``).
Not copied: the code trains on 80% of each partition (a train/validation/test split of the
client's data); ours trains on all of it. Noise comes from the defense's own seeded stream, as
for Algorithm 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from task.noise import laplace_like


def official_perturbation(
    grad_change: torch.Tensor, noise: torch.Tensor, lr: float
) -> torch.Tensor:
    """The change the authors' code adds to one weight tensor: ``lr * Y`` where
    ``|grad_i - grad_{i-1}| <= |Y|``, else 0.

    >>> official_perturbation(torch.tensor([0.1, 3.0]), torch.tensor([-1.0, 1.0]), 0.01)
    tensor([-0.0100,  0.0000])
    """
    return torch.where(grad_change.abs() <= noise.abs(), noise * lr, torch.zeros_like(noise))


class OfficialWBC:
    """The authors' FL-WBC as a step hook of `task.training.train_sgd` (see module doc);
    with ``dense`` the same noise on every weight entry, no null-space test."""

    def __init__(
        self,
        named_params: Iterable[tuple[str, nn.Parameter]],
        lr: float,
        s: float,
        generator: torch.Generator,
        dense: bool = False,
    ) -> None:
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"wbc-s must be finite and >= 0, got {s}")
        self.params = [p for name, p in named_params if "weight" in name and p.requires_grad]
        self.lr = float(lr)
        self.std = math.sqrt(2.0) * float(s)  # Laplace scale s
        self.generator = generator
        self.dense = bool(dense)
        self._old = [torch.empty_like(p) for p in self.params]
        self._batch = 0
        self._numel = sum(p.numel() for p in self.params)
        self.perturbed_fractions: list[float] = []

    def start_epoch(self) -> None:
        self._batch = 0

    def before_step(self) -> None:
        pass

    @torch.no_grad()
    def after_step(self) -> None:
        if self._batch > 0 and self.std > 0:
            perturbed = 0
            for p, old in zip(self.params, self._old, strict=True):
                noise = laplace_like(p, self.std, self.generator)
                if self.dense:  # the control: no null-space test, every entry moves
                    p.add_(noise * self.lr)
                    perturbed += p.numel()
                    continue
                change = official_perturbation(p.grad - old, noise, self.lr)
                p.add_(change)
                perturbed += int((change != 0).sum())
            self.perturbed_fractions.append(perturbed / max(self._numel, 1))
        for p, old in zip(self.params, self._old, strict=True):
            old.copy_(p.grad)
        self._batch += 1

    @property
    def perturbed_fraction(self) -> float:
        """Share of the weight coordinates perturbed, averaged over the perturbed steps."""
        if not self.perturbed_fractions:
            return 0.0
        return sum(self.perturbed_fractions) / len(self.perturbed_fractions)
