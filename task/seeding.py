"""Independent, named random streams derived from one master seed.

Every consumer of randomness (client sampling, model init, each client's data order, later the
attack schedule and defense noise) gets its own stream, so changing one part of a run (turning a
defense on, say) never shifts the random numbers another part sees.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """Return a 63-bit seed for the named `stream`, optionally keyed by integers.

    The same (seed, stream, keys) always gives the same value, in every process and on every
    platform (the stream name is hashed with CRC-32, not Python's salted `hash`).
    """
    entropy = [int(seed) & 0xFFFFFFFF, zlib.crc32(stream.encode()), *[int(k) for k in keys]]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def torch_generator(seed: int, stream: str, *keys: int, device: str = "cpu") -> torch.Generator:
    """A `torch.Generator` seeded from `derive_seed(seed, stream, *keys)`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream, *keys))
    return gen


def numpy_generator(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A NumPy `Generator` seeded from `derive_seed(seed, stream, *keys)`."""
    return np.random.default_rng(derive_seed(seed, stream, *keys))
