"""Gaussian noise (untargeted): send an update of i.i.d. N(0, ``gaussian-std``^2) values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from attacks.base import Attack, AttackContext, State, flatten_update, state_from_update


class GaussianNoise(Attack):
    """``attack = gaussian``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.std = float(config["gaussian-std"])

    @staticmethod
    def config_problems(config: Mapping[str, Any]) -> list[str]:
        std = float(config["gaussian-std"])
        return [] if std > 0 else [f"'gaussian-std' must be > 0, got {std}"]

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        d = flatten_update(ctx.global_state, ctx.global_state).numel()
        noise = torch.randn(d, generator=generator) * self.std
        return state_from_update(noise, ctx.global_state)
