"""Invariant Aggregator (Wang et al., "Invariant Aggregator for Defending against Federated
Backdoor Attacks", §5.1, Algorithm 1).

AND-mask (Definition 7, with the threshold on the *normalised* sign consistency, as §5.1's text,
Theorem 10's tau = 1 - 2*alpha and Table 3's tau = 0.2 / 0.6 use it):

    c_k = | (1/n) * sum_i sign(U_ik) |  in [0, 1],   sign(0) = 0
    m_k = 1[c_k >= tau]

A coordinate whose consistency *equals* tau is kept: the proof of Theorem 10 needs "a dimension
with at least N - alpha*N benign elements pointing to the benign direction will not be masked
out" with tau = 1 - 2*alpha, and N - alpha*N agreeing votes against alpha*N give exactly c = 1 -
2*alpha = tau; §5.1 says "if the sign consistency is below a given threshold tau, the mask
element is set to 0; otherwise ... 1", and the authors' code keeps ``>= 0.6`` too. (The paper is
not consistent: Definition 7 and Algorithm 1 write a strict ``> tau``, and the p+ count in the
same proof fits the strict form; we follow the guarantee, the prose and the code.) Vote counts
are integers, so ties are common (n = 10, tau = 0.2: 6 vs 4 votes; n = 20, tau = 0.6: 16 vs 4);
the comparison is made on the integer vote count, ``|sum_i sign(U_ik)| >= tau * n``, with a
tolerance far below one vote so that ``tau * n`` computed in floating point (0.6 * 20 =
12.000000000000002) cannot mask a tie. tau = 0 keeps every coordinate (the trimmed mean alone).

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


#: Tolerance on the vote count: far below one vote, far above float rounding of tau * n.
VOTE_TOLERANCE = 1e-6


def and_mask(U: torch.Tensor, tau: float) -> torch.Tensor:
    """m_k = 1[c_k >= tau] (Definition 7, normalised; ties kept, see the module doc) as a 0/1
    tensor of ``U``'s dtype, computed on the integer vote counts.

    >>> U = torch.tensor([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]])
    >>> and_mask(U, 0.6).tolist()  # votes 3/5 = 0.6 (a tie) and 3/5: both kept
    [1.0, 1.0]
    """
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"AND-mask threshold tau must be in [0, 1), got {tau}")
    M, dims = as_matrix(U)
    votes = sign_votes(M).abs_()
    return (votes >= tau * M.shape[0] - VOTE_TOLERANCE).to(U.dtype).reshape(dims)


def invariant_aggregate_with_mask(
    U: torch.Tensor, tau: float, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Algorithm 1's ``and_mask(U, tau) * trimmed_mean(U, alpha)``, the mask)."""
    mask = and_mask(U, tau)
    return mask * trimmed_mean(U, alpha), mask


def invariant_aggregate(U: torch.Tensor, tau: float, alpha: float) -> torch.Tensor:
    """Algorithm 1: ``and_mask(U, tau) * trimmed_mean(U, alpha)``."""
    return invariant_aggregate_with_mask(U, tau, alpha)[0]
