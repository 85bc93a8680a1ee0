"""The sweep engine end to end: the points of a sweep in one Flower run give what separate runs
give, a failed point is recorded and the next one runs, and a killed sweep resumes without
rerunning a finished point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.slow

TIMING = {"wall_seconds", "round_seconds", "aggregate_seconds", "eval_seconds", "seconds"}


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "immunefl.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=PROJECT_ROOT)  # fmt: skip


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING and "seconds" not in k} for r in rows]


def _sweep_file(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "sweep.yaml"
    f.write_text("num-partitions: 10\nclients-per-round: 3\nnum-server-rounds: 2\n" + body)
    return f


def test_one_flower_run_for_many_points_equals_separate_runs(
    tmp_path: Path, fmnist_subset_dir: Path
) -> None:
    f = _sweep_file(tmp_path, "num-malicious: 2\nattack: sign-flip\nattack-mode: continuous\n"
                    "strategy: [fedavg, median]\n")  # fmt: skip
    common = ["--set", f"data-dir={fmnist_subset_dir}", "--set", f"results-dir={tmp_path / 'r'}"]
    one = _cli("sweep", str(f), *common, "--set", "run-name=one",
               "--flwr-home", str(tmp_path / "h1"))  # fmt: skip
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert one.stdout.count("Successfully started run") == 1  # one Flower run for 2 points
    # --parallel 2: each point its own Flower run (the pre-engine path), two SuperLinks
    sep = _cli("sweep", str(f), *common, "--set", "run-name=sep", "--parallel", "2",
               "--flwr-home", str(tmp_path / "h2"))  # fmt: skip
    assert sep.returncode == 0, sep.stdout[-3000:] + sep.stderr[-3000:]
    assert sep.stdout.count("Successfully started run") == 2
    for name in ("strategy=fedavg", "strategy=median"):
        a, b = _rows(tmp_path / "r" / "one" / name), _rows(tmp_path / "r" / "sep" / name)
        assert a == b and len(a) == 2, name
        assert sum(r["malicious_aggregated"] for r in a) > 0
    assert (tmp_path / "r" / "one" / "strategy=median" / "model.pt").exists()


def test_a_failed_point_is_recorded_and_a_killed_sweep_resumes(tmp_path: Path, fmnist_dir: Path):
    f = _sweep_file(tmp_path, "checkpoint-every: 1\nvariants:\n"
                    "  - {seed: 0}\n  - {seed: 1, inject-faults: '2:bug'}\n"
                    "  - {seed: 2, num-server-rounds: 6}\n")  # fmt: skip
    args = [str(f), "--set", f"data-dir={fmnist_dir}", "--set", f"results-dir={tmp_path / 'r'}",
            "--set", "run-name=sw", "--quiet"]  # fmt: skip
    sweep = tmp_path / "r" / "sw"
    last = sweep / "seed=2_num-server-rounds=6"
    proc = subprocess.Popen(
        [sys.executable, "-m", "immunefl.cli", "sweep", *args, "--flwr-home", str(tmp_path / "h")],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 800
    while time.monotonic() < deadline and proc.poll() is None:
        path = last / "rounds.jsonl"
        rows = path.read_text().splitlines() if path.exists() else []
        if len(rows) >= 2 and (last / "checkpoint.pt").exists():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the launcher only: its reaper stops the federation
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-way, not finished
    first = json.loads((sweep / "seed=0" / "summary.json").read_text())
    failed = json.loads((sweep / "seed=1_inject-faults=2-bug" / "summary.json").read_text())
    assert first["status"] == "completed"
    assert failed["status"] == "failed" and "ZeroDivisionError" in failed["error"]
    assert not (last / "summary.json").exists()  # killed mid-way
    mtime = (sweep / "seed=0" / "summary.json").stat().st_mtime
    time.sleep(2.0)  # wait for the reaper before a new launcher
    out = _cli("sweep", *args, "--resume", str(sweep), "--flwr-home", str(tmp_path / "h2"))
    assert "resuming the sweep: 1 points finished" in out.stdout, out.stdout + out.stderr
    assert (sweep / "seed=0" / "summary.json").stat().st_mtime == mtime  # not run again
    summary = json.loads((last / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 6
    assert [r["round"] for r in _rows(last)] == [1, 2, 3, 4, 5, 6]
    assert out.returncode == 1  # the bug point fails again; the others are done
