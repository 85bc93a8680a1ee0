"""Coordinate-wise median (Yin et al., 2018; FL-WBC §7.1 baseline "CMA").

    median(U)_k = x_{(n+1)/2 : n}                       for odd n
                = (x_{n/2 : n} + x_{n/2+1 : n}) / 2     for even n

with x_{i:n} the i-th smallest of U[:, k] (order statistics, Invariant Aggregator Def. 8).
Unweighted, as in Flower's `FedMedian` and NumPy's `median`.
"""

from __future__ import annotations

import torch

from strategies.order_stats import as_matrix, reduce_sorted_columns


def coordinate_median(U: torch.Tensor) -> torch.Tensor:
    """Median over clients (dim 0) of ``U`` with shape ``(n, *dims)``; returns ``dims``.

    >>> U = torch.tensor([[1., -2.], [2., -1.], [3., 4.], [100., 5.]])  # 4 clients, 2 coords
    >>> coordinate_median(U)  # even n: the mean of the two middle values; 100 has no pull
    tensor([2.5000, 1.5000])
    """
    M, dims = as_matrix(U)
    n = M.shape[0]
    lo, hi = (n - 1) // 2, n // 2
    return reduce_sorted_columns(M, lambda rows: (rows[lo] + rows[hi]) * 0.5).reshape(dims)
