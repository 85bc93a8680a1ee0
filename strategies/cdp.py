"""Central differential privacy baseline (FL-WBC §7.1 "CDP", after Sun et al. 2019 weak DP).

    U_i <- U_i * min(1, C / ||U_i||_2)                 (clip each client update to L2 norm C)
    g~  = (1/K) sum_i U_i + Laplace noise, std z * C / K per coordinate

Noise scale convention: the DP-FedAvg one (McMahan et al., ICLR 2018): the noise is a
**multiplier z of the clip norm**, and the sensitivity of the mean of K clipped updates to one
client is C / K, so the per-coordinate noise std is ``z * C / K`` (``cdp-noise-multiplier`` = z,
``cdp-clip`` = C, K = updates aggregated this round). The FL-WBC paper states Laplace noise but
defines no scale (and its code has no DP baselines), so z is the knob a trade-off curve sweeps;
Laplace is kept as the paper states, with z * C / K its **standard deviation** (not its scale).
Noise comes from the defense's own seeded generator.
"""

from __future__ import annotations

import torch

from strategies.order_stats import as_matrix
from task.noise import laplace_like


def clip_rows(U: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each row of ``U (n, d)`` to L2 norm at most `max_norm` (a new tensor)."""
    if not max_norm > 0:
        raise ValueError(f"clip norm must be > 0, got {max_norm}")
    M, _ = as_matrix(U)
    norms = torch.linalg.vector_norm(M, dim=1, keepdim=True)
    scale = torch.clamp(max_norm / norms.clamp_min(1e-12), max=1.0)
    return (M * scale).reshape(U.shape)


def cdp_noise_std(clip: float, multiplier: float, num_updates: int) -> float:
    """Per-coordinate noise std of DP-FedAvg's mean: ``z * C / K``.

    >>> cdp_noise_std(clip=5.0, multiplier=0.1, num_updates=10)
    0.05
    """
    return multiplier * clip / num_updates


def central_dp_aggregate(
    U: torch.Tensor, clip: float, multiplier: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Mean of the K row-clipped updates plus Laplace noise of std ``multiplier * clip / K``."""
    mean = clip_rows(U, clip).reshape(U.shape[0], -1).mean(0)
    std = cdp_noise_std(clip, multiplier, U.shape[0])
    return mean.add_(laplace_like(mean, std, generator)).reshape(U.shape[1:])
