"""Sign flipping (untargeted): send ``-attack-boost`` times the benign update."""

from __future__ import annotations

import torch

from attacks.base import Attack, AttackContext, State, flatten_update, state_from_update
from task.runconfig import RunConfig


def sign_flip_update(update: torch.Tensor, scale: float) -> torch.Tensor:
    """``-scale * update``: the node's honest update, reversed and scaled (Damaskinos et al.,
    2018; Li et al., 2019).

    >>> sign_flip_update(torch.tensor([0.5, -1.0, 0.0]), 2.0)
    tensor([-1.,  2., -0.])
    """
    return -scale * update


class SignFlip(Attack):
    """``attack = sign-flip``."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.scale = config.attack_boost
        self.epochs = config.local_epochs

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        state, _ = ctx.train(indices, self.epochs, generator)
        update = flatten_update(state, ctx.global_state)
        return state_from_update(sign_flip_update(update, self.scale), ctx.global_state)
