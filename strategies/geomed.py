"""Geometric median by the smoothed Weiszfeld algorithm: RFA (Pillutla, Kakade, Harchaoui,
"Robust Aggregation for Federated Learning", IEEE TSP 2022, Algorithm 2).

The aggregate is the weighted geometric median

    GM(U; alpha) = argmin_v  sum_i alpha_i ||v - U_i||,    alpha_i >= 0, sum_i alpha_i = 1,

approximated by the smoothed Weiszfeld iteration (RFA Algorithm 2)

    beta_i = alpha_i / max(nu, ||v - U_i||),     v <- sum_i beta_i U_i / sum_i beta_i,

started at the weighted mean (as RFA's code) and stopped when the relative change of the
nu-smoothed objective

    g_nu(v) = sum_i alpha_i h_nu(||v - U_i||),   h_nu(r) = r            if r >= nu
                                                         = r^2/(2 nu) + nu/2  if r < nu

is at most ``tol`` (``|g_prev - g| <= tol * g``), or after ``max_iter`` updates. Each update is a
majorize-minimize step of ``g_nu``, so ``g_nu`` never increases. ``nu`` keeps a division by a
zero distance from happening when ``v`` lands on a client's update.

Every iterate is a convex combination of the rows of ``U`` (of ``U`` and ``init`` when a start
is given), so the whole iteration runs on the ``(n, n)`` Gram matrix of the centred rows,
accumulated in float64 over column blocks: ``||U_i - w^T U||^2 = (e_i - w)^T G (e_i - w)``.
Only the final median is formed in coordinate space, in ``U``'s dtype. This costs one Gram
matrix (``n^2 d`` flops) however many iterations run, and no ``(n, d)`` temporary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Elements of ``U`` per column block when accumulating the Gram matrix.
BLOCK_ELEMENTS = 1 << 20


class GeometricMedianResult(NamedTuple):
    """The median and how the smoothed Weiszfeld iteration ended."""

    median: torch.Tensor  #: ``(d,)`` in ``U``'s dtype
    coefficients: torch.Tensor  #: ``(n,)`` float64: ``median = coefficients @ U`` (init aside)
    iterations: int  #: Weiszfeld updates performed
    converged: bool  #: the relative objective change fell to ``tol`` within ``max_iter``
    objective: float  #: smoothed objective ``g_nu`` at the returned median


def _centred_gram64(rows: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Float64 Gram matrix of the rows of ``rows`` (and the row ``extra``) after subtracting
    their column mean, accumulated over column blocks (no ``(n, d)`` float64 copy)."""
    n, d = rows.shape
    m = n + (extra is not None)
    G = torch.zeros((m, m), dtype=torch.float64, device=rows.device)
    step = max(1, BLOCK_ELEMENTS // m)
    for start in range(0, d, step):
        block = rows[:, start : start + step].to(torch.float64)
        if extra is not None:
            block = torch.cat([block, extra[None, start : start + step].to(torch.float64)])
        block = block - block.mean(0, keepdim=True)
        G += block @ block.T
    return G


def _smoothed_objective(dist: torch.Tensor, alpha: torch.Tensor, nu: float) -> float:
    h = torch.where(dist >= nu, dist, dist * dist / (2 * nu) + nu / 2)
    return float((alpha * h).sum())


def _check_weights(weights: torch.Tensor | None, n: int) -> torch.Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
    if w.numel() != n:
        raise ValueError(f"weights must have one entry per update (n={n}), got {w.numel()}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return w / w.sum()


def geometric_median_result(
    U: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    nu: float = 1e-6,
    tol: float = 1e-7,
    max_iter: int = 1000,
    init: torch.Tensor | None = None,
) -> GeometricMedianResult:
    """RFA's smoothed Weiszfeld algorithm (Algorithm 2) on the rows of ``U``, with diagnostics.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates (floating point).
    weights : torch.Tensor, optional
        ``(n,)`` non-negative weights ``alpha_i`` (e.g. sample counts), normalised to sum 1.
        Default: uniform.
    nu : float
        Smoothing ``nu > 0``: distances below it count as ``nu`` in ``beta_i``.
    tol : float
        Stop once ``|g_prev - g| <= tol * g`` for the smoothed objective ``g`` (``tol >= 0``;
        ``tol = 0`` runs until the objective stops changing or ``max_iter``).
    max_iter : int
        Most Weiszfeld updates (``>= 0``).
    init : torch.Tensor, optional
        ``(d,)`` starting point; default the weighted mean (RFA's choice).

    Returns
    -------
    GeometricMedianResult
        ``median`` (``(d,)``, ``U``'s dtype), the final convex ``coefficients`` over the rows,
        ``iterations``, ``converged`` and the smoothed ``objective``.

    Examples
    --------
    Three collinear points: the median is the middle one (the mean would be 4/3).

    >>> U = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    >>> r = geometric_median_result(U)
    >>> [round(x, 4) for x in r.median.tolist()], r.converged
    ([1.0, 0.0], True)
    """
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    if not nu > 0:
        raise ValueError(f"smoothing nu must be > 0, got {nu}")
    if not tol >= 0:
        raise ValueError(f"tolerance tol must be >= 0, got {tol}")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter}")
    n, d = U.shape
    alpha = _check_weights(weights, n).to(U.device)
    if init is not None:
        init = torch.as_tensor(init, dtype=U.dtype, device=U.device).reshape(-1)
        if init.numel() != d:
            raise ValueError(f"init must have d={d} entries, got {init.numel()}")
        G = _centred_gram64(U, init)
        w = torch.zeros(n + 1, dtype=torch.float64, device=U.device)
        w[n] = 1.0
    else:
        G = _centred_gram64(U)
        w = alpha.clone()
    m = G.shape[0]
    diag = torch.diagonal(G)

    def distances(coef: torch.Tensor) -> torch.Tensor:
        Gw = G @ coef
        sq = diag[:n] - 2 * Gw[:n] + coef @ Gw  # ||U_i - coef^T X||^2, i < n
        return sq.clamp_min(0).sqrt()

    dist = distances(w)
    obj = _smoothed_objective(dist, alpha, nu)
    iterations, converged = 0, False
    while iterations < max_iter:
        beta = alpha / dist.clamp_min(nu)
        w = torch.zeros(m, dtype=torch.float64, device=U.device)
        w[:n] = beta / beta.sum()
        iterations += 1
        dist = distances(w)
        prev, obj = obj, _smoothed_objective(dist, alpha, nu)
        if abs(prev - obj) <= tol * obj:
            converged = True
            break
    median = w[:n].to(U.dtype) @ U
    if m > n and w[n] != 0:  # still at the start (max_iter = 0)
        median = median + w[n].to(U.dtype) * init
    return GeometricMedianResult(median, w[:n].clone(), iterations, converged, obj)


def geometric_median(
    U: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    nu: float = 1e-6,
    tol: float = 1e-7,
    max_iter: int = 1000,
) -> torch.Tensor:
    """Weighted geometric median of the rows of ``U`` (RFA, smoothed Weiszfeld); see
    :func:`geometric_median_result` for the parameters and the convergence diagnostics.

    Examples
    --------
    A far outlier barely moves it: the exact median is the point (1, 0) (the unit vectors from
    there to the other three sum to norm 1 <= its own weight); the mean is (25, 0.25).

    >>> U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [100.0, 0.0]])
    >>> [round(x, 1) for x in geometric_median(U).tolist()]
    [1.0, 0.0]
    """
    return geometric_median_result(U, weights, nu=nu, tol=tol, max_iter=max_iter).median
