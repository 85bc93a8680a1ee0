"""Checkpoints of a run, for resuming it exactly where it stopped.

Every ``checkpoint-every`` rounds the ServerApp writes ``<run_dir>/checkpoint.pt`` atomically
(temporary file, fsync, rename): the round number, the global model, the counterfactual model
(``track-aep``), the rows written so far, NumPy's global RNG state (Flower's DP wrapper
draws from it) and what a rule keeps across rounds (``strategy_state``, and the
counterfactual's: `ImmuneFedAvg.server_state`, e.g. FoolsGold's per-client histories, centred
clipping's centre). Nothing else is needed: client sampling, the attack schedule, every client's
data order and all defense noise come from streams keyed by (seed, round[, partition]), so
round t+1 after a resume is computed from exactly the same inputs as in an uninterrupted run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from task.resultsio import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


@dataclass
class Checkpoint:
    server_round: int
    model: dict[str, torch.Tensor]
    counterfactual: dict[str, torch.Tensor] | None
    rows: list[dict[str, Any]]
    numpy_rng: Any
    strategy_state: dict[str, Any] | None = None  # `server_state` of the rule (None: none)
    cf_strategy_state: dict[str, Any] | None = None  # ... of the counterfactual's rule


def strategy_state(strategy: Any) -> dict[str, Any] | None:
    """A strategy's `server_state` (None for a strategy without one, e.g. dp-fixed)."""
    get = getattr(strategy, "server_state", None)
    return get() if callable(get) else None


def restore_strategy_state(strategy: Any, state: dict[str, Any] | None) -> None:
    """Give a freshly built strategy the state a checkpoint saved (nothing if none)."""
    load = getattr(strategy, "load_server_state", None)
    if state is not None and callable(load):
        load(state)


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write the checkpoint atomically (temporary file, fsync, rename)."""
    path = Path(run_dir) / CHECKPOINT
    buf = io.BytesIO()
    torch.save(ckpt.__dict__, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or read (the message names the file)."""


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint in `run_dir` (None if there is none).

    Read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only,
    so a crafted file cannot run code (a pickle's ``__reduce__`` is refused, not executed).
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        data = torch.load(path, weights_only=True)
        return Checkpoint(**data)
    except Exception as exc:  # noqa: BLE001 - any unreadable or untrusted content
        raise CheckpointError(
            f"{path} is not a checkpoint this version can load safely "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "nothing was resumed"
        ) from exc


def numpy_rng_state() -> dict[str, Any]:
    """NumPy's global RNG state as plain values and a tensor (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def restore_numpy_rng(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )
