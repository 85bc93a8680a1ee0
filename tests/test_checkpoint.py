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


def _loads_without_safety(path: Path) -> list[str]:
    """``torch.load`` calls in `path` that do not pass ``weights_only=True`` and ``np.load`` /
    ``numpy.load`` calls that do not pass ``allow_pickle=False``, as 'file:line'."""
    import ast

    required = {"torch": ("weights_only", True), "np": ("allow_pickle", False),
                "numpy": ("allow_pickle", False)}  # fmt: skip
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        func = node.func
        if func.attr != "load" or not isinstance(func.value, ast.Name):
            continue
        if func.value.id not in required:
            continue
        name, value = required[func.value.id]
        ok = any(
            k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
            for k in node.keywords
        )
        if not ok:
            bad.append(f"{path}:{node.lineno}")
    return bad


def test_every_load_of_a_file_names_its_safety_switch() -> None:
    """Issue 14 item 7: torch >= 2.6 defaults to weights_only=True, but pyproject allows older
    torch and a default can change; every torch.load says weights_only=True explicitly, and
    every np.load allow_pickle=False."""
    root = Path(__file__).resolve().parents[1]
    dirs = ("client_app", "server_app", "strategies", "attacks", "immunefl", "benchmarks",
            "scripts", "tests")  # fmt: skip
    files = [p for d in dirs for p in (root / d).rglob("*.py")]
    assert len(files) > 50
    bad = [hit for p in files for hit in _loads_without_safety(p)]
    assert not bad, f"loads without the explicit safety switch: {bad}"


def test_the_load_scan_finds_an_unsafe_load(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import torch, numpy as np\ntorch.load('a')\nnp.load('b', allow_pickle=True)\n"
                 "torch.load('c', weights_only=True)\n")  # fmt: skip
    assert _loads_without_safety(f) == [f"{f}:2", f"{f}:3"]
