"""Inner product manipulation (Xie et al., UAI 2019), untargeted.

The attackers send ``-ipm-epsilon * mu``, with mu the mean benign update estimated from their
own partitions' benign updates, so the aggregate's inner product with the true gradient turns
negative while each malicious update stays small.
"""

from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, State, state_from_update
from task.runconfig import RunConfig


def ipm_update(benign: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``-epsilon * mean(benign)`` over the rows of the ``(m, d)`` benign updates (Xie et al.,
    2019, §3: with epsilon small the malicious update is short, yet the aggregate's inner product
    with the true gradient turns negative once enough of it is averaged in).

    >>> ipm_update(torch.tensor([[1.0, -2.0], [3.0, 0.0]]), 0.5)
    tensor([-1.0000,  0.5000])
    """
    return -epsilon * benign.mean(0)


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
        benign = torch.stack([ctx.benign_update(p) for p in ctx.malicious])
        return state_from_update(ipm_update(benign, self.epsilon), ctx.global_state)
