"""`immunefl matrix` on an existing Ray cluster (`RAY_ADDRESS`): a real two-node cluster on one
host (a head and a second `ray start --address` node, one CPU each), so that the simulation's two
ClientApp actors can only fit one per node. The points must run on both nodes, and their results
must equal the one-node run of the same points (the matrix e2e run in tests/test_matrix.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from immunefl.processes import find_bin, free_port, spawn_logged, terminate
from task.schema import PROJECT_ROOT
from tests.conftest import MATRIX_E2E, MATRIX_POINTS, matrix_rows

pytestmark = pytest.mark.slow


def _ray_env(temp: Path) -> dict[str, str]:
    """A user's plain cluster: no token of ours, no loopback-only switch, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AUTOSCALER_"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["TMPDIR"] = str(temp)
    return env


def _node(args: list[str], temp: Path, log: Path) -> subprocess.Popen[bytes]:
    """One Ray node (``ray start --block``: SIGTERM stops it and only it, never `ray stop`,
    which would stop every Ray process on the machine), its session files under `temp`."""
    temp.mkdir(parents=True, exist_ok=True)
    command = [find_bin("ray"), "start", "--block", *args, "--num-cpus", "1",
               "--temp-dir", str(temp), "--disable-usage-stats"]  # fmt: skip
    return spawn_logged(command, _ray_env(temp), log)


def _actor_logs(temp: Path) -> list[Path]:
    """The worker logs of a node that hosted a ClientApp actor (Ray prints the actor's class
    into its worker's log when the actor starts)."""
    logs = (temp / "session_latest" / "logs").glob("worker-*.out")
    return [p for p in logs if ":actor_name:ClientAppActor" in p.read_text(errors="replace")]


@pytest.fixture
def two_node_cluster(tmp_path: Path):
    """Head and worker node, one CPU each, each with its own session directory (its logs):
    yields the cluster's address and the two directories."""
    temps = [Path("/tmp") / f"immunefl-raytest-{os.getpid()}-{i}" for i in (0, 1)]  # short:
    nodes: list[subprocess.Popen[bytes]] = []  # Ray's unix socket paths are limited
    try:
        port = free_port()
        nodes.append(_node(["--head", "--port", str(port), "--include-dashboard=false",
                            "--ray-client-server-port", str(free_port())], temps[0],
                           tmp_path / "head.log"))  # fmt: skip
        deadline = time.monotonic() + 120
        while not (temps[0] / "ray_current_cluster").exists():
            assert nodes[0].poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(0.5)
        address = (temps[0] / "ray_current_cluster").read_text().strip()
        nodes.append(_node(["--address", address], temps[1], tmp_path / "worker.log"))
        while "Ray runtime started" not in (tmp_path / "worker.log").read_text():
            assert nodes[1].poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the second Ray node did not start"
            time.sleep(0.5)
        yield address, temps
    finally:
        for node in reversed(nodes):
            terminate(node, 30)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


def test_a_matrix_on_a_two_node_cluster_uses_both_nodes_and_equals_one_node(
    tmp_path: Path, fmnist_subset_dir: Path, two_node_cluster, matrix_one_node: Path
) -> None:
    address, temps = two_node_cluster
    f = tmp_path / "m.yaml"
    f.write_text(MATRIX_E2E % "")  # the same points without the failing defense
    env = {**_ray_env(Path(tempfile.gettempdir())), "RAY_ADDRESS": address}
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "matrix", str(f), "--quiet",
         "--set", f"data-dir={fmnist_subset_dir}", "--set", f"results-dir={tmp_path / 'r'}",
         "--set", "run-name=mx", "--flwr-home", str(tmp_path / "h")],
        capture_output=True, text=True, timeout=1200, cwd=PROJECT_ROOT, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not list((tmp_path / "h").rglob("ray-*.log"))  # the user's cluster; no head of ours
    assert [len(_actor_logs(t)) for t in temps] == [1, 1]  # one actor on each node
    root = tmp_path / "r" / "mx"
    meta = json.loads((root / "matrix.json").read_text())
    assert all(p["ok"] for p in meta["points"]) and len(meta["points"]) == len(MATRIX_POINTS)
    for name in MATRIX_POINTS:
        assert matrix_rows(root / name) == matrix_rows(matrix_one_node / "r" / "mx" / name), name
