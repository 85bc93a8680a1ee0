"""Column-wise order statistics of a stacked update matrix ``U`` of shape ``(n, d)``.

The robust rules need, per coordinate, the clients' values in sorted order (median, trimmed
mean). ``torch.sort`` along the client axis of a ``(n, d)`` CPU tensor is slow (a strided
sort of ``d`` tiny columns), and NumPy's ``median``/``partition`` are not much better. On the
CPU we instead run a **sorting network** (Batcher's odd-even merge sort, O(n log^2 n)
compare-exchanges) on cache-sized blocks of columns: every compare-exchange of clients ``i < j``
is two vectorised ops over the block, ``lo = min(x_i, x_j)``, ``hi = max(x_i, x_j)``, so the
work is branch-free and SIMD, and the extra memory is one block plus one row. On CUDA, large
column blocks are sorted with ``torch.sort`` (fast there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

BLOCK_ELEMENTS = 1 << 20  # elements of U per column block (4 MiB of float32)
CUDA_BLOCK_ELEMENTS = 1 << 26


def as_matrix(U: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """View ``U`` of shape ``(n, *dims)`` as ``(n, d)``; return it and ``dims``."""
    if U.dim() < 1 or U.shape[0] < 1:
        raise ValueError(f"need a stack of at least one update, got shape {tuple(U.shape)}")
    return U.reshape(U.shape[0], -1), U.shape[1:]


def sign_votes(M: torch.Tensor) -> torch.Tensor:
    """``sum_i sign(M[i])`` for ``M (n, d)``, sign(0) = 0: one vectorised pass per client row,
    never a ``(n, d)`` temporary (shared by the AND-mask, RLR and sign-SGD)."""
    votes = torch.zeros(M.shape[1], dtype=M.dtype, device=M.device)
    for row in M:
        votes += torch.sign(row)
    return votes


@functools.lru_cache(maxsize=64)
def odd_even_merge_network(n: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs ``(i, j)``, ``i < j``, of Batcher's network sorting ``n`` items.

    Built for the next power of two; comparators touching an index >= n are dropped, which is
    the same as padding with +inf values that never move.

    >>> odd_even_merge_network(4)  # 5 comparators sort 4 items (Knuth, TAOCP 5.3.4)
    ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2))
    >>> len(odd_even_merge_network(20))
    103
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


def _sorted_rows_cpu(block: torch.Tensor, spare: torch.Tensor) -> list[torch.Tensor]:
    """Sort the columns of ``block (n, c)`` in place by the network; rows in ascending order.

    Rows are swapped by reference (the list), so each compare-exchange costs two ops; `spare`
    is one extra row buffer of length c.
    """
    rows = list(block.unbind(0))
    free = spare
    for i, j in odd_even_merge_network(block.shape[0]):
        torch.minimum(rows[i], rows[j], out=free)
        torch.maximum(rows[i], rows[j], out=rows[j])
        rows[i], free = free, rows[i]
    return rows


def reduce_sorted_columns(
    U: torch.Tensor, reducer: Callable[[list[torch.Tensor]], torch.Tensor]
) -> torch.Tensor:
    """``out[k] = reducer(sorted rows)[k]``: `reducer` gets the n sorted rows of a column block
    (ascending, each of length c) and returns their reduction of length c.

    >>> U = torch.tensor([[3., 0.], [1., 5.], [2., -1.]])
    >>> reduce_sorted_columns(U, lambda rows: rows[1])  # the middle row: the median
    tensor([2., 0.])
    >>> reduce_sorted_columns(U, lambda rows: rows[-1] - rows[0])  # max - min per column
    tensor([2., 6.])
    """
    n, d = U.shape
    out = torch.empty(d, dtype=U.dtype, device=U.device)
    if U.is_cuda:
        step = max(1, CUDA_BLOCK_ELEMENTS // n)
        for start in range(0, d, step):
            sorted_block = torch.sort(U[:, start : start + step], dim=0).values
            out[start : start + step] = reducer(list(sorted_block.unbind(0)))
        return out
    step = max(1, BLOCK_ELEMENTS // n)
    block = torch.empty((n, min(step, d)), dtype=U.dtype)
    spare = torch.empty(min(step, d), dtype=U.dtype)
    for start in range(0, d, step):
        c = min(step, d - start)
        blk = block[:, :c]
        blk.copy_(U[:, start : start + c])
        out[start : start + c] = reducer(_sorted_rows_cpu(blk, spare[:c]))
    return out
