"""Checkpoints of a run, for resuming it exactly where it stopped.

Every ``checkpoint-every`` rounds the ServerApp writes ``<run_dir>/checkpoint.pt`` atomically
(temporary file, fsync, rename): the round number, the global model, the counterfactual model
(``track-aep``), the rows written so far, and NumPy's global RNG state (Flower's DP wrapper
draws from it). Nothing else is needed: client sampling, the attack schedule, every client's
data order and all defense noise come from streams keyed by (seed, round[, partition]), and the
strategies keep no state between rounds, so round t+1 after a resume is computed from exactly
the same inputs as in an uninterrupted run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server_app.results import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


@dataclass
class Checkpoint:
    server_round: int
    model: dict[str, torch.Tensor]
    counterfactual: dict[str, torch.Tensor] | None
    rows: list[dict[str, Any]]
    numpy_rng: Any


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write the checkpoint atomically (temporary file, fsync, rename)."""
    path = Path(run_dir) / CHECKPOINT
    buf = io.BytesIO()
    torch.save(ckpt.__dict__, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    data = torch.load(path, weights_only=False)
    return Checkpoint(**data)


def numpy_rng_state() -> Any:
    return np.random.get_state()


def restore_numpy_rng(state: Any) -> None:
    np.random.set_state(state)
