"""Pre-aggregators: maps from the ``(n, d)`` updates to ``(n', d)`` rows that a robust
aggregator (median, Krum, geometric median, ...) then combines.

* Bucketing (Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
  Bucketing", ICLR 2022, Algorithm 1): a random permutation pi, then the means of consecutive
  buckets of size s, ``y_k = mean{U_pi(i) : (k-1) s < i <= k s}``; ceil(n/s) rows, the last
  bucket holding the n mod s remaining updates when s does not divide n (as ByzFL).
* Nearest-neighbour mixing, NNM (Allouah et al., "Fixing by Mixing: A Recipe for Optimal
  Byzantine ML under Heterogeneity", AISTATS 2023, Algorithm 1): each U_i is replaced by the
  mean of its n - f nearest neighbours in L2 among all n updates, itself included.
* Static clipping: each row clipped to L2 norm c, ``U_i * min(1, c / ||U_i||)``.
* Adaptive robust clipping, ARC (Allouah, Guerraoui, Gupta, Jellouli, Rizk, Stephan, "Boosting
  Robustness by Clipping Gradients in Distributed Learning", 2024, Algorithm 1): with
  k = floor(2 (f/n) (n - f)), the k largest-norm updates are clipped to the norm of the
  (k+1)-th largest. As ByzFL's ``ARC``, k is computed as the integer ``(2 f (n - f)) // n``.
  Clipping a vector to a threshold not below its own norm changes nothing, so this equals
  clipping *every* row to that threshold, which makes the result independent of how ties
  among norms are broken.

Row norms are taken in ``U``'s dtype; NNM's pairwise distances come from the float64 Gram
matrix of the centred rows, accumulated over column blocks (no ``(n, n, d)`` or ``(n, d)``
float64 temporary). Every output is ``mixing @ U`` or ``scale[:, None] * U`` in ``U``'s dtype.
"""

from __future__ import annotations

import math

import torch

#: Elements of ``U`` per column block when accumulating the Gram matrix.
BLOCK_ELEMENTS = 1 << 20


def _check_matrix(U: torch.Tensor) -> tuple[int, int]:
    if U.dim() != 2 or U.shape[0] < 1 or not U.is_floating_point():
        raise ValueError(f"U must be a floating (n, d) matrix with n >= 1, got {tuple(U.shape)}")
    return U.shape[0], U.shape[1]


def _clip_rows(U: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``U_i * min(1, threshold / ||U_i||)`` (zero rows stay zero)."""
    norms = torch.linalg.vector_norm(U, dim=1).to(torch.float64)
    t = torch.as_tensor(threshold, dtype=torch.float64, device=norms.device)
    scale = torch.where(norms > t, t / norms.clamp_min(1e-300), torch.ones_like(norms))
    return scale.to(U.dtype)[:, None] * U


def pairwise_sq_distances(U: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` float64 matrix of ``||U_i - U_j||^2`` from the centred Gram matrix.

    >>> pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])).tolist()
    [[0.0, 25.0, 1.0], [25.0, 0.0, 18.0], [1.0, 18.0, 0.0]]
    """
    n, d = U.shape
    G = torch.zeros((n, n), dtype=torch.float64, device=U.device)
    step = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, d, step):
        block = U[:, start : start + step].to(torch.float64)
        block = block - block.mean(0, keepdim=True)
        G += block @ block.T
    diag = torch.diagonal(G)
    D = (diag[:, None] + diag[None, :] - 2 * G).clamp_min(0)
    D.fill_diagonal_(0.0)
    return (D + D.T) / 2


