"""Fault tolerance end to end: random node failures, SIGKILL + resume, bad configs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from client_app.faults import random_failure
from server_app.results import TIMING_KEYS
from task.schema import PROJECT_ROOT
from tests.test_e2e_flwr import _launch, _processes_of, _rows

pytestmark = pytest.mark.slow
TIMING = TIMING_KEYS
SMALL = ["--set", "num-partitions=50", "--set", "clients-per-round=4"]


def test_thirty_percent_of_nodes_failing_every_round(
    tmp_path: Path, fmnist_subset_dir: Path
) -> None:
    out = _launch(
        tmp_path, *SMALL, "--set", "num-server-rounds=4", "--set", "fail-prob=0.3",
        "--set", f"results-dir={tmp_path / 'r'}", "--set", "run-name=flaky",
        "--set", f"data-dir={fmnist_subset_dir}", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _rows(tmp_path / "r" / "flaky")
    assert len(rows) == 4
    total_failed = 0
    for r in rows:
        expected = sum(random_failure(0, r["round"], p, 0.3) for p in r["sampled"])
        assert r["failed_replies"] == expected, r
        assert r["num_replies"] == len(r["sampled"]) - expected
        assert r["model_updated"] == (expected < len(r["sampled"]))
        total_failed += expected
    assert total_failed > 0  # the seed really exercised failures


def test_sigkill_then_resume_is_identical_to_an_uninterrupted_run(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    common = [
        *SMALL, "--set", "num-server-rounds=4", "--set", "checkpoint-every=1",
        "--set", f"data-dir={fmnist_dir}", "--set", f"results-dir={tmp_path / 'r'}",
        # the stateful paths: NumPy's global RNG (dp-fixed's noise), the counterfactual model
        # (track-aep, whose dp-fixed strategy seeds that RNG when it is built), FL-WBC's streams
        "--set", "client-defense=wbc", "--set", "strategy=dp-fixed", "--set", "track-aep=true",
        "--quiet",
    ]  # fmt: skip
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
    cmdlines = _processes_of(home)
    head = next(c for c in cmdlines if "--temp-dir" in c)  # `ray start --head ... --temp-dir D`
    ray_dir = Path(head.split("--temp-dir ")[1].split()[0])
    assert ray_dir.is_dir()
    proc.kill()  # only the launcher: its reaper must take the whole federation with it
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    left = _processes_of(home)
    deadline = time.monotonic() + 90  # SIGTERM grace + SIGKILL: bounded, never a timing claim
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _processes_of(home)
    assert not left, f"the killed launcher's federation lives on: {left}"
    deadline = time.monotonic() + 30
    homes = (home / "superlink").glob
    while (ray_dir.exists() or list(homes("home-*"))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_dir.exists()  # the reaper also removed the Ray head's session files
    assert not list(homes("home-*"))  # ... and the SuperLink's own FLWR_HOME
    assert not (run_dir / "summary.json").exists()  # it really died mid-way

    resumed = _launch(tmp_path / "b", "--resume", str(run_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    whole, cut = _rows(tmp_path / "r" / "whole"), _rows(run_dir)
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in whole]
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in cut] == strip
    a = torch.load(tmp_path / "r" / "whole" / "model.pt", weights_only=True)
    b = torch.load(run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "round-timeout=0"], "'round-timeout'"),
        (["--set", "checkpoint-every=-1"], "'checkpoint-every'"),
        (["--set", "fail-prob=2"], "'fail-prob'"),
        (["--set", "resume=true"], "'resume' needs the 'run-name'"),
        (["--set", "clients-per-round=101"], "'clients-per-round' (101)"),
        (["--set", "strategy=trimmed-mean", "--set", "trim-beta=0.6"], "'trim-beta'"),
        (
            [
                "--set",
                "num-malicious=5",
                "--set",
                "attack=targeted",
                "--set",
                "adv-rounds=3",
                "--set",
                "malicious-per-round=11",
            ],
            "'malicious-per-round'",
        ),
        (["--resume", "/nonexistent-run"], "no config.json"),
    ],
)
def test_bad_configs_exit_nonzero_naming_the_key(args: list[str], needle: str) -> None:
    out = subprocess.run([sys.executable, "-m", "immunefl.cli", "run", *args],
                         capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)  # fmt: skip
    assert out.returncode == 2 and needle in out.stderr, out.stderr


def test_summary_and_rounds_are_never_half_written(tmp_path: Path) -> None:
    from server_app.results import RunRecorder

    rec = RunRecorder(tmp_path / "x")
    rec.append_round({"round": 1, "v": 1.0})
    rec.write_summary({"ok": True})
    assert json.loads((tmp_path / "x" / "summary.json").read_text()) == {"ok": True}
    assert (tmp_path / "x" / "rounds.jsonl").read_text().endswith("\n")
