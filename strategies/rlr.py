"""Robust learning rate (Ozdayi et al., "Defending against backdoors in FL with robust learning
rate", AAAI 2021; Invariant Aggregator §D.6 baseline).

Per coordinate, the server learning rate keeps its sign only where enough clients agree:

    s_k = | sum_i sign(U_ik) |,     lr_k = +eta if s_k >= theta else -eta
    g~  = lr (elementwise) mean_w(U)

with ``theta`` a number of clients (the paper's threshold, e.g. 4 of 10) and ``mean_w`` the
FedAvg (example-weighted) mean; eta is the server learning rate applied by the strategy.
"""

from __future__ import annotations

import torch

from strategies.mean import weighted_mean
from strategies.order_stats import as_matrix, sign_votes


def robust_lr_sign(U: torch.Tensor, theta: float) -> torch.Tensor:
    """+1 where |sum_i sign(U_ik)| >= theta, else -1."""
    M, dims = as_matrix(U)
    if not 0 <= theta <= M.shape[0]:
        raise ValueError(f"rlr theta must be in [0, n={M.shape[0]}], got {theta}")
    votes = sign_votes(M)
    return torch.where(votes.abs() >= theta, 1.0, -1.0).to(M.dtype).reshape(dims)


def robust_lr_aggregate(
    U: torch.Tensor, theta: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``robust_lr_sign(U, theta) * weighted_mean(U, weights)``.

    >>> U = torch.tensor([[1., -2.], [2., -1.], [3., 4.], [100., 5.]])  # 4 clients, 2 coords
    >>> robust_lr_sign(U, 3)  # |votes| = 4 >= 3 keeps the step; |votes| = 0 < 3 reverses it
    tensor([ 1., -1.])
    >>> robust_lr_aggregate(U, 3)
    tensor([26.5000, -1.5000])
    """
    return robust_lr_sign(U, theta).mul_(weighted_mean(U, weights))
