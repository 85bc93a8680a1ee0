"""Launcher housekeeping that needs no SuperLink: stale Ray session directories."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immunefl.processes import free_port
from immunefl.rayhead import RAY_DIR_PREFIX, prune_ray_dirs


def _session(root: Path, name: str, port: int | None, age: float) -> Path:
    d = root / f"{RAY_DIR_PREFIX}{name}"
    d.mkdir()
    if port is not None:
        (d / "ray_current_cluster").write_text(f"10.0.0.1:{port}")
    then = time.time() - age
    os.utime(d, (then, then))
    return d


def test_only_old_sessions_of_heads_that_are_gone_are_removed(tmp_path: Path) -> None:
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        alive = _session(tmp_path, "alive", live.getsockname()[1], age=3600)
        dead = _session(tmp_path, "dead", free_port(), age=3600)
        never_up = _session(tmp_path, "never", None, age=3600)
        starting = _session(tmp_path, "starting", None, age=5)  # may not have its address yet
        other = tmp_path / "not-ours"
        other.mkdir()
        removed = prune_ray_dirs(tmp_path, min_age=600)
    assert sorted(removed) == sorted([dead, never_up])
    assert alive.exists() and starting.exists() and other.exists()
    assert not dead.exists() and not never_up.exists()


DRIVER = (
    "import ray, sys\n"
    "try:\n"
    "    ray.init(address=sys.argv[1], log_to_driver=False)\n"
    "    print('CONNECTED', int(ray.cluster_resources()['CPU']))\n"
    "except Exception as exc:\n"
    "    print('REFUSED', type(exc).__name__)\n"
)


@pytest.mark.slow
def test_the_ray_head_lets_in_only_drivers_holding_its_token(tmp_path: Path) -> None:
    """Beside loopback (tests/test_ports.py), the head needs its token: a driver without the
    launcher's token is refused; ours gets in."""
    from immunefl.processes import terminate
    from immunefl.rayhead import LOOPBACK_ENV, RayHead
    from immunefl.submission import flwr_env

    env = flwr_env(tmp_path / "home")
    head = RayHead(env, tmp_path / "ray.log")
    head.start()
    try:
        head.wait_until_listening(180)
        strip = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")
        # the stranger differs from ours by the token alone (with Ray's loopback setting, which
        # keeps its driver on 127.0.0.1 instead of hanging on the host's address)
        stranger = {**{k: v for k, v in os.environ.items() if k not in strip}, **LOOPBACK_ENV}
        ours = {**stranger, **head.auth_env()}
        outs = {}
        for name, e in (("stranger", stranger), ("ours", ours)):
            outs[name] = subprocess.run(
                [sys.executable, "-c", DRIVER, head.address], env=e, capture_output=True,
                text=True, timeout=300,
            ).stdout  # fmt: skip
        assert "REFUSED" in outs["stranger"], outs
        assert "CONNECTED" in outs["ours"], outs
        assert len(head.token) == 64 and head.token != RayHead(env, tmp_path / "x").token
    finally:
        assert head.process is not None
        terminate(head.process, 20)
        head.remove_files()


def test_launchers_sharing_a_flwr_home_give_each_superlink_its_own(tmp_path: Path) -> None:
    """Each SuperLink installs the app in a FLWR_HOME of its own (two sharing one raced on the
    app's directory), below the launcher's state directory, and removed on stop."""
    from immunefl.launcher import LocalSimulation
    from task.schema import PROJECT_ROOT

    def home_of(pid: int) -> Path:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return Path(next(e for e in environ if e.startswith(b"FLWR_HOME=")).decode()[10:])

    shared = tmp_path / "flwr-home"
    with LocalSimulation(PROJECT_ROOT, shared, own_ray=False) as a, \
            LocalSimulation(PROJECT_ROOT, shared, own_ray=False) as b:  # fmt: skip
        assert a.pid is not None and b.pid is not None
        homes = [home_of(a.pid), home_of(b.pid)]
        assert homes[0] != homes[1]
        assert all(h.parent == shared.resolve() / "superlink" and h.is_dir() for h in homes)
        assert a.env["FLWR_HOME"] == b.env["FLWR_HOME"] == str(shared.resolve())  # `flwr run`'s
    assert not any(h.exists() for h in homes)


