"""FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021, §IV, Eq. (4)-(6)).

The server trains on a small clean root data set and gets its own update ``g0``. Then

    TS_i  = ReLU(cos(U_i, g0))                              (trust score, Eq. 4)
    Ubar_i = (||g0|| / ||U_i||) * U_i                       (magnitude normalisation, Eq. 5)
    g     = sum_i TS_i * Ubar_i / sum_j TS_j                (aggregate, Eq. 6)

An update pointing away from ``g0`` (cosine <= 0) gets no weight; every admitted update has
the server's norm, so boosting the magnitude buys nothing. A zero vector has cosine 0 with
anything (trust 0). If every trust score is 0 (or ``g0 = 0``) the aggregate is the zero
update and ``all_rejected`` is True.

Dot products and norms are taken in ``U``'s dtype (BLAS matrix-vector products), the ``n``
scores and weights in float64; the aggregate is ``weights @ U`` in ``U``'s dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class FLTrustResult(NamedTuple):
    aggregate: torch.Tensor  #: ``(d,)`` in ``U``'s dtype
    trust_scores: torch.Tensor  #: ``(n,)`` float64, ``TS_i`` in [0, 1]
    all_rejected: bool  #: every trust score was 0: the aggregate is the zero update


def fltrust(U: torch.Tensor, server_update: torch.Tensor) -> FLTrustResult:
    """FLTrust's Eq. (4)-(6) for client updates ``U`` and the server's root-data update.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    server_update : torch.Tensor
        ``(d,)`` the server's update ``g0`` on its root data set.

    Returns
    -------
    FLTrustResult
        ``(aggregate, trust_scores, all_rejected)``.

    Examples
    --------
    g0 = (1, 0). Client 0 agrees (cos 1), is rescaled from norm 2 to 1; client 1 is at 45
    degrees (cos 1/sqrt 2) and already has norm sqrt 2 -> rescaled to (1, 1)/sqrt 2; client 2
    is opposite (cos -1, trust 0).

    >>> U = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-3.0, 0.0]], dtype=torch.float64)
    >>> agg, ts, none = fltrust(U, torch.tensor([1.0, 0.0], dtype=torch.float64))
    >>> [round(t, 4) for t in ts.tolist()], none
    ([1.0, 0.7071, 0.0], False)
    >>> [round(x, 4) for x in agg.tolist()]  # (1*(1,0) + 0.7071*(0.7071,0.7071)) / 1.7071
    [0.8787, 0.2929]
    """
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    n, d = U.shape
    g0 = torch.as_tensor(server_update, dtype=U.dtype, device=U.device).reshape(-1)
    if g0.numel() != d:
        raise ValueError(f"server_update must have d={d} entries, got {g0.numel()}")
    norms = torch.linalg.vector_norm(U, dim=1).to(torch.float64)
    g0_norm = float(torch.linalg.vector_norm(g0))
    dots = (U @ g0).to(torch.float64)
    denom = norms * g0_norm
    cos = torch.where(denom > 0, dots / denom.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    trust = cos.clamp(0.0, 1.0)  # ReLU; cos <= 1 up to rounding
    total = float(trust.sum())
    if total <= 0:
        return FLTrustResult(torch.zeros(d, dtype=U.dtype, device=U.device), trust, True)
    # TS_i * ||g0|| / ||U_i|| / sum TS (trust > 0 implies ||U_i|| > 0)
    coef = torch.where(trust > 0, trust * g0_norm / norms.clamp_min(1e-300), 0.0) / total
    return FLTrustResult(coef.to(U.dtype) @ U, trust, False)
