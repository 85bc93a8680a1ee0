"""The example-weighted mean of client updates (FedAvg, McMahan et al. 2017, Eq. in Alg. 1):

g~ = sum_i (n_i / sum_j n_j) * U_i
"""

from __future__ import annotations

import torch

from strategies.order_stats import as_matrix


def weighted_mean(U: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Example-weighted mean over clients (FedAvg); plain mean when `weights` is None.

    >>> U = torch.tensor([[1., -2.], [2., -1.], [3., 4.], [100., 5.]])  # 4 clients, 2 coords
    >>> weighted_mean(U)  # one outlier moves the plain mean as far as it likes
    tensor([26.5000,  1.5000])
    >>> weighted_mean(U, torch.tensor([1.0, 1.0, 1.0, 0.001]))
    tensor([2.0327, 0.3349])
    """
    M, dims = as_matrix(U)
    if weights is None:
        return M.mean(0).reshape(dims)
    w = weights.to(device=M.device, dtype=torch.float64)
    if w.shape != (M.shape[0],) or not bool((w > 0).all() and torch.isfinite(w).all()):
        raise ValueError("weights must be one positive finite number per update")
    # normalise in float64: a weight finite in float64 may be infinite in float32 (1e39)
    return (w / w.sum()).to(M.dtype).matmul(M).reshape(dims)
