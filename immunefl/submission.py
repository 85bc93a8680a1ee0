"""Submitting a run to a SuperLink and reading its outcome (`flwr run`, `flwr ls`).

`flwr run` exits 0 even when the run failed: `submit_run` streams the run's log, then reads the
run's final status from ``flwr ls`` (`RunOutcome`); the callers raise `RunFailed` unless it is
``finished:completed``. `write_connection` adds a SuperLink connection to a FLWR_HOME's
``config.toml``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from immunefl.processes import find_bin, port_in_use
from task.resultsio import atomic_write_bytes
from task.runlock import locked_file

FLWR_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


class RunFailed(RuntimeError):
    """A run did not finish with status ``finished:completed``."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    status: str
    seconds: float


#: Output lines of Flower's that never apply to a run of ours (the only ones we drop), and why.
NOT_OURS = {
    "default simulated SuperNodes changed from 10 to 2": "the launcher always sets num-supernodes",
    "To change federation size, use the following command": "the same (`--set num-partitions`)",
    "flwr federation simulation-config": "the command of the line above",
    "Manually terminating ClientAppActor": "Flower's simulation stops its actors after every run",
}
#: Ray warns at every driver start that a future Ray will stop hiding GPUs from actors that ask
#: for none; we keep today's behaviour on purpose (a client with 0 GPUs sees none), so the tip
#: is not the user's concern. Only this one warning is filtered, by its module.
RAY_TIP_FILTER = "ignore::FutureWarning:ray._private.worker"


def is_ours(line: str) -> bool:
    """Whether a line of a run's output concerns the user (all but `NOT_OURS`).

    >>> is_ours("WARNING: Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.")
    False
    >>> is_ours("WARNING: [immunefl] round 3: 2 replies rejected")
    True
    """
    return not any(text in line for text in NOT_OURS)


#: a line's source: the ``[N] `` tag of a parallel sweep's run, then Ray's prefix for a line of
#: an actor, e.g. ``(ClientAppActor pid=7)``, which starts every line of its traceback too
_COLOUR = r"(?:\x1b\[[0-9;]*m)?"
_SOURCE = re.compile(rf"^(\[\d+\] )?({_COLOUR}\([^()]*pid=\d+[^()]*\){_COLOUR} )?")
#: the level of a log line, right after its source, possibly in colour
_LEVEL = re.compile(rf"{_COLOUR}(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


class QuietEcho:
    """``--quiet``: print immunefl's own lines and Flower's errors, nothing else.

    An error comes with its context: the lines held back just before it (up to `context`, e.g.
    the warning that explains it) and every line after it up to the next log line (the
    traceback, which has no level of its own). State is kept per source (the ``[N] `` tag of a
    parallel sweep's run, Ray's ``(Actor pid=N)`` prefix), so sources do not mix contexts.

    >>> out = []; q = QuietEcho(out.append, context=1)
    >>> for line in ["INFO : a", "WARNING : pool empty", "ERROR : boom", "Traceback", "  x",
    ...              "INFO : b", "c", "INFO : [immunefl] done"]:
    ...     q(line)
    >>> out
    ['WARNING : pool empty', 'ERROR : boom', 'Traceback', '  x', 'INFO : [immunefl] done']
    """

    def __init__(self, out: Callable[[str], None] = print, context: int = 20) -> None:
        self.out = out
        self.context = context
        self.held: dict[str, collections.deque[str]] = {}
        self.in_error: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        source = _SOURCE.match(line)
        tag = source.group(0) if source else ""
        level = _LEVEL.match(line, len(tag))
        with self.lock:
            held = self.held.setdefault(tag, collections.deque(maxlen=self.context))
            if level is not None:
                if level.group(1) in ("ERROR", "CRITICAL"):
                    self.in_error.add(tag)
                else:
                    self.in_error.discard(tag)
            if tag in self.in_error:
                while held:
                    self.out(held.popleft())
                self.out(line)
            elif "[immunefl]" in line or "ERROR" in line:
                self.out(line)
            else:
                held.append(line)


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """The environment every Flower process of ours gets."""
    env = dict(os.environ)
    env.update(FLWR_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), RAY_TIP_FILTER]))
    # Flower spawns `flower-superexec` & co. by name: put this interpreter's bin dir first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def write_connection(flwr_home: Path, name: str, entry: dict[str, Any]) -> None:
    """Add (or refresh) connection `name` in $FLWR_HOME/config.toml, keeping the others.

    Entries of ours (``immunefl-*``) whose SuperLink port no longer answers are pruned.
    """
    path = Path(flwr_home) / "config.toml"
    with locked_file(path):  # two launchers sharing a FLWR home never lose each other's entry
        _update_connection(path, name, entry)


