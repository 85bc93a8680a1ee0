"""Deployment commands leave nothing behind and give keys to no one else (issue 26)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from immunefl.deploy import generate_certs
from task.schema import PROJECT_ROOT


def deploy(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-m", "immunefl.cli", "deploy", *args],
                          capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
                          env=env)  # fmt: skip


def test_register_and_run_leave_no_temporary_directory(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp_path / "keys").mkdir()
    home = str(tmp_path / "home")
    out = deploy(tmp, "register", "--superlink", "127.0.0.1:9", "--insecure",
                 "--keys", str(tmp_path / "keys"), "--flwr-home", home)  # fmt: skip
    assert out.returncode == 1 and "no node-*.pub" in out.stderr
    out = deploy(tmp, "run", "--superlink", "127.0.0.1:9", "--insecure", "--flwr-home", home,
                 "--set", "weighting=assigned")  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert list(tmp.iterdir()) == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_server_key_goes_to_a_container_user_only_when_asked(tmp_path: Path) -> None:
    generate_certs(tmp_path / "process")
    key = tmp_path / "process" / "server.key"
    assert key.stat().st_uid == os.getuid() and oct(key.stat().st_mode)[-3:] == "600"
    if os.getuid() != 0:
        pytest.skip("handing a file to another uid needs root")
    generate_certs(tmp_path / "container", container_uid=49999)
    assert (tmp_path / "container" / "server.key").stat().st_uid == 49999
    assert (tmp_path / "container" / "ca.key").stat().st_uid == 0  # the CA's key: never
