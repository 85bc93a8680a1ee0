"""Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
Optimization", ICML 2021, Eq. (CC) / Algorithm 2's aggregation step).

Starting from a centre ``v_0`` (in the paper: the previous round's aggregate momentum),

    v_{l+1} = v_l + (1/n) * sum_i clip_tau(U_i - v_l),    clip_tau(z) = z * min(1, tau / ||z||),

for ``l = 0 .. iters - 1``; the aggregate is ``v_iters``. A client farther than ``tau`` from the
centre moves it by at most ``tau / n``. ``clip_tau(0) = 0``.

Every iterate is an affine combination ``v = a^T [U; v_0]`` (coefficients summing to 1), so the
result is formed once in coordinate space, in ``U``'s dtype, from float64 coefficients. The
distances ``||U_i - v||`` come, for ``iters >= n / 2``, from the ``(n+1, n+1)`` Gram matrix of
the centred rows of ``[U; v_0]`` accumulated in float64 over column blocks (``n^2 d`` flops
whatever the number of iterations); for fewer iterations (the paper's ``iters = 1``) directly,
row by row in ``U``'s dtype (a few passes over ``U`` per iteration instead of n).
No ``(n, d)`` temporary is made either way.
"""

from __future__ import annotations

import torch

#: Elements of ``U`` per column block when accumulating the Gram matrix.
BLOCK_ELEMENTS = 1 << 20


def _centred_gram64(rows: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """Float64 Gram matrix of ``[rows; extra]`` after subtracting the column mean, over blocks."""
    n, d = rows.shape
    G = torch.zeros((n + 1, n + 1), dtype=torch.float64, device=rows.device)
    step = max(1, BLOCK_ELEMENTS // (n + 1))
    for start in range(0, d, step):
        block = torch.cat([rows[:, start : start + step], extra[None, start : start + step]])
        block = block.to(torch.float64)
        block = block - block.mean(0, keepdim=True)
        G += block @ block.T
    return G


def _direct_coefficients(
    U: torch.Tensor, center: torch.Tensor, tau: float, iters: int
) -> torch.Tensor:
    """The coefficients ``a`` of `centered_clipping`, distances ``||U_i - v||`` taken row by
    row in ``U``'s dtype (``v = a^T [U; v_0]`` by one matrix-vector product per iteration)."""
    n = U.shape[0]
    a = torch.zeros(n + 1, dtype=torch.float64, device=U.device)
    a[n] = 1.0
    for _ in range(iters):
        v = center if not bool(a[:n].any()) else a[:n].to(U.dtype) @ U + a[n].to(U.dtype) * center
        dist = torch.stack([torch.linalg.vector_norm(U[i] - v) for i in range(n)])
        dist = dist.to(torch.float64)
        c = torch.where(dist > tau, tau / dist.clamp_min(tau), torch.ones_like(dist))
        a = a * (1 - c.sum() / n)
        a[:n] += c / n
    return a


def centered_clipping(
    U: torch.Tensor, center: torch.Tensor | None, tau: float, iters: int = 1
) -> torch.Tensor:
    """``iters`` steps of ``v <- v + (1/n) sum_i clip_tau(U_i - v)`` from ``v = center``.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    center : torch.Tensor or None
        ``(d,)`` starting point ``v_0`` (the paper: last round's aggregate); None = zeros.
    tau : float
        Clipping radius ``tau > 0``.
    iters : int
        Number of iterations ``L >= 0`` (the paper uses 1, given a good centre).

    Returns
    -------
    torch.Tensor
        ``(d,)`` aggregate in ``U``'s dtype.

    Examples
    --------
    From 0 with tau = 1: the update at distance 5 counts as a unit vector, the small one fully.

    >>> U = torch.tensor([[0.5, 0.0], [0.0, 5.0]], dtype=torch.float64)
    >>> centered_clipping(U, None, tau=1.0, iters=1)  # (0.5, 0) + (0, 1), halved
    tensor([0.2500, 0.5000], dtype=torch.float64)
    >>> centered_clipping(U, None, tau=100.0, iters=1)  # tau above every distance: the mean
    tensor([0.2500, 2.5000], dtype=torch.float64)
    """
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    if not tau > 0:
        raise ValueError(f"clipping radius tau must be > 0, got {tau}")
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an integer >= 0, got {iters}")
    n, d = U.shape
    if center is None:
        center = torch.zeros(d, dtype=U.dtype, device=U.device)
    center = torch.as_tensor(center, dtype=U.dtype, device=U.device).reshape(-1)
    if center.numel() != d:
        raise ValueError(f"center must have d={d} entries, got {center.numel()}")
    if iters == 0:
        return center.clone()
    if 2 * iters < n:
        a = _direct_coefficients(U, center, tau, iters)
        return a[:n].to(U.dtype) @ U + a[n].to(U.dtype) * center
    G = _centred_gram64(U, center)
    diag = torch.diagonal(G)[:n]
    a = torch.zeros(n + 1, dtype=torch.float64, device=U.device)
    a[n] = 1.0  # v_0 = center
    for _ in range(iters):
        Ga = G @ a
        dist = (diag - 2 * Ga[:n] + a @ Ga).clamp_min(0).sqrt()  # ||U_i - v||
        c = torch.where(dist > tau, tau / dist.clamp_min(tau), torch.ones_like(dist))
        # v + (1/n) sum_i c_i (U_i - v) = (1 - sum(c)/n) v + sum_i (c_i/n) U_i
        a = a * (1 - c.sum() / n)
        a[:n] += c / n
    return a[:n].to(U.dtype) @ U + a[n].to(U.dtype) * center
