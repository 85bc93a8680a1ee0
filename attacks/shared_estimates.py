"""Per-round estimates that the attackers trained in one process share.

`AttackContext.benign_update` and `AttackContext.observed_update` replay a partition's local
training from the round's global model with a seed keyed by (seed, stream, round, partition), so
every attacker of a round computes the same tensor. In simulation one worker process trains
several clients per round: without sharing, each attacker of an ALIE, IPM, min-max or adaptive
run repeats the same 20 reference trainings (the adaptive edge-case run in the clean-model regime
spent ~4x a plain run's time on them). This cache lets the second attacker in a process reuse
the first one's tensors.

A value is reused only for the same round *key*: the run's whole config (``repr`` of the frozen
`RunConfig`: learning rate, batch size, seed, partitioning...), the round, the device and a digest
of the global model's bytes, and the very dataset object trained on (held while cached, so its
identity cannot be reused). A value's name carries a digest of the partition's indices. A new key
empties the cache, so it holds one round's estimates at
most, on the CPU (a GPU run does not pin GPU memory with them); `AttackContext` hands every
caller its own copy on its device, so a caller that modifies one in place changes nobody else's.
Until another attacker of the process comes with a new key the values stay held: 20 references
of ResNet-18 are about 0.9 GB of host memory per worker process.

On the CPU a shared value is bit-for-bit what each attacker computed before. On CUDA without
deterministic kernels, attackers' recomputations could differ in the last bits; they now all
get the first one's.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping

import torch

_lock = threading.Lock()
_key: tuple[str, int, str, str] | None = None
_dataset: object | None = None  # the dataset the cached values were trained on (kept alive)
_values: dict[str, torch.Tensor] = {}
stats = {"hits": 0, "misses": 0}  # for tests and the benchmark: lookups answered / computed


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of a model state's names, dtypes, shapes and bytes (order-independent)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def round_key(
    config: object,
    server_round: int,
    device: torch.device,
    global_state: Mapping[str, torch.Tensor],
) -> tuple[str, int, str, str]:
    """What a shared value depends on besides its name (see the module docstring)."""
    return (repr(config), int(server_round), str(device), state_digest(global_state))


def indices_digest(indices: torch.Tensor) -> str:
    """A digest of a partition's training indices and their dtype (part of a value's name: a
    boolean mask and an index tensor with the same numbers select different rows)."""
    digest = hashlib.blake2b(str(indices.dtype).encode(), digest_size=12)
    digest.update(indices.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def shared(
    key: tuple[str, int, str, str],
    dataset: object,
    name: str,
    compute: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """The value ``name`` for round ``key`` on ``dataset``: computed once per process and round,
    kept on the CPU. The tensor returned is the process's copy: callers copy it before use."""
    global _key, _dataset
    with _lock:
        if key != _key or dataset is not _dataset:
            _values.clear()
            _key, _dataset = key, dataset
        value = _values.get(name)
        stats["hits" if value is not None else "misses"] += 1
    if value is not None:
        return value
    value = compute().detach().to("cpu", copy=True)
    with _lock:
        if key == _key and dataset is _dataset:
            _values[name] = value
    return value


def clear() -> None:
    """Forget every value (tests)."""
    global _key, _dataset
    with _lock:
        _values.clear()
        _key = _dataset = None
        stats.update(hits=0, misses=0)