def test_a_killed_launcher_is_reaped(tmp_path: Path) -> None:
    """The reaper waits on a pipe; once its holder is gone it stops every tagged process."""
    from immunefl.processes import TAG_VAR, tagged_pids

    tag = "reaper-test-" + os.urandom(4).hex()
    sleeper = subprocess.Popen(  # a tagged process in its own session, like a SuperExec
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, TAG_VAR: tag}, start_new_session=True,
    )  # fmt: skip
    doomed = tmp_path / "ray-dir"
    doomed.mkdir()
    holder = subprocess.Popen(  # stands for the launcher: holds the pipe, then is SIGKILLed
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from immunefl.launcher import Reaper\n"
         f"r = Reaper({tag!r}, [Path({str(doomed)!r})], Path({str(tmp_path / 'r.log')!r}))\n"
         "print('READY', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "READY"
    assert tagged_pids(tag) == [sleeper.pid]
    holder.kill()
    holder.wait(timeout=30)
    sleeper.wait(timeout=60)  # the reaper ended it ...
    deadline = time.monotonic() + 60  # ... and then removes the directory: wait, bounded
    while doomed.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tagged_pids(tag) and not doomed.exists()


def test_deploy_superlink_binds_loopback_by_default_and_warns_when_opened() -> None:
    from immunefl.cli import _parser
    from immunefl.deploy_cli import LOOPBACK, OPEN_CONTROL_API_WARNING

    args = _parser().parse_args(["deploy", "superlink"])
    assert args.address.rpartition(":")[0] in LOOPBACK
    assert "Control API" in OPEN_CONTROL_API_WARNING and "docs/security.md" in (
        OPEN_CONTROL_API_WARNING
    )


def _fake_flwr(answers: list[tuple[int, str]]):  # noqa: ANN202
    calls = []

    def flwr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        rc, text = answers[min(len(calls), len(answers)) - 1]
        return subprocess.CompletedProcess(list(args), rc, stdout=text, stderr="")

    return flwr, calls


def test_register_waits_for_a_starting_superlink_and_accepts_a_key_it_already_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from immunefl import deploy
    from immunefl.deploy import Deployment, Security

    monkeypatch.setattr(deploy.time, "sleep", lambda s: None)
    dep = Deployment(tmp_path, tmp_path / "home", tmp_path / "st", "127.0.0.1:9092",
                     Security(None))  # fmt: skip
    unavailable = (1, "Connection to the SuperLink is unavailable. Please check ...")
    ok = (0, "SuperNode 7 registered successfully.")
    dep.flwr, calls = _fake_flwr([unavailable, unavailable, ok])
    assert dep.register(tmp_path / "node-0.pub", "node-0") == "registered"
    assert len(calls) == 3  # two refused connections while the SuperLink starts, then success
    dep.flwr, _ = _fake_flwr([(1, "Error: Public key already in use.")])
    assert dep.register(tmp_path / "node-0.pub", "node-0") == "already registered"
    dep.flwr, calls = _fake_flwr([(1, "Error: SuperNode authentication is not enabled")])
    with pytest.raises(RuntimeError, match="not enabled"):
        dep.register(tmp_path / "node-0.pub", "node-0")
    assert len(calls) == 1  # a refusal that waiting cannot fix is not retried
    dep.flwr, calls = _fake_flwr([unavailable])
    with pytest.raises(RuntimeError, match=r"failed \(for 0s\)"):
        dep.register(tmp_path / "node-0.pub", "node-0", timeout=0.0)


def test_register_with_no_public_keys_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from immunefl.cli import main

    (tmp_path / "keys").mkdir()
    rc = main(["deploy", "register", "--superlink", "127.0.0.1:9", "--insecure",
               "--keys", str(tmp_path / "keys")])  # fmt: skip
    assert rc != 0 and "no node-*.pub public keys" in capsys.readouterr().err


def test_the_ray_tip_is_configured_away_and_a_users_warning_filters_kept(monkeypatch) -> None:
    from immunefl.submission import RAY_TIP_FILTER, flwr_env

    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    env = flwr_env(Path("/tmp/h"))
    assert env["PYTHONWARNINGS"] == f"error::DeprecationWarning,{RAY_TIP_FILTER}"
    monkeypatch.delenv("PYTHONWARNINGS")
    assert flwr_env(Path("/tmp/h"))["PYTHONWARNINGS"] == RAY_TIP_FILTER
