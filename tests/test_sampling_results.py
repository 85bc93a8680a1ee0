from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from server_app.results import RunRecorder, summarize
from server_app.sampling import sample_partitions


def test_sampling_is_seeded_exact_and_distinct() -> None:
    pop = list(range(100))
    draws = [sample_partitions(0, r, pop, 10) for r in range(1, 51)]
    assert all(len(d) == len(set(d)) == 10 for d in draws)
    assert draws == [sample_partitions(0, r, pop, 10) for r in range(1, 51)]
    assert draws != [sample_partitions(1, r, pop, 10) for r in range(1, 51)]
    assert len({tuple(d) for d in draws}) > 45  # rounds differ
    # roughly uniform: over 50 rounds each partition is drawn ~5 times
    counts = torch.bincount(torch.tensor(sum(draws, [])), minlength=100)
    assert counts.min() >= 0 and counts.max() <= 15
    with pytest.raises(ValueError):
        sample_partitions(0, 1, [1, 2], 3)


def test_recorder_writes_every_file(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path / "run")
    rec.write_config({"seed": 1}, run_id=5)
    rows = [
        {"round": 1, "benign_acc": 0.5, "benign_loss": 1.0, "round_seconds": 2.0},
        {"round": 2, "benign_acc": 0.7, "benign_loss": float("nan"), "round_seconds": 1.0},
        {"round": 3, "benign_acc": 0.6, "benign_loss": 0.8, "round_seconds": 3.0},
    ]
    for row in rows:
        rec.append_round(row)
    rec.write_summary(summarize(rec.rows, 9.0))
    rec.save_model({"w": torch.ones(2)})
    lines = (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3]
    assert json.loads(lines[1])["benign_loss"] is None  # NaN written as null, still valid JSON
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_benign_acc"] == 0.7 and summary["best_round"] == 2
    assert summary["final_benign_acc"] == 0.6 and summary["median_round_seconds"] == 2.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["_meta"]["run_id"] == 5
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert torch.equal(saved["w"], torch.ones(2))
    assert not list((tmp_path / "run").glob(".*tmp"))  # no temporary files left behind


def test_recorder_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    RunRecorder(tmp_path / "r").append_round({"round": 1})
    with pytest.raises(FileExistsError, match="already holds a run"):
        RunRecorder(tmp_path / "r")
