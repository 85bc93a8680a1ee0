"""Gaussian noise (untargeted): send an update of i.i.d. N(0, ``gaussian-std``^2) values."""

from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, State, flatten_update, state_from_update
from immunefl.runconfig import RunConfig


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
        noise = torch.randn(d, generator=generator) * self.std
        return state_from_update(noise, ctx.global_state)
