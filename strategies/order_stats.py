"""Column-wise order statistics of a stacked update matrix ``U`` of shape ``(n, d)``.

Sorting ``U`` along its client axis directly is slow on CPUs (a strided sort of ``d`` columns of
length ``n``). Instead, blocks of columns are transposed into contiguous ``(c, n)`` rows, sorted
along the last axis, reduced, and written back, so the extra memory is one block (bounded by
`BLOCK_ELEMENTS`), never a second copy of ``U``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BLOCK_ELEMENTS = 1 << 22  # elements of U per block (16 MiB of float32)


def as_matrix(U: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """View ``U`` of shape ``(n, *dims)`` as ``(n, d)``; return it and ``dims``."""
    if U.dim() < 1 or U.shape[0] < 1:
        raise ValueError(f"need a stack of at least one update, got shape {tuple(U.shape)}")
    return U.reshape(U.shape[0], -1), U.shape[1:]


def reduce_sorted_columns(
    U: torch.Tensor, reducer: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply ``reducer(sorted_rows (c, n)) -> (c,)`` to column blocks of ``U (n, d)``."""
    n, d = U.shape
    out = torch.empty(d, dtype=U.dtype, device=U.device)
    step = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, d, step):
        block = U[:, start : start + step].t().contiguous()
        sorted_block = torch.sort(block, dim=1).values
        out[start : start + step] = reducer(sorted_block)
    return out
