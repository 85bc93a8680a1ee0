"""Issue 29's rules through real `flwr run` (tiny: 10 clients, 5 per round, 2-4 rounds)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from server_app.checkpoint import load_checkpoint
from server_app.results import TIMING_KEYS
from task.schema import PROJECT_ROOT
from tests.test_e2e_flwr import SMOKE, _launch, _processes_of, _rows

pytestmark = pytest.mark.slow


def _run(tmp: Path, fmnist_dir: Path, name: str, *sets: str) -> Path:
    args = [SMOKE, "--set", "num-server-rounds=2", "--set", f"results-dir={tmp / 'r'}",
            "--set", f"run-name={name}", "--set", f"data-dir={fmnist_dir}", "--quiet"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    out = _launch(tmp, *args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp / "r" / name


def test_geomed_after_bucketing_runs_and_reports(tmp_path: Path, fmnist_dir: Path) -> None:
    run = _run(tmp_path, fmnist_dir, "gm", "strategy=geomed", "pre-aggregator=bucketing",
               "preagg-bucket-size=2")  # fmt: skip
    rows = _rows(run)
    assert [r["round"] for r in rows] == [1, 2]
    for r in rows:
        assert r["aggregated_replies"] == 5 and r["n"] == 3  # ceil(5 / 2) bucket means
        assert r["geomed_converged"] == 1 and r["geomed_iterations"] >= 1
    assert rows[-1]["benign_acc"] > 0.3


def test_fltrust_trains_on_its_root_set_and_weighs_clients(tmp_path: Path, fmnist_dir: Path):
    run = _run(tmp_path, fmnist_dir, "ft", "strategy=fltrust", "fltrust-root-size=100")
    rows = _rows(run)
    for r in rows:
        assert r["fltrust_server_norm"] > 0 and len(r["fltrust_trust"]) == 5
        assert 1 <= r["fltrust_admitted"] <= 5 and r["model_updated"]
    assert rows[-1]["benign_acc"] > 0.2


def test_foolsgold_sigkill_then_resume_is_identical(tmp_path: Path, fmnist_dir: Path) -> None:
    common = [SMOKE, "--set", "num-server-rounds=4", "--set", "checkpoint-every=1",
              "--set", "strategy=foolsgold", "--set", f"data-dir={fmnist_dir}",
              "--set", f"results-dir={tmp_path / 'r'}", "--quiet"]  # fmt: skip
    ref = _launch(tmp_path / "a", *common, "--set", "run-name=whole")
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]
    home = tmp_path / "b" / "flwr-home"
    run_dir = tmp_path / "r" / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "immunefl.cli", "run", *common, "--set", "run-name=cut",
         "--flwr-home", str(home)],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        path = run_dir / "rounds.jsonl"
        rows = path.read_text().splitlines() if path.exists() else []
        if len(rows) >= 2 and (run_dir / "checkpoint.pt").exists():
            break
        time.sleep(0.2)
    proc.kill()  # the launcher's reaper takes the federation with it
    proc.wait(timeout=30)
    deadline = time.monotonic() + 90
    while _processes_of(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not (run_dir / "summary.json").exists()  # it really died mid-way
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None and ckpt.strategy_state and ckpt.strategy_state["histories"]
    assert set(ckpt.strategy_state["histories"]) <= set(range(10))  # keyed by partition id

    resumed = _launch(tmp_path / "b", "--resume", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    whole, cut = _rows(tmp_path / "r" / "whole"), _rows(run_dir)
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in whole]
    assert [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in cut] == strip
    assert any(w > 0 for r in whole for w in r["foolsgold_weights"])
    a = torch.load(tmp_path / "r" / "whole" / "model.pt", weights_only=True)
    b = torch.load(run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    json.loads((run_dir / "summary.json").read_text())
