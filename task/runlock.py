"""One run per run directory: an exclusive claim, ``run.lock``, taken before anything starts.

`claim_run_dir` creates ``<run-dir>/run.lock`` with ``O_CREAT | O_EXCL`` (atomic, also on
NFS): of two runs that name the same directory, from two terminals or two FLWR homes, exactly
one gets it, and the other is refused with a message naming the holder (pid, host, start
time). A claim whose holder is a dead process of this host is stale and is taken over (under
an ``flock`` so two takers never both win). The host CLI claims each run directory before it
submits anything and puts the claim's token in the environment (`CLAIM_VAR`) of the
processes it starts; the ServerApp honours a claim carrying its own token and otherwise claims
the directory itself (a plain `flwr run .`, a deployment). A claim is released (removed) by
whoever took it, once its run has ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_NAME = "run.lock"
CLAIM_VAR = "IMMUNEFL_RUN_CLAIM"


class RunDirTaken(RuntimeError):
    """Another live run holds the run directory."""


@dataclass(frozen=True)
class Claim:
    path: Path
    token: str
    mine: bool  # False: honoured (taken by the host CLI that started us), not released by us

    def release(self) -> None:
        if self.mine and holder(self.path).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def holder(lock: Path) -> dict[str, Any]:
    """What a claim file says of its holder ({} when unreadable or gone)."""
    try:
        data = json.loads(Path(lock).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(info: dict[str, Any]) -> str:
    when = info.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    return (
        f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {since} "
        f"({info.get('command', '?')})"
    )


def is_stale(info: dict[str, Any]) -> bool:
    """Whether a claim's holder is known to be gone: a dead process of this host."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False  # another host's process, or a claim we cannot read: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _create(lock: Path, token: str, command: str) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "token": token, "command": command}  # fmt: skip
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(info))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def claim_run_dir(
    run_dir: Path, token: str | None = None, honour: str | None = None, command: str = "?"
) -> Claim:
    """Claim `run_dir` (created if need be) for this process, or raise `RunDirTaken`.

    A claim already there carrying the token `honour` is ours (our launcher's): it is kept.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    token = token or uuid.uuid4().hex
    for _ in range(3):
        if _create(lock, token, command):
            return Claim(lock, token, mine=True)
        info = holder(lock)
        if honour and info.get("token") == honour:
            return Claim(lock, honour, mine=False)
        if not info and lock.exists() and time.time() - lock.stat().st_mtime < 5:
            time.sleep(0.2)  # being written right now
            continue
        if info and not is_stale(info):
            raise RunDirTaken(
                f"{run_dir} is in use by another run: {describe(info)}; wait for it, choose "
                f"another run-name, or remove {lock} if that process is gone"
            )
        with open(run_dir / f".{LOCK_NAME}.guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if holder(lock) == info:  # still the stale claim we judged: take it over
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                if _create(lock, token, command):
                    return Claim(lock, token, mine=True)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)
    raise RunDirTaken(f"{run_dir}: cannot claim {lock}: {describe(holder(lock))}")


@contextlib.contextmanager
def claimed(run_dir: Path, command: str) -> Iterator[Claim]:
    """`claim_run_dir` for the duration of a ``with`` block, honouring our launcher's claim."""
    claim = claim_run_dir(run_dir, honour=os.environ.get(CLAIM_VAR), command=command)
    try:
        yield claim
    finally:
        claim.release()


@contextlib.contextmanager
def locked_file(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock`` around a read-modify-write of `path`."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
