"""Seeded client sampling: which partitions train in each round.

The draw for round ``t`` depends only on (seed, t), from its own stream (``client-sampling``),
so it is independent of everything else a run does (defenses, attacks, evaluation) and a resumed
run samples exactly what the uninterrupted one did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from task.seeding import numpy_generator


def sample_partitions(
    seed: int,
    server_round: int,
    population: Sequence[int],
    k: int,
    stream: str = "client-sampling",
) -> list[int]:
    """`k` distinct partition ids drawn uniformly from `population` for `server_round`."""
    pool = np.asarray(sorted(population), dtype=np.int64)
    if not 0 < k <= pool.size:
        raise ValueError(f"cannot sample {k} of {pool.size} partitions")
    rng = numpy_generator(seed, stream, server_round)
    return sorted(int(p) for p in rng.choice(pool, size=k, replace=False))
