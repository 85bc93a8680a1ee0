"""FoolsGold (Fung, Yoon, Beschastnikh, "The Limitations of Federated Learning in Sybil
Settings", RAID 2020, Algorithm 1; official code github.com/DistributedML/FoolsGold).

From the per-client *aggregated histories* ``H_i = sum_t Delta_{i,t}`` (rows of ``H``):

    cs_ij = cos(H_i, H_j)  (i != j),        v_i = max_j cs_ij
    pardoning:  cs_ij <- cs_ij * v_i / v_j    if v_j > v_i
    alpha_i = 1 - max_j cs_ij,  clipped to [0, 1]
    alpha   = alpha / max_i alpha_i
    alpha_i = kappa * (ln(alpha_i / (1 - alpha_i)) + 0.5),  clipped to [0, 1]

Details follow the official code (``deep-fg/fg/foolsgold.py``): the diagonal of the cosine
matrix is set to 0 before the maxima, so ``v_i = max(0, max_{j != i} cs_ij) >= 0`` (no division
by a negative or zero ``v_j`` in pardoning); the largest normalised weight (exactly 1) is
replaced by 0.99 before the logit, which with kappa = 1 gives it 1 after clipping; ln(0) =
-inf clips to 0. A zero history has cosine 0 with everyone. If every ``alpha`` is 0 before the
normalisation (all clients look alike; ``max alpha <= 1e-9``, a margin for the rounding of
cosines of identical histories), every weight is 0 (the official code divides by zero
here) and :func:`foolsgold_aggregate` returns the zero update, saying so.

How the weights are applied: Algorithm 1 writes ``w_{t+1} = w_t + sum_i alpha_i Delta_{i,t}``
(the ML/ code does ``delta.T @ wv``, a plain weighted sum); the deep-learning code
(``deep-fg/fg/trainer.py``) divides that sum by the number of clients n. Both shrink the
step when clients are down-weighted. For a pseudo-gradient that a server learning rate then
scales, :func:`foolsgold_aggregate` defaults to the weighted *mean*
``sum_i alpha_i U_i / sum_i alpha_i``; ``normalize="clients"`` gives the deep-fg ``/ n``
and ``normalize="none"`` the paper's plain sum. (The optional feature-importance weighting of
§4 is not included.)
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

#: ``max_i alpha_i`` at or below this counts as 0: identical histories give cosines of 1 only
#: up to rounding, and dividing by a rounding residue would give everybody weight 1.
ALPHA_ZERO = 1e-9


def _cosine_matrix(M: torch.Tensor) -> torch.Tensor:
    """Float64 ``(n, n)`` cosine similarities of the rows of ``M``; zero rows give 0."""
    G = (M @ M.T).to(torch.float64)
    norms = torch.diagonal(G).clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, G / denom.clamp_min(1e-300), 0.0).clamp(-1.0, 1.0)


def foolsgold_weights(H: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """FoolsGold's per-client weights ``alpha`` (Algorithm 1) from the histories ``H``.

    Parameters
    ----------
    H : torch.Tensor
        ``(n, d)``: row i is client i's aggregated history (sum of its past updates).
    kappa : float
        Confidence ``kappa > 0`` of the logit (the paper's and official code's value: 1).

    Returns
    -------
    torch.Tensor
        ``(n,)`` float64 weights in [0, 1].

    Examples
    --------
    Two identical sybils and two honest clients orthogonal to everyone else:

    >>> H = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
    ...                   [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    >>> foolsgold_weights(H).tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    if H.dim() != 2 or H.shape[0] < 1 or not H.is_floating_point():
        raise ValueError(f"H must be a floating (n, d) matrix with n >= 1, got {tuple(H.shape)}")
    if not (kappa > 0 and math.isfinite(kappa)):
        raise ValueError(f"confidence kappa must be finite and > 0, got {kappa}")
    n = H.shape[0]
    cs = _cosine_matrix(H)
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values  # >= 0 (the zeroed diagonal)
    pardon = v[None, :] > v[:, None]  # [i, j]: v_j > v_i
    cs = torch.where(pardon, cs * v[:, None] / v[None, :].clamp_min(1e-300), cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = float(alpha.max())
    if top <= ALPHA_ZERO:  # every client looks like another (up to cosine rounding)
        return torch.zeros(n, dtype=torch.float64, device=H.device)
    alpha = alpha / top
    alpha = torch.where(alpha >= 1.0, torch.full_like(alpha, 0.99), alpha)
    with torch.no_grad():
        logit = kappa * (torch.log(alpha) - torch.log1p(-alpha) + 0.5)  # log(0) = -inf
    return logit.clamp(0.0, 1.0)


class FoolsGoldResult(NamedTuple):
    aggregate: torch.Tensor  #: ``(d,)`` in ``U``'s dtype
    weights: torch.Tensor  #: ``(n,)`` float64 FoolsGold weights
    all_zero: bool  #: every weight was 0: the aggregate is the zero update


def foolsgold_aggregate(
    U: torch.Tensor,
    H: torch.Tensor,
    *,
    kappa: float = 1.0,
    normalize: Literal["weights", "clients", "none"] = "weights",
) -> FoolsGoldResult:
    """Weight this round's updates ``U`` by :func:`foolsgold_weights` of the histories ``H``.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` this round's updates.
    H : torch.Tensor
        ``(n, d')`` the same clients' aggregated histories (including this round).
    kappa : float
        Logit confidence (see :func:`foolsgold_weights`).
    normalize : {"weights", "clients", "none"}
        Divide ``sum_i alpha_i U_i`` by ``sum_i alpha_i`` (weighted mean, default), by ``n``
        (the authors' deep-fg code) or not at all (Algorithm 1's sum).

    Returns
    -------
    FoolsGoldResult
        ``(aggregate, weights, all_zero)``.

    Examples
    --------
    >>> H = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> r = foolsgold_aggregate(H, H)  # the two sybils get weight 0
    >>> r.aggregate, r.weights.tolist(), r.all_zero
    (tensor([0., 1.]), [0.0, 0.0, 1.0], False)
    """
    if U.dim() != 2 or H.dim() != 2 or U.shape[0] != H.shape[0]:
        raise ValueError(
            f"U and H must be (n, d) matrices with the same n, got {tuple(U.shape)}, "
            f"{tuple(H.shape)}"
        )
    if normalize not in ("weights", "clients", "none"):
        raise ValueError(f"normalize must be 'weights', 'clients' or 'none', got {normalize!r}")
    w = foolsgold_weights(H, kappa)
    total = float(w.sum())
    if total <= 0:
        return FoolsGoldResult(torch.zeros(U.shape[1], dtype=U.dtype, device=U.device), w, True)
    scale = {"weights": total, "clients": float(U.shape[0]), "none": 1.0}[normalize]
    return FoolsGoldResult((w / scale).to(U.dtype).to(U.device) @ U, w, False)
