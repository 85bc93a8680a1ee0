"""The multi-host commands across two network namespaces: host A runs the SuperLink (TLS,
SuperNode authentication, the SuperExec secret) and submits the run, host B the SuperNodes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from task.schema import PROJECT_ROOT
from tests.conftest import make_fake_fmnist

pytestmark = pytest.mark.slow
LINK_IP, NODES_IP = "10.213.0.1", "10.213.0.2"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)  # noqa: S607


def netns_or_skip() -> None:
    if shutil.which("ip") is None:
        pytest.skip("needs `ip` (iproute2) for network namespaces")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    probe = f"imfl-probe-{uuid.uuid4().hex[:6]}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        pytest.skip(f"this machine does not allow network namespaces: {made.stderr.strip()}")
    ip("netns", "del", probe, check=False)


def make_hosts(a: str, b: str) -> None:
    """Two namespaces joined by a veth pair: `a` at LINK_IP, `b` at NODES_IP."""
    suffix = a[-6:]
    ip("netns", "add", a)
    ip("netns", "add", b)
    ip("link", "add", f"ima{suffix}", "type", "veth", "peer", "name", f"imb{suffix}")
    for ns, dev, addr in ((a, f"ima{suffix}", LINK_IP), (b, f"imb{suffix}", NODES_IP)):
        ip("link", "set", dev, "netns", ns)
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")


def on(ns: str, *args: str) -> subprocess.Popen[str]:
    """`immunefl deploy ARGS` on host `ns`."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    return subprocess.Popen(  # noqa: S603
        ["ip", "netns", "exec", ns, sys.executable, "-m", "immunefl.cli", "deploy", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=env,
    )  # fmt: skip


def done(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    start = time.monotonic()
    out, err = proc.communicate(timeout=timeout)
    print(f"{time.monotonic() - start:6.1f}s  {proc.args[8]}")  # type: ignore[index]
    return proc.returncode, out, err


def test_superlink_and_supernodes_on_two_hosts(tmp_path: Path) -> None:
    netns_or_skip()
    data = make_fake_fmnist(
        tmp_path / "data", n_train=400, n_test=100
    )  # tiny: the wiring is tested
    tag = uuid.uuid4().hex[:6]
    a, b = f"imfl-a-{tag}", f"imfl-b-{tag}"
    link = f"{LINK_IP}:9092"
    A, B = tmp_path / "host-a", tmp_path / "host-b"  # noqa: N806
    try:
        make_hosts(a, b)
        certs, keys, strangers = A / "certs", B / "keys", B / "strangers"
        jobs = [on(a, "certs", str(certs), LINK_IP), on(b, "keys", str(keys), "--partitions",
                "0-1"), on(b, "keys", str(strangers), "--partitions", "1")]  # fmt: skip
        assert all(done(j)[0] == 0 for j in jobs)
        # the operator registers the keys host B sent; host B gets the CA certificate only
        (A / "pubs").mkdir()
        for pid in (0, 1):
            shutil.copy(keys / f"node-{pid}.pub", A / "pubs")
        (B / "certs").mkdir()
        shutil.copy(certs / "ca.crt", B / "certs")
        code, out, err = done(on(a, "superlink", "--address", link, "--certs", str(certs),
                                 "--auth", "--state", str(A / "state"), "--flwr-home",
                                 str(A / "flwr")))  # fmt: skip
        secret = A / "state" / "superexec.secret"
        assert code == 0 and f"shared secret {secret}" in out, out + err
        assert oct(secret.stat().st_mode)[-3:] == "600" and len(secret.read_bytes()) == 32
        code, out, err = done(on(a, "register", "--superlink", link, "--certs", str(certs),
                                 "--keys", str(A / "pubs"), "--flwr-home",
                                 str(A / "flwr")))  # fmt: skip
        assert code == 0 and out.count("registered: ") == 2, out + err
        nodes = ["--superlink", link, "--certs", str(B / "certs"), "--num-partitions", "2",
                 "--flwr-home", str(B / "flwr")]  # fmt: skip
        good = on(b, "supernodes", *nodes, "--keys", str(keys), "--partitions", "0-1",
                  "--state", str(B / "state"))  # fmt: skip
        stranger = on(b, "supernodes", *nodes, "--keys", str(strangers), "--partitions", "1",
                      "--state", str(B / "stranger"))  # fmt: skip
        code, out, err = done(good)
        assert code == 0 and out.count(f"online at {link}") == 2, out + err
        code, out, err = done(stranger)
        assert code == 1, out + err
        assert ("SuperNode supernode-1 refused: SuperNode authentication: the SuperLink "
                "does not know this node's key "
                f"({strangers}/node-1.pub is not registered") in err  # fmt: skip
        results = tmp_path / "results"
        code, out, err = done(on(a, "run", str(PROJECT_ROOT / "configs/deploy-smoke.yaml"),
                                 "--superlink", link, "--certs", str(certs), "--flwr-home",
                                 str(A / "flwr"), "--set", "num-partitions=2", "--set",
                                 "num-malicious=0", "--set", "attack=none", "--set",
                                 "strategy=fedavg", "--set", "clients-per-round=2", "--set",
                                 "num-server-rounds=1", "--set", "adv-rounds=1", "--set",
                                 "batch-size=32", "--set",
                                 f"results-dir={results}", "--set", "run-name=two-hosts",
                                 "--set", f"data-dir={data}"), timeout=400)  # fmt: skip
        assert code == 0, out[-3000:] + err[-3000:]
        rows = [
            json.loads(x) for x in (results / "two-hosts/rounds.jsonl").read_text().splitlines()
        ]
        assert [r["round"] for r in rows] == [1]
        assert all(r["num_replies"] == 2 and r["failed_replies"] == 0 for r in rows)
        summary = json.loads((results / "two-hosts/summary.json").read_text())
        assert summary["status"] == "completed"
        # the ServerApp ran on host A, through our SuperExec holding the secret
        assert "SuperExec authentication failed" not in (A / "state/superlink.log").read_text()
    finally:
        for ns, state in ((b, B / "state"), (b, B / "stranger"), (a, A / "state")):
            if state.exists():
                subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m",  # noqa: S607
                                "immunefl.cli", "deploy", "down", "--state", str(state)],
                               capture_output=True, cwd=PROJECT_ROOT, timeout=120)  # fmt: skip
        for ns in (a, b):  # anything of ours still inside, then the namespace itself
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", ns, check=False)
        ip("link", "del", f"ima{tag}", check=False)  # only there if setup stopped half-way
    assert not [n for n in ip("netns", "list").stdout.split() if tag in n]
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True).stdout == b""
