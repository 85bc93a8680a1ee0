"""Norm bounding with optional weak differential privacy (Sun, Kairouz, Suresh, McMahan, "Can
You Really Backdoor Federated Learning?", 2019, §4 "Norm thresholding of updates" and "(Weak)
differential privacy").

    U_i' = U_i / max(1, ||U_i|| / M)                     (clip each update to L2 norm M)
    g    = sum_i p_i U_i' + N(0, sigma^2 I),   p_i = w_i / sum_j w_j   (uniform by default)

Norms are taken in ``U``'s dtype, the n weights in float64; the weighted mean is one
matrix-vector product in ``U``'s dtype; the noise is drawn in ``U``'s dtype from ``generator``.
"""

from __future__ import annotations

import math

import torch


def norm_bound(
    U: torch.Tensor,
    bound: float,
    *,
    weights: torch.Tensor | None = None,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Weighted mean of the updates clipped to L2 norm ``bound``, plus Gaussian noise.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    bound : float
        Norm bound ``M > 0``.
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights (e.g. sample counts), not all zero; default uniform.
    noise_std : float
        ``sigma >= 0`` of the Gaussian noise per coordinate (weak DP; 0 = none).
    generator : torch.Generator, optional
        Source of the noise (None: torch's global generator).

    Returns
    -------
    torch.Tensor
        ``(d,)`` aggregate in ``U``'s dtype.

    Examples
    --------
    (3, 4) has norm 5 and is clipped to (0.6, 0.8) by M = 1; (0.5, 0) is left alone.

    >>> U = torch.tensor([[3.0, 4.0], [0.5, 0.0]], dtype=torch.float64)
    >>> norm_bound(U, 1.0)
    tensor([0.5500, 0.4000], dtype=torch.float64)
    >>> norm_bound(U, 1.0, weights=torch.tensor([1.0, 3.0]))  # (0.6 + 1.5, 0.8) / 4
    tensor([0.5250, 0.2000], dtype=torch.float64)
    """
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"norm bound must be finite and > 0, got {bound}")
    if not (noise_std >= 0 and math.isfinite(noise_std)):
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    n, d = U.shape
    if weights is None:
        p = torch.full((n,), 1.0 / n, dtype=torch.float64)
    else:
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
        if w.numel() != n:
            raise ValueError(f"weights must have one entry per update (n={n}), got {w.numel()}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
        p = w / w.sum()
    norms = torch.linalg.vector_norm(U, dim=1).to(torch.float64).cpu()
    scale = 1.0 / torch.clamp(norms / bound, min=1.0)
    out = (p * scale).to(U.dtype).to(U.device) @ U
    if noise_std > 0:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(d, generator=generator, dtype=U.dtype, device=gen_device)
        out = out + noise_std * noise.to(U.device)
    return out
