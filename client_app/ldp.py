"""Local differential privacy baseline (FL-WBC §7.1 "LDP"): clip, then add Laplace noise.

    u = W_local - W_global
    u <- u * min(1, C / ||u||_2)                (clip to L2 norm C = ldp-clip)
    u <- u + Laplace noise of std z * C         (z = ldp-noise-multiplier, per coordinate)
    send W_global + u

Noise scale convention: a multiplier z of the clip norm, as in DP-FedAvg (McMahan et al. 2018):
one client's clipped update has sensitivity C, so its noise std is ``z * C`` (the central DP
baseline's is ``z * C / K`` on the mean of K). The FL-WBC paper states Laplace noise but defines
no scale; Laplace is kept, with ``z * C`` its standard deviation.

Flower's `LocalDpMod` adds Gaussian noise; the paper's baseline uses Laplace noise, so the
clip-and-noise step lives here. The noise has its own seeded generator (``ldp-noise``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from task.noise import laplace_like
from task.statevec import flatten_update, state_from_update


def clip_to_norm(update: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``update`` scaled to L2 norm at most `max_norm` (a new tensor)."""
    if not max_norm > 0:
        raise ValueError(f"ldp-clip must be > 0, got {max_norm}")
    norm = torch.linalg.vector_norm(update)
    return update * torch.clamp(max_norm / norm.clamp_min(1e-12), max=1.0)


def ldp_release(
    local: Mapping[str, torch.Tensor],
    global_: Mapping[str, torch.Tensor],
    clip: float,
    multiplier: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The state to send: global + clipped update + Laplace noise of std ``multiplier * clip``,
    over all floating-point tensors."""
    noisy = clip_to_norm(flatten_update(local, global_), clip)
    noisy += laplace_like(noisy, multiplier * clip, generator)
    device = next(iter(local.values())).device
    return state_from_update(noisy, global_, rest=local, device=device)
