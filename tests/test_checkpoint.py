"""Checkpoints hold data only: a crafted file is refused, never executed; RNG state round-trips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from server_app.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    numpy_rng_state,
    restore_numpy_rng,
    save_checkpoint,
)


class _Payload:
    """What an attacker would plant: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"server_round": 1, "model": {}, "counterfactual": None, "rows": [],
                "numpy_rng": _Payload(marker)}, tmp_path / "checkpoint.pt")  # fmt: skip
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_save_load_round_trip_restores_the_numpy_rng(tmp_path: Path) -> None:
    np.random.seed(123)
    np.random.random(5)
    state = numpy_rng_state()
    expected = np.random.random(4)
    rows = [{"round": 1, "benign_acc": 0.5, "sampled": [1, 2], "x": None, "ok": True}]
    ckpt = Checkpoint(1, {"w": torch.ones(2)}, None, rows, state)
    save_checkpoint(tmp_path, ckpt)
    np.random.seed(999)  # anything in between
    loaded = load_checkpoint(tmp_path)
    assert (
        loaded is not None and loaded.rows == rows and torch.equal(loaded.model["w"], torch.ones(2))
    )
    restore_numpy_rng(loaded.numpy_rng)
    assert np.array_equal(np.random.random(4), expected)


def test_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None


def test_a_crafted_edge_case_file_is_refused(tmp_path: Path) -> None:
    from attacks.backdoor import load_edge_case

    marker = tmp_path / "pwned"
    torch.save(_Payload(marker), tmp_path / "edge.pt")
    with pytest.raises(ValueError, match="edge.pt cannot be read safely"):
        load_edge_case(str(tmp_path / "edge.pt"), torch.zeros(1, 1, 28, 28, dtype=torch.uint8))
    assert not marker.exists()
