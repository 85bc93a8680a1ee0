"""One run per run directory, and one writer of a FLWR home's config.toml at a time (issue 26)."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immunefl.submission import write_connection
from task.runlock import CLAIM_VAR, LOCK_NAME, RunDirTaken, claim_run_dir, claimed, holder
from task.schema import PROJECT_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CTX = mp.get_context("fork")


def _race(run_dir: str, start: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    while time.time() < start:
        pass
    try:
        claim_run_dir(Path(run_dir), command="racer")
        out.put(("won", os.getpid()))
        time.sleep(1.0)  # hold it while the others try
    except RunDirTaken as exc:
        out.put(("lost", str(exc)))


def test_of_processes_racing_for_a_run_dir_exactly_one_wins(tmp_path: Path) -> None:
    for attempt in range(5):
        run_dir = tmp_path / f"run-{attempt}"
        out: mp.Queue = CTX.Queue()  # type: ignore[type-arg]
        start = time.time() + 0.5
        procs = [CTX.Process(target=_race, args=(str(run_dir), start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        results = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        winners = [r for r in results if r[0] == "won"]
        assert len(winners) == 1, results
        pid = winners[0][1]
        for _, message in (r for r in results if r[0] == "lost"):
            assert f"pid {pid} on host {socket.gethostname()} since" in message


def test_a_live_holder_is_named_and_a_dead_ones_claim_is_taken_over(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from task.runlock import claim_run_dir; "
            "claim_run_dir(Path(sys.argv[1]), command='immunefl run'); print('ok', flush=True); "
            "time.sleep(float(sys.argv[2]))")  # fmt: skip
    live = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "60"],
                            stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)  # fmt: skip
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ok"
        with pytest.raises(RunDirTaken, match=rf"in use by another run: pid {live.pid} on host "
                           rf"{socket.gethostname()} since .* \(immunefl run\)"):  # fmt: skip
            claim_run_dir(tmp_path)
    finally:
        live.kill()
        live.wait()
    claim = claim_run_dir(tmp_path)  # its holder is dead: stale, taken over (what --resume does)
    assert holder(tmp_path / LOCK_NAME)["pid"] == os.getpid()
    claim.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_server_app_honours_its_launchers_claim_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = claim_run_dir(tmp_path, token="t0k3n", command="immunefl run")
    monkeypatch.setenv(CLAIM_VAR, "t0k3n")
    with claimed(tmp_path, command="ServerApp") as claim:
        assert not claim.mine
    assert holder(tmp_path / LOCK_NAME)["token"] == "t0k3n"  # the launcher releases it, not us
    monkeypatch.setenv(CLAIM_VAR, "another-launcher")
    with pytest.raises(RunDirTaken, match="in use by another run"), claimed(tmp_path, "ServerApp"):
        pass
    launcher.release()
    monkeypatch.delenv(CLAIM_VAR)
    with claimed(tmp_path, command="ServerApp") as claim:  # a plain `flwr run .`: its own claim
        assert claim.mine and (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_cli_refuses_a_run_dir_another_run_holds(tmp_path: Path) -> None:
    run_dir = tmp_path / "res" / "same-name"
    code = ("import sys, time; from pathlib import Path; from task.runlock import claim_run_dir; "
            "claim_run_dir(Path(sys.argv[1]), command='immunefl run'); print('ok', flush=True); "
            "time.sleep(60)")  # fmt: skip
    other = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE,
                             text=True, cwd=PROJECT_ROOT)  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ok"
        out = subprocess.run(
            [sys.executable, "-m", "immunefl.cli", "run", "--flwr-home", str(tmp_path / "home2"),
             "--set", f"results-dir={tmp_path / 'res'}", "--set", "run-name=same-name"],
            capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        )  # fmt: skip
    finally:
        other.kill()
        other.wait()
    assert out.returncode == 2, out.stderr
    assert f"is in use by another run: pid {other.pid}" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "home2").exists()


def _write_many(home: str, index: int, start: float) -> None:
    while time.time() < start:
        pass
    for k in range(15):
        write_connection(Path(home), f"race-{index}-{k}", {"address": f"10.0.0.{index}:{k}"})


def test_launchers_sharing_a_flwr_home_never_lose_each_others_connections(
    tmp_path: Path,
) -> None:
    start = time.time() + 0.5
    procs = [CTX.Process(target=_write_many, args=(str(tmp_path), i, start)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)  # a reader never saw half a file
    with open(tmp_path / "config.toml", "rb") as fh:
        superlink = tomllib.load(fh)["superlink"]
    missing = [f"race-{i}-{k}" for i in range(6) for k in range(15)
               if f"race-{i}-{k}" not in superlink]  # fmt: skip
    assert not missing
