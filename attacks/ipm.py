"""Inner product manipulation (Xie et al., UAI 2019), untargeted.

The attackers send ``-ipm-epsilon * mu``, with mu the mean benign update estimated from their
own partitions' benign updates, so the aggregate's inner product with the true gradient turns
negative while each malicious update stays small.
"""

from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, State, state_from_update
from immunefl.runconfig import RunConfig


class IPM(Attack):
    """``attack = ipm``."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.epsilon = config.ipm_epsilon

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        eps = config.ipm_epsilon
        return [] if eps > 0 else [f"'ipm-epsilon' must be > 0, got {eps}"]

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        mu = torch.stack([ctx.benign_update(p) for p in ctx.malicious]).mean(0)
        return state_from_update(-self.epsilon * mu, ctx.global_state)
