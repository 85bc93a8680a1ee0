"""Deployment engine on loopback: SuperLink + SuperNodes as processes, TLS and SuperNode auth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from immunefl.deploy import Security
from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_local_deployment_with_tls_auth_and_a_malicious_node(tmp_path: Path, fmnist_dir: Path):
    state = tmp_path / "state"
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "deploy", "local",
         str(PROJECT_ROOT / "configs/deploy-smoke.yaml"), "--tls", "--auth",
         "--state", str(state), "--flwr-home", str(tmp_path / "flwr"),
         "--set", f"results-dir={tmp_path / 'results'}", "--set", "run-name=dep",
         "--set", f"data-dir={fmnist_dir}", "--set", "num-server-rounds=2"],
        capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:]
    assert "tls=on, auth=on" in out.stdout
    run_dir = tmp_path / "results" / "dep"
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[1]["adversarial"] and rows[1]["malicious"] == [3]  # the last partition
    assert not rows[0]["adversarial"] and 3 not in rows[0]["sampled"]
    assert all(r["num_replies"] == 3 and r["failed_replies"] == 0 for r in rows)
    assert rows[-1]["benign_acc"] > 0.5
    config = json.loads((run_dir / "config.json").read_text())
    assert config["_meta"]["malicious_partitions"] == [3]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # every SuperNode authenticated over TLS, and everything was stopped
    for i in range(4):
        assert "SuperNode ID:" in (state / f"supernode-{i}.log").read_text()
    assert not (state / "processes.json").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout


def test_auth_without_tls_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        Security(None, auth=True)
