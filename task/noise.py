"""Seeded noise samplers shared by the defenses (central DP, local DP, FL-WBC)."""

from __future__ import annotations

import math

import torch


def laplace_like(
    ref: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Laplace(0, b) noise shaped like `ref`, with **standard deviation** `std` (b = std/sqrt 2).

    Drawn by inverse CDF from `generator` (on `ref`'s device), so each defense can own its
    random stream: u ~ U(-1/2, 1/2), x = -b * sign(u) * log(1 - 2|u|).
    """
    if std < 0 or not math.isfinite(std):
        raise ValueError(f"noise std must be finite and >= 0, got {std}")
    u = torch.rand(ref.shape, generator=generator, device=ref.device, dtype=ref.dtype) - 0.5
    # clamp keeps log finite when u hits exactly -1/2 (probability ~2^-24)
    mag = torch.log1p(-2.0 * u.abs()).clamp_min(-80.0)
    return u.sign().mul_(mag).mul_(-std / math.sqrt(2.0))
