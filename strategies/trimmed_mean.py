"""Coordinate-wise trimmed mean (Invariant Aggregator Definition 9; FL-WBC baseline "CTMA").

    k = ceil(beta * n)
    TrMean({x_1..x_n}; beta) = 1 / (n - 2k) * sum_{i=k+1}^{n-k} x_{i:n}

i.e. per coordinate, drop the ceil(beta*n) largest and the ceil(beta*n) smallest values and
average the rest. Unweighted, as in Flower's `FedTrimmedAvg`.
"""

from __future__ import annotations

import math

import torch

from strategies.order_stats import as_matrix, reduce_sorted_columns


def trim_count(n: int, beta: float) -> int:
    """ceil(beta * n), checking that 0 <= beta < 0.5 and that at least one value survives."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"trim fraction beta must be in [0, 0.5), got {beta}")
    k = math.ceil(beta * n - 1e-12)  # guard against 0.1 * 20 = 2.0000000000000004
    if n - 2 * k < 1:
        raise ValueError(f"trimming {k} per side leaves no values among n={n} updates")
    return k


def trimmed_mean(U: torch.Tensor, beta: float) -> torch.Tensor:
    """Definition 9 over clients (dim 0) of ``U`` with shape ``(n, *dims)``; returns ``dims``.

    >>> U = torch.tensor([[1., -2.], [2., -1.], [3., 4.], [100., 5.]])  # 4 clients, 2 coords
    >>> trim_count(4, 0.25), trimmed_mean(U, 0.25)  # drop 1 smallest and 1 largest each
    (1, tensor([2.5000, 1.5000]))
    """
    M, dims = as_matrix(U)
    n = M.shape[0]
    k = trim_count(n, beta)
    if k == 0:
        return M.mean(0).reshape(dims)

    def middle_mean(rows: list[torch.Tensor]) -> torch.Tensor:
        total = rows[k].clone()
        for row in rows[k + 1 : n - k]:
            total += row
        return total.div_(n - 2 * k)

    return reduce_sorted_columns(M, middle_mean).reshape(dims)
