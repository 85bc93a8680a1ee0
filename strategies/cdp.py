"""Central differential privacy baseline (FL-WBC §7.1 "CDP", after Sun et al. 2019 weak DP).

    U_i <- U_i * min(1, C / ||U_i||_2)          (clip each client update to L2 norm C)
    g~  = (1/n) sum_i U_i + Laplace noise with standard deviation sigma per coordinate

Noise comes from the defense's own seeded generator.
"""

from __future__ import annotations

import torch

from immunefl.noise import laplace_like
from strategies.order_stats import as_matrix


def clip_rows(U: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row of ``U (n, d)`` to L2 norm at most `max_norm` (a new tensor)."""
    if not max_norm > 0:
        raise ValueError(f"clip norm must be > 0, got {max_norm}")
    M, _ = as_matrix(U)
    norms = torch.linalg.vector_norm(M, dim=1, keepdim=True)
    scale = torch.clamp(max_norm / norms.clamp_min(1e-12), max=1.0)
    return (M * scale).reshape(U.shape)


def central_dp_aggregate(
    U: torch.Tensor, clip: float, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Mean of row-clipped updates plus Laplace(std=sigma) noise."""
    mean = clip_rows(U, clip).reshape(U.shape[0], -1).mean(0)
    return mean.add_(laplace_like(mean, sigma, generator)).reshape(U.shape[1:])
