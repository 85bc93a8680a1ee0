"""An example plugin module: one aggregation rule and one attack of a user's own.

Nothing here is registered anywhere: an experiment file (or ``--set``) names the classes,
``strategy = "examples.plugins.my_plugins:NormFilteredMean"`` and
``attack = "examples.plugins.my_plugins:ScaledNoise"``, and sets their hyper-parameters by
their keys (``norm-factor``, ``noise-scale``), which are checked before anything starts.
See docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

import torch

from attacks import Attack, AttackContext, State, flatten_update, state_from_update
from strategies import ImmuneFedAvg
from task.params import Param


def norm_filtered_mean(U: torch.Tensor, weights: torch.Tensor, factor: float) -> torch.Tensor:
    """The weighted mean of the updates whose L2 norm is at most ``factor`` x the median norm.

    >>> U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [30.0, 40.0]])  # norms 1, 1, 50
    >>> norm_filtered_mean(U, torch.ones(3), factor=2.0)
    tensor([0.5000, 0.5000])
    """
    norms = torch.linalg.vector_norm(U, dim=1)
    keep = norms <= factor * norms.median()
    w = weights.to(U.dtype) * keep
    return (w[:, None] * U).sum(0) / w.sum()


class NormFilteredMean(ImmuneFedAvg):
    """Drop updates longer than ``norm-factor`` x the round's median norm, average the rest."""

    PARAMS = (
        Param("norm-factor", "factor", 2.0, "keep updates up to this x the median norm",
              low=1.0),
    )  # fmt: skip

    def __init__(self, select_nodes=None, *, factor: float = 2.0, **kwargs: Any) -> None:
        super().__init__(select_nodes, **kwargs)
        self.set_params(factor=factor)

    def aggregate_updates(self, U, weights, server_round):
        norms = torch.linalg.vector_norm(U, dim=1)
        kept = int((norms <= self.factor * norms.median()).sum())
        return norm_filtered_mean(U, weights, self.factor), {"kept": kept}


class ScaledNoise(Attack):
    """Send Gaussian noise with ``noise-scale`` times the norm of the node's honest update."""

    PARAMS = (
        Param("noise-scale", "scale", 10.0, "noise norm / honest update norm", low=0.0,
              low_open=True),
    )  # fmt: skip

    def craft(self, ctx: AttackContext, indices: torch.Tensor, generator: torch.Generator) -> State:
        honest, _ = ctx.train(indices, ctx.config.local_epochs, generator)
        u = flatten_update(honest, ctx.global_state)
        noise = torch.randn(u.shape, generator=generator, dtype=u.dtype)
        norm = torch.linalg.vector_norm
        noise *= self.params["scale"] * norm(u) / norm(noise)
        return state_from_update(noise, ctx.global_state)
