"""sign-SGD with majority vote (Bernstein et al., 2019; Invariant Aggregator §D.6 baseline).

    g~_k = sign( sum_i sign(U_ik) )

The server then steps by ``lr * g~`` (each client's pseudo-gradient already points downhill).
"""

from __future__ import annotations

import torch

from strategies.order_stats import as_matrix, sign_votes


def majority_vote(U: torch.Tensor) -> torch.Tensor:
    """sign(sum_i sign(U_i)) over clients (dim 0); ties give 0.

    >>> U = torch.tensor([[1., -2.], [2., -1.], [3., 4.], [100., 5.]])  # 4 clients, 2 coords
    >>> majority_vote(U)  # 4 positive votes; 2 vs 2 is a tie
    tensor([1., 0.])
    """
    M, dims = as_matrix(U)
    return torch.sign(sign_votes(M)).reshape(dims)
