"""No port of a local run listens beyond loopback (issue 26): every listening socket of every
process an `immunefl run` starts (SuperLink, SuperExec, simulation, Ray head, GCS, raylet,
monitor, client server, workers, actors, the ServerApp's Prometheus endpoint) is sampled while
the run goes on, found through ``/proc/net/tcp{,6}`` and the processes' socket inodes."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immunefl.processes import free_port
from task.schema import PROJECT_ROOT
from tests.conftest import processes_of_flwr_home


def _address(hexaddr: str, v6: bool) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if v6:  # four little-endian 32-bit words
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw), int(port, 16)
    return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)


def listening_sockets() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket of this network namespace."""
    table = {}
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for fields in (line.split() for line in lines):
            if fields[3] == "0A":  # TCP_LISTEN
                table[fields[9]] = _address(fields[1], v6)
    return table


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_the_probe_reads_a_socket_of_ours() -> None:
    with socket.socket() as wide, socket.socket() as narrow:
        wide.bind(("0.0.0.0", 0))  # noqa: S104 - the probe must see it
        narrow.bind(("127.0.0.1", 0))
        wide.listen()
        narrow.listen()
        mine = {listening_sockets()[i] for i in socket_inodes(os.getpid())}
        ports = wide.getsockname()[1], narrow.getsockname()[1]
    assert mine == {("0.0.0.0", ports[0]), ("127.0.0.1", ports[1])}
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("127.0.0.1") and is_loopback("::1")


@pytest.mark.slow
def test_every_port_of_a_local_run_listens_on_loopback_only(
    tmp_path: Path, fmnist_dir: Path
) -> None:
    home = (tmp_path / "flwr-home").resolve()
    command = [sys.executable, "-m", "immunefl.cli", "run", str(PROJECT_ROOT / "configs" /
               "smoke.yaml"), "--flwr-home", str(home), "--set", f"data-dir={fmnist_dir}",
               "--set", f"results-dir={tmp_path / 'res'}", "--set", "run-name=ports",
               "--set", f"metrics-port={free_port()}", "--set", "metrics-linger=2"]  # fmt: skip
    seen: dict[tuple[str, int], str] = {}
    log = tmp_path / "run.log"
    with open(log, "w") as fh:
        run = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        table = listening_sockets()
        for pid, cmd in processes_of_flwr_home(home).items():
            for inode in socket_inodes(pid) & set(table):
                seen.setdefault(table[inode], cmd)  # whole: a deep checkout path is long
        time.sleep(0.3)
    if run.poll() is None:
        run.terminate()
    run.wait(timeout=60)
    out = log.read_text()
    assert run.returncode == 0, out[-3000:]
    wide = {addr: cmd for addr, cmd in seen.items() if not is_loopback(addr[0])}
    assert not wide, f"ports beyond loopback: {wide}"
    names = " ".join(seen.values())
    for part in ("flower-superlink", "gcs_server", "raylet", "monitor.py", "ray.util.client"):
        # the sampling saw the processes it judges
        assert part in names, (part, {a: c[:200] for a, c in seen.items()})
    assert "AUTOSCALER_METRIC_PORT" not in out
