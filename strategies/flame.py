"""FLAME (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX Security
2022, Algorithm 1, §4).

1. Dynamic model filtering: pairwise cosine distances ``c_ij = 1 - cos(W_i, W_j)``, clustered by
   HDBSCAN with ``min_cluster_size = n/2 + 1`` (integer: ``n // 2 + 1``), so at most one cluster
   can form; its members are admitted, noise points (label -1) rejected.
2. Adaptive clipping: ``S = median_i ||U_i||`` over *all* n updates (even n: the mean of the
   two middle norms, as NumPy's median) (the Euclidean distances
   ``e_i = ||G - W_i||`` of the local models to the global one); each admitted update is scaled
   by ``min(1, S / ||U_i||)``.
3. Adaptive noising: the mean of the clipped admitted updates plus Gaussian noise of std
   ``sigma = lambda * S`` per coordinate; the paper uses lambda = 0.001 for image
   classification (and 0.01 for NLP), derived from its DP analysis.

HDBSCAN settings: scikit-learn's ``HDBSCAN(metric="precomputed", min_cluster_size=n//2+1,
min_samples=1, allow_single_cluster=True)``. The paper fixes only the minimum cluster size;
``min_samples=1`` and ``allow_single_cluster=True`` are what the public FLAME
reimplementations pass (the authors' code is not public); without ``allow_single_cluster`` a
single majority cluster could never be selected. If HDBSCAN still labels every point noise,
those reimplementations admit everybody; we do the same and report ``clustered=False``.

The paper clusters the local *models* ``W_i = G + U_i``. Whole-model cosines are dominated
by the shared global model, so this function clusters on the updates by default; pass
``features`` (e.g. the flattened local models) to cluster on something else. With n = 1 the
single update is admitted without clustering (HDBSCAN needs a cluster size >= 2).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
from sklearn.cluster import HDBSCAN

#: lambda for image classification (paper §5: sigma = lambda * S).
LAMBDA_IMAGE = 0.001


class FlameResult(NamedTuple):
    aggregate: torch.Tensor  #: ``(d,)`` in ``U``'s dtype, noise included
    admitted: torch.Tensor  #: ``(n,)`` bool: in the majority cluster
    clip_bound: float  #: S = median of all n update norms
    clustered: bool  #: HDBSCAN found a cluster (False: all noise, everyone admitted)


def cosine_distances(M: torch.Tensor) -> np.ndarray:
    """``(n, n)`` float64 NumPy matrix ``1 - cos(M_i, M_j)`` (zero rows: cosine 0), with an
    exact zero diagonal and values clipped to [0, 2].

    >>> cosine_distances(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])).tolist()
    [[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]
    """
    G = (M @ M.T).to(torch.float64)
    norms = torch.diagonal(G).clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, G / denom.clamp_min(1e-300), 0.0)
    D = (1.0 - cos).clamp(0.0, 2.0)
    D.fill_diagonal_(0.0)
    D = (D + D.T) / 2
    return D.cpu().numpy()


def flame_cluster(D: np.ndarray) -> tuple[np.ndarray, bool]:
    """Admitted mask from a precomputed distance matrix ``D`` by HDBSCAN (settings in the
    module doc): members of the largest cluster; all admitted if there is none.

    >>> D = np.array([[0, .1, .1, 1.9], [.1, 0, .1, 1.9], [.1, .1, 0, 1.9], [1.9, 1.9, 1.9, 0]])
    >>> flame_cluster(D)
    (array([ True,  True,  True, False]), True)
    """
    n = D.shape[0]
    if n == 1:
        return np.ones(1, dtype=bool), True
    clusterer = HDBSCAN(
        metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1, allow_single_cluster=True
    )
    with warnings.catch_warnings():  # scikit-learn 1.9's note on `copy` (absent before 1.5)
        warnings.simplefilter("ignore", FutureWarning)
        labels = clusterer.fit(np.array(D, dtype=np.float64, copy=True)).labels_
    if labels.max() < 0:
        return np.ones(n, dtype=bool), False
    largest = np.bincount(labels[labels >= 0]).argmax()
    return labels == largest, True


def flame(
    U: torch.Tensor,
    *,
    noise_lambda: float = LAMBDA_IMAGE,
    generator: torch.Generator | None = None,
    features: torch.Tensor | None = None,
) -> FlameResult:
    """FLAME's filtering, clipping and noising of the updates ``U``.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    noise_lambda : float
        ``lambda >= 0``; noise std is ``lambda * S`` (0 = no noise).
    generator : torch.Generator, optional
        Source of the Gaussian noise (None: torch's global generator).
    features : torch.Tensor, optional
        ``(n, d')`` rows to cluster on instead of ``U`` (e.g. the local models).

    Returns
    -------
    FlameResult
        ``(aggregate, admitted, clip_bound, clustered)``.

    Examples
    --------
    Three similar updates and one pointing the other way (rejected). Norms 1, 1, 2, 10:
    S = 1.5 (even n: the mean of the middle two), so (2, 0) is clipped to (1.5, 0) and the
    aggregate is ((1, 0) + (0.8, 0.6) + (1.5, 0)) / 3.

    >>> U = torch.tensor([[1.0, 0.0], [0.8, 0.6], [2.0, 0.0], [-10.0, 0.0]], dtype=torch.float64)
    >>> r = flame(U, noise_lambda=0.0)
    >>> r.admitted.tolist(), r.clip_bound, [round(x, 4) for x in r.aggregate.tolist()]
    ([True, True, True, False], 1.5, [1.1, 0.2])
    """
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    if not (noise_lambda >= 0 and math.isfinite(noise_lambda)):
        raise ValueError(f"noise_lambda must be finite and >= 0, got {noise_lambda}")
    n, d = U.shape
    if features is None:
        features = U
    elif features.dim() != 2 or features.shape[0] != n:
        raise ValueError(f"features must be (n={n}, d') rows, got {tuple(features.shape)}")
    admitted_np, clustered = flame_cluster(cosine_distances(features))
    admitted = torch.from_numpy(admitted_np)
    norms = torch.linalg.vector_norm(U, dim=1).to(torch.float64).cpu()
    S = float(torch.quantile(norms, 0.5))  # even n: mean of the two middle norms
    scale = torch.where(norms > S, S / norms.clamp_min(1e-300), torch.ones_like(norms))
    coef = torch.where(admitted, scale, 0.0) / int(admitted.sum())
    aggregate = coef.to(U.dtype).to(U.device) @ U
    if noise_lambda > 0 and S > 0:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(d, generator=generator, dtype=U.dtype, device=gen_device)
        aggregate = aggregate + (noise_lambda * S) * noise.to(U.device)
    return FlameResult(aggregate, admitted, S, clustered)