def bucketing(U: torch.Tensor, s: int, generator: torch.Generator | None) -> torch.Tensor:
    """Means of consecutive buckets of size ``s`` of the randomly permuted rows.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    s : int
        Bucket size, ``s >= 1`` (``s = 1``: a permutation of the rows; ``s >= n``: the mean).
    generator : torch.Generator or None
        Source of the permutation ``torch.randperm(n, generator=generator)`` (None: torch's
        global generator, as ByzFL). Required so that callers choose determinism explicitly.

    Returns
    -------
    torch.Tensor
        ``(ceil(n / s), d)`` in ``U``'s dtype.

    Examples
    --------
    >>> U = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    >>> g = torch.Generator().manual_seed(0)
    >>> perm = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    >>> out = bucketing(U, 2, g)  # buckets {pi1, pi2}, {pi3, pi4}, {pi5}
    >>> torch.equal(out[:, 0], torch.stack([perm[:2].mean(dtype=torch.float32),
    ...     perm[2:4].mean(dtype=torch.float32), perm[4:].float()[0]]))
    True
    >>> bucketing(U, 5, g)  # one bucket: the mean
    tensor([[2.]])
    """
    n, _ = _check_matrix(U)
    if not isinstance(s, int) or s < 1:
        raise ValueError(f"bucket size s must be an integer >= 1, got {s}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(n, generator=generator, device=gen_device).cpu()
    m = math.ceil(n / s)
    bucket = torch.arange(n) // s  # position -> bucket
    sizes = torch.bincount(bucket, minlength=m).to(torch.float64)
    mixing = torch.zeros((m, n), dtype=torch.float64)
    mixing[bucket, perm] = 1.0 / sizes[bucket]
    return mixing.to(U.dtype).to(U.device) @ U


def nnm(U: torch.Tensor, f: int) -> torch.Tensor:
    """Nearest-neighbour mixing: row i becomes the mean of its ``n - f`` nearest rows (L2,
    itself always included; distance ties broken by the lower index).

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    f : int
        Assumed number of malicious clients, ``0 <= f < n``.

    Returns
    -------
    torch.Tensor
        ``(n, d)`` in ``U``'s dtype.

    Examples
    --------
    >>> U = torch.tensor([[0.0], [1.0], [10.0]])
    >>> nnm(U, 1)  # 0 and 1 mix with each other; 10's nearest other point is 1
    tensor([[0.5000],
            [0.5000],
            [5.5000]])
    >>> nnm(U, 0)  # every row: the mean
    tensor([[3.6667],
            [3.6667],
            [3.6667]])
    """
    n, _ = _check_matrix(U)
    if not isinstance(f, int) or not 0 <= f < n:
        raise ValueError(f"f must be an integer with 0 <= f < n={n}, got {f}")
    D = pairwise_sq_distances(U).cpu()
    D.fill_diagonal_(-1.0)  # itself first, whatever the ties at distance 0
    nearest = torch.argsort(D, dim=1, stable=True)[:, : n - f]
    mixing = torch.zeros((n, n), dtype=torch.float64)
    mixing.scatter_(1, nearest, 1.0 / (n - f))
    return mixing.to(U.dtype).to(U.device) @ U


def static_clipping(U: torch.Tensor, c: float) -> torch.Tensor:
    """Each row clipped to L2 norm ``c``: ``U_i * min(1, c / ||U_i||)``.

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    c : float
        Clipping threshold ``c > 0``.

    Returns
    -------
    torch.Tensor
        ``(n, d)`` in ``U``'s dtype.

    Examples
    --------
    >>> static_clipping(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]), 1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000],
            [0.0000, 0.0000]])
    """
    _check_matrix(U)
    if not (c > 0 and math.isfinite(c)):
        raise ValueError(f"clipping threshold c must be finite and > 0, got {c}")
    return _clip_rows(U, c)


def arc_count(n: int, f: int) -> int:
    """ARC's number of clipped vectors ``k = floor(2 (f / n) (n - f))``, in integers.

    >>> [arc_count(10, f) for f in range(6)]
    [0, 1, 3, 4, 4, 5]
    """
    if not isinstance(f, int) or not 0 <= f < n:
        raise ValueError(f"f must be an integer with 0 <= f < n={n}, got {f}")
    return (2 * f * (n - f)) // n


def adaptive_clipping(U: torch.Tensor, f: int) -> torch.Tensor:
    """ARC: clip the ``k = floor(2 (f/n) (n - f))`` largest-norm rows to the (k+1)-th largest
    norm (``f = 0``: nothing is clipped).

    Parameters
    ----------
    U : torch.Tensor
        ``(n, d)`` stacked client updates.
    f : int
        Assumed number of malicious clients, ``0 <= f < n``.

    Returns
    -------
    torch.Tensor
        ``(n, d)`` in ``U``'s dtype.

    Examples
    --------
    n = 5, f = 1: k = floor(2 * 1/5 * 4) = 1; the largest row (norm 10) is clipped to the
    second largest norm, 3.

    >>> U = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -10.0], [1.0, 1.0]])
    >>> adaptive_clipping(U, 1)[3]
    tensor([ 0., -3.])
    """
    n, _ = _check_matrix(U)
    k = arc_count(n, f)
    norms = torch.linalg.vector_norm(U, dim=1).to(torch.float64)
    threshold = torch.sort(norms, descending=True).values[k]  # (k+1)-th largest
    return _clip_rows(U, threshold)
