"""A Little Is Enough (Baruch et al., NeurIPS 2019), untargeted.

The attackers estimate the per-coordinate mean mu and standard deviation sigma of the benign
updates from the benign updates of their own partitions (every attacker computes the same
estimates, `AttackContext.benign_update`) and all send

    u = mu - z * sigma,   z = Phi^{-1}((n - s) / n),   s = floor(n / 2 + 1) - m

with n = ``clients-per-round`` and m = ``malicious-per-round`` (the paper's z_max), unless
``alie-z`` > 0 sets z.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from attacks.base import Attack, AttackContext, State, state_from_update
from task.runconfig import RunConfig


def alie_z(n: int, m: int) -> float:
    """Baruch et al.'s z_max for n clients of which m are malicious: with
    ``s = floor(n/2 + 1) - m`` benign supporters needed, ``z = Phi^-1((n - s) / n)``.

    >>> round(alie_z(20, 4), 4)  # s = 7: z = Phi^-1(0.65)
    0.3853
    """
    s = math.floor(n / 2 + 1) - m
    p = (n - s) / n
    p = min(max(p, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


class ALIE(Attack):
    """``attack = alie``."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        z = config.alie_z
        n, m = config.clients_per_round, config.malicious_per_round
        self.z = z if z > 0 else alie_z(n, m)

    @staticmethod
    def config_problems(config: RunConfig) -> list[str]:
        return [] if config.alie_z >= 0 else ["'alie-z' must be >= 0 (0 = z_max)"]

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        refs = torch.stack([ctx.benign_update(p) for p in ctx.malicious])
        mu = refs.mean(0)
        sigma = refs.std(0, unbiased=False) if len(refs) > 1 else torch.zeros_like(mu)
        return state_from_update(mu - self.z * sigma, ctx.global_state)
