"""Invariant Aggregator (Wang et al., "Invariant Aggregator for Defending against Federated
Backdoor Attacks", §5.1, Algorithm 1).

AND-mask (Definition 7, with the threshold on the *normalised* sign consistency, as §5.1's text,
Theorem 10's tau = 1 - 2*alpha and Table 3's tau = 0.2 / 0.6 use it):

    c_k = | (1/n) * sum_i sign(U_ik) |  in [0, 1],   sign(0) = 0
    m_k = 1[c_k > tau]

Aggregate (Algorithm 1): g~ = m (elementwise) TrMean({U_i}; alpha)   (Definition 9).

A coordinate whose clients disagree on the direction gets no update at all, so a few malicious
clients cannot steer it, whatever their magnitudes; where they agree, the trimmed mean keeps
outliers from dragging the step.
"""

from __future__ import annotations

import torch

from strategies.order_stats import as_matrix, sign_votes
from strategies.trimmed_mean import trimmed_mean


def sign_consistency(U: torch.Tensor) -> torch.Tensor:
    """c_k = |mean_i sign(U_ik)| for ``U`` of shape ``(n, *dims)``; values in [0, 1]."""
    M, dims = as_matrix(U)
    return sign_votes(M).abs_().div_(M.shape[0]).reshape(dims)


def and_mask(U: torch.Tensor, tau: float) -> torch.Tensor:
    """m_k = 1[c_k > tau] (Definition 7, normalised) as a 0/1 tensor of ``U``'s dtype."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"AND-mask threshold tau must be in [0, 1), got {tau}")
    return (sign_consistency(U) > tau).to(U.dtype)


def invariant_aggregate(U: torch.Tensor, tau: float, alpha: float) -> torch.Tensor:
    """Algorithm 1: ``and_mask(U, tau) * trimmed_mean(U, alpha)``."""
    return and_mask(U, tau).mul_(trimmed_mean(U, alpha))
