"""The example-weighted mean of client updates (FedAvg, McMahan et al. 2017, Eq. in Alg. 1):

g~ = sum_i (n_i / sum_j n_j) * U_i
"""

from __future__ import annotations

import torch

from strategies.order_stats import as_matrix


def weighted_mean(U: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Example-weighted mean over clients (FedAvg); plain mean when `weights` is None."""
    M, dims = as_matrix(U)
    if weights is None:
        return M.mean(0).reshape(dims)
    w = weights.to(device=M.device, dtype=M.dtype)
    if w.shape != (M.shape[0],) or not bool((w > 0).all()):
        raise ValueError("weights must be one positive number per update")
    return (w / w.sum()).matmul(M).reshape(dims)
