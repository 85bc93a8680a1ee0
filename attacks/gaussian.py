"""Gaussian noise (untargeted): send an update of i.i.d. N(0, ``gaussian-std``^2) values."""

from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, State, flatten_update, state_from_update
from task.runconfig import RunConfig


def gaussian_update(d: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """``d`` i.i.d. N(0, std^2) values: an update that carries no information (the untargeted
    baseline of Fang et al., 2020 and Blades' ``noise`` attack).

    >>> u = gaussian_update(100_000, 0.1, torch.Generator().manual_seed(0))
    >>> round(float(u.std()), 2), abs(float(u.mean())) < 0.01
    (0.1, True)
    """
    return torch.randn(d, generator=generator) * std


class GaussianNoise(Attack):
    """``attack = gaussian``."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.std = config.gaussian_std

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        std = config.gaussian_std
        return [] if std > 0 else [f"'gaussian-std' must be > 0, got {std}"]

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        d = flatten_update(ctx.global_state, ctx.global_state).numel()
        return state_from_update(gaussian_update(d, self.std, generator), ctx.global_state)