def _update_connection(path: Path, name: str, entry: dict[str, Any]) -> None:
    config: dict[str, Any] = {}
    if path.exists():
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    superlink = config.setdefault("superlink", {})
    superlink.setdefault("default", "local")
    superlink.setdefault("local", {"address": ":local:"})
    for other in [n for n in superlink if n.startswith("immunefl-") and n != name]:
        host, _, port = str(superlink[other].get("address", "")).rpartition(":")
        local = host in ("127.0.0.1", "localhost")
        if local and (not port.isdigit() or not port_in_use(int(port))):
            del superlink[other]  # a stale entry of a local SuperLink that is gone
    superlink[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, tomli_w.dumps(config).encode())  # `flwr` never reads half a file


#: Ray prestarts idle Python workers (one per CPU) when a driver connects. Flower's actors carry
#: their own runtime_env and never use them, so on a small machine they only compete with the
#: actors' start-up for the CPUs.
def write_run_config(config: dict[str, Any], path: Path) -> Path:
    """The run config as a TOML file for ``flwr run --run-config``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))
    return path


class Connection(Protocol):
    """What submitting a run needs: the app, a `flwr` connection name and the environment."""

    app_dir: Path
    connection: str
    env: dict[str, str]


def submit_run(
    target: Connection,
    run_config_file: Path,
    federation_config: str | None = None,
    stream: bool = True,
    echo: Callable[[str], None] = print,
    timeout: float = 86400.0,
) -> RunOutcome:
    """`flwr run` the app on `target`, stream its log through `echo`, return its final status."""
    command = [find_bin("flwr"), "run", str(target.app_dir), target.connection,
               "--run-config", str(run_config_file)]  # fmt: skip
    if federation_config:
        command += ["--federation-config", federation_config]
    if stream:
        command.append("--stream")
    t0 = time.perf_counter()
    run_id: int | None = None
    with subprocess.Popen(  # noqa: S603 - our own binary, fixed args
        command,
        env=target.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if is_ours(line):
                echo(line.rstrip("\n"))
            match = re.search(r"Successfully started run (\d+)", line)
            if match:
                run_id = int(match.group(1))
        proc.wait()
    if run_id is None:
        raise RunFailed(f"`flwr run` did not start a run (exit code {proc.returncode})")
    status = wait_for_run(target, run_id, timeout)
    return RunOutcome(run_id, status, time.perf_counter() - t0)


def run_status(target: Connection, run_id: int) -> str:
    """The run's status as `flwr ls` reports it, e.g. ``finished:completed``."""
    out = subprocess.run(  # noqa: S603
        [find_bin("flwr"), "ls", target.connection, "--run-id", str(run_id), "--format", "json"],
        env=target.env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return str(json.loads(out.stdout)["runs"][0]["status"])
    except (ValueError, KeyError, IndexError) as exc:
        raise RunFailed(f"cannot read status of run {run_id}: {out.stdout}{out.stderr}") from exc


def wait_for_run(target: Connection, run_id: int, timeout: float = 600.0) -> str:
    """Poll until the run is finished (the log stream can end a moment before)."""
    deadline = time.monotonic() + timeout
    while True:
        status = run_status(target, run_id)
        if status.startswith("finished") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
