"""Inner product manipulation (Xie et al., UAI 2019), untargeted.

The attackers send ``-ipm-epsilon * mu``, with mu the mean benign update estimated from their
own partitions' benign updates, so the aggregate's inner product with the true gradient turns
negative while each malicious update stays small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from attacks.base import Attack, AttackContext, State, state_from_update


class IPM(Attack):
    """``attack = ipm``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.epsilon = float(config["ipm-epsilon"])

    @staticmethod
    def config_problems(config: Mapping[str, Any]) -> list[str]:
        eps = float(config["ipm-epsilon"])
        return [] if eps > 0 else [f"'ipm-epsilon' must be > 0, got {eps}"]

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        mu = torch.stack([ctx.benign_update(p) for p in ctx.malicious]).mean(0)
        return state_from_update(-self.epsilon * mu, ctx.global_state)
