"""Divide-and-Conquer (DnC; Shejwalkar & Houmansadr, "Manipulating the Byzantine: Optimizing
Model Poisoning Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2).

    I_good = {1..n}
    repeat niters times:
        r      <- b coordinates sampled uniformly without replacement
        X      <- U[:, r] - mean_i U[i, r]                  (centred sub-vectors)
        v      <- top right singular vector of X
        s_i    <- <X_i, v>^2                                 (outlier score)
        I      <- the n - floor(c * f) clients with the lowest scores
        I_good <- I_good intersected with I
    aggregate = mean of U_i over i in I_good

``f`` is the assumed number of malicious clients and ``c`` the filtering fraction. ``b >= d``
uses all coordinates (no sampling). The sub-matrix ``(n, b)`` is factorised in float64; the
final mean is taken in ``U``'s dtype. Ties in the scores keep the lower client index.
Defaults ``b = 10000, niters = 5, c = 1`` are those of the common reimplementations; the
paper's Algorithm 2 takes them as inputs. Each iteration removes ``floor(c f)`` clients, so
the intersection can lose up to ``niters * floor(c f)``; should it become empty, the
aggregate is the zero update and ``good`` is all False (no error).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class DnCResult(NamedTuple):
    aggregate: torch.Tensor  #: ``(d,)`` in ``U``'s dtype (zero if ``good`` is empty)
    good: torch.Tensor  #: ``(n,)`` bool: kept in every iteration


def dnc_result(
    U: torch.Tensor,
    f: int,
    *,
    b: int = 10000,
    niters: int = 5,
    c: float = 1.0,
    generator: torch.Generator | None,
) -> DnCResult:
    """DnC (Algorithm 2) with the good set; see :func:`dnc`."""
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    n, d = U.shape
    if not isinstance(f, int) or not 0 <= f < n:
        raise ValueError(f"f must be an integer with 0 <= f < n={n}, got {f}")
    if not isinstance(b, int) or b < 1:
        raise ValueError(f"sub-sample size b must be an integer >= 1, got {b}")
    if not isinstance(niters, int) or niters < 1:
        raise ValueError(f"niters must be an integer >= 1, got {niters}")
    if not (c >= 0 and math.isfinite(c)):
        raise ValueError(f"filtering fraction c must be finite and >= 0, got {c}")
    removed = math.floor(c * f + 1e-9)
    if removed >= n:
        raise ValueError(f"c * f = {c * f} removes every one of n={n} clients")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    good = torch.ones(n, dtype=torch.bool)
    for _ in range(niters):
        if b >= d:
            X = U
        else:
            idx = torch.randperm(d, generator=generator, device=gen_device)[:b]
            X = U[:, idx.to(U.device)]
        X = X.to(torch.float64)
        X = X - X.mean(0, keepdim=True)
        v = torch.linalg.svd(X, full_matrices=False).Vh[0]
        scores = (X @ v).square().cpu()
        keep = torch.argsort(scores, stable=True)[: n - removed]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[keep] = True
        good &= mask
    k = int(good.sum())
    if k == 0:
        return DnCResult(torch.zeros(d, dtype=U.dtype, device=U.device), good)
    coef = good.to(torch.float64) / k
    return DnCResult(coef.to(U.dtype).to(U.device) @ U, good)


def dnc(
    U: torch.Tensor,
    f: int,
    *,
    b: int = 10000,
    niters: int = 5,
    c: float = 1.0,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Divide-and-Conquer aggregate of ``U``: the mean of the clients never among the
    ``floor(c * f)`` highest outlier scores.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    f : int
        Assumed number of malicious clients, ``0 <= f < n``.
    b : int
        Coordinates sampled per iteration (``b >= d``: all of them).
    niters : int
        Iterations (``>= 1``).
    c : float
        Filtering fraction (``c >= 0``; ``floor(c f) < n``).
    generator : torch.Generator or None
        Source of the coordinate samples (None: torch's global generator). Required so that
        callers choose determinism explicitly.

    Returns
    -------
    torch.Tensor
        ``(d,)`` aggregate in ``U``'s dtype.

    Examples
    --------
    Four clients near (1, 1) and one far outlier: the outlier has the largest projection on
    the top singular direction and is removed; the rest are averaged.

    >>> U = torch.tensor([[1.0, 1.0], [1.2, 1.0], [1.0, 1.2], [1.2, 1.2], [-20.0, 30.0]])
    >>> g = torch.Generator().manual_seed(0)
    >>> [round(x, 4) for x in dnc(U, 1, b=2, niters=1, c=1.0, generator=g).tolist()]
    [1.1, 1.1]
    """
    return dnc_result(U, f, b=b, niters=niters, c=c, generator=generator).aggregate
