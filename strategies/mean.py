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
    w = weights.to(device=M.device, dtype=torch.float64)
    if w.shape != (M.shape[0],) or not bool((w > 0).all() and torch.isfinite(w).all()):
        raise ValueError("weights must be one positive finite number per update")
    # normalise in float64: a weight finite in float64 may be infinite in float32 (1e39)
    return (w / w.sum()).to(M.dtype).matmul(M).reshape(dims)
