"""Run the app on a local simulation SuperLink that this process starts, watches and stops.

`flwr run` against Flower's ``:local:`` connection spawns a detached SuperLink on fixed ports that
outlives the run, and `flwr run` exits 0 even when the run failed. `LocalSimulation` instead:

1. starts ``flower-superlink --simulation`` itself on free loopback ports, in its own process
   group, with a private ``FLWR_HOME`` and runtime dependency installation disabled;
2. submits runs with ``flwr run APP <connection> --stream`` (several runs may reuse one
   SuperLink, e.g. the points of a sweep) and reads each run's final status from ``flwr ls``;
3. starts the Ray cluster the simulation engine runs its actors on (`RayHead`) at the same
   time as the SuperLink, instead of letting every run's simulation process start its own:
   Ray's start-up (~6 s here) then overlaps the SuperLink's, the CLI's and the simulation
   process's own start, and the points of a sweep share one cluster. The runs find it through
   ``RAY_ADDRESS`` (a ``RAY_ADDRESS`` you set yourself is used instead, and nothing is started);
4. stops everything it started when leaving the context. The SuperLink detaches its SuperExec
   (new session), which starts the simulation, so process groups do not cover them:
   every process we start carries a unique ``IMMUNEFL_SIM_TAG`` in its environment, inherited
   by all descendants, and `stop` ends the SuperLink and Ray, then any process still carrying
   the tag (SIGTERM, then SIGKILL);
5. dies with its federation even when it is killed with SIGKILL: a watchdog
   (`immunefl.reaper`) started first waits on a pipe only this process holds open, and stops
   every tagged process once the pipe closes;
6. keeps Ray closed to strangers: the head runs with token authentication
   (``RAY_AUTH_MODE=token`` and a random per-launcher ``RAY_AUTH_TOKEN`` that only our
   processes inherit; a driver without it is refused) and advertises 127.0.0.1. Ray 2.55's
   GCS and raylet still listen on every interface (its gRPC servers bind 0.0.0.0; newer Ray
   binds the node address), so the token is what keeps others out (docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONNECTION_PREFIX = "immunefl-sim"
TAG_VAR = "IMMUNEFL_SIM_TAG"
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


def flwr_env(flwr_home: Path) -> dict[str, str]:
    """The environment every Flower process of ours gets."""
    env = dict(os.environ)
    env.update(FLWR_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Flower spawns `flower-superexec` & co. by name: put this interpreter's bin dir first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"'{name}' not found; install the project (pip install -e .)")
    return found


def spawn_logged(
    command: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` detached (own session, no stdin), stdout and stderr into `log_path`."""
    with open(log_path, "wb") as log_fh:
        return subprocess.Popen(  # noqa: S603 - our own or Flower's binaries, our arguments
            command, env=env, stdout=log_fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
        )  # fmt: skip


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_connection(flwr_home: Path, name: str, entry: dict[str, Any]) -> None:
    """Add (or refresh) connection `name` in $FLWR_HOME/config.toml, keeping the others.

    Entries of ours (``immunefl-*``) whose SuperLink port no longer answers are pruned.
    """
    path = Path(flwr_home) / "config.toml"
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
        if local and (not port.isdigit() or not _port_in_use(int(port))):
            del superlink[other]  # a stale entry of a local SuperLink that is gone
    superlink[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))


#: Ray prestarts idle Python workers (one per CPU) when a driver connects. Flower's actors carry
#: their own runtime_env and never use them, so on a small machine they only compete with the
#: actors' start-up for the CPUs.
RAY_HEAD_ENV = {"RAY_prestart_worker_first_driver": "0", "RAY_enable_worker_prestart": "0"}


RAY_DIR_PREFIX = "immunefl-ray-"


def prune_ray_dirs(root: Path | None = None, min_age: float = 600.0) -> list[Path]:
    """Remove the session directories of our Ray heads that are gone (a launcher killed with
    SIGKILL cannot remove its own): older than `min_age` seconds (a head still starting has not
    written its address yet) and whose recorded GCS port no longer answers."""
    removed = []
    for d in (root or Path(tempfile.gettempdir())).glob(RAY_DIR_PREFIX + "*"):
        try:
            if time.time() - d.stat().st_mtime < min_age:
                continue
            port = (d / "ray_current_cluster").read_text().strip().rpartition(":")[2]
        except OSError:
            port = ""
        if not (port.isdigit() and _port_in_use(int(port))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class RayHead:
    """A local Ray cluster (``ray start --head --block``) for the simulation runs of a launcher.

    It keeps its session files in a private temporary directory, removed on `stop`: `ray start`
    records its address in ``<temp-dir>/ray_current_cluster``, and a plain ``ray.init()`` (what
    Flower's simulation does without ``RAY_ADDRESS``) connects to the address in
    ``/tmp/ray/ray_current_cluster``, so with the default directory a stopped head would leave
    every later simulation on this machine waiting for a cluster that is gone.
    """

    def __init__(self, env: dict[str, str], log_path: Path, node_ip: str = "127.0.0.1") -> None:
        self.token = secrets.token_hex(32)
        self.env = {**env, **RAY_HEAD_ENV, **self.auth_env()}
        self.node_ip = node_ip
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        # short: Ray's unix sockets live below it and socket paths are limited to ~107 bytes
        self.temp_dir = Path(tempfile.gettempdir()) / f"{RAY_DIR_PREFIX}{uuid.uuid4().hex[:8]}"

    def auth_env(self) -> dict[str, str]:
        """What a driver needs to be let in (Ray token authentication)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the head and return at once: drivers connecting early wait for it."""
        prune_ray_dirs()
        self.port = free_port()
        command = [_bin("ray"), "start", "--head", "--block", "--port", str(self.port),
                   "--ray-client-server-port", str(free_port()), "--include-dashboard=false",
                   "--node-ip-address", self.node_ip,
                   "--disable-usage-stats", "--temp-dir", str(self.temp_dir)]  # fmt: skip
        self.process = spawn_logged(command, self.env, self.log_path)
        # where its session files live, beside its log (tests check that nothing is left)
        self.log_path.with_suffix(".dir").write_text(str(self.temp_dir))

    def check(self) -> None:
        """Raise if the head has exited (its log says why)."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"the local Ray head exited with code {self.process.returncode}; "
                f"log: {self.log_path}\n{self.log_path.read_text()[-2000:]}"
            )

    def wait_until_listening(self, timeout: float) -> None:
        """Until the head's GCS accepts connections (normally ~1 s after `start`)."""
        deadline = time.monotonic() + timeout
        while not _port_in_use(self.port):
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray head not listening after {timeout:.0f}s: {self.log_path}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM `ray start --block`, which stops the processes it started."""
        if self.process is not None:
            terminate(self.process, timeout)
        self.process = None

    def remove_files(self) -> None:
        """Delete the session directory (once no Ray process of ours is left)."""
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class LocalSimulation:
    """A private local simulation SuperLink and Ray cluster (use as a context manager)."""

    def __init__(
        self, app_dir: Path, flwr_home: Path, startup_timeout: float = 60.0,
        own_ray: bool | None = None,
    ) -> None:  # fmt: skip
        self.app_dir = Path(app_dir).resolve()
        self.flwr_home = Path(flwr_home).resolve()
        self.startup_timeout = startup_timeout
        self.tag = uuid.uuid4().hex
        self.env = flwr_env(self.flwr_home)
        self.env[TAG_VAR] = self.tag
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.own_ray = "RAY_ADDRESS" not in os.environ if own_ray is None else own_ray
        self.ray: RayHead | None = None
        self.reaper: Reaper | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalSimulation:
        # SIGTERM/SIGHUP (a killed terminal, `kill`, a CI timeout) must also stop what we
        # started: turn them into SystemExit so the context's __exit__ runs.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, exit_on_signal)
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Start Ray (unless told not to) and the SuperLink; return once the SuperLink answers."""
        try:
            self._start()
        except BaseException:
            self.stop()  # nothing half-started outlives a failed start
            raise

    def _start(self) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        state_dir = self.flwr_home / "superlink"
        state_dir.mkdir(exist_ok=True)
        self.port = free_port()
        # one connection name per SuperLink: launchers sharing a FLWR_HOME never cross wires
        self.connection = f"{CONNECTION_PREFIX}-{self.port}"
        ray = RayHead(self.env, state_dir / f"ray-{self.port}.log") if self.own_ray else None
        # first of all: whatever happens to this process from now on, its federation goes too
        self.reaper = Reaper(self.tag, [ray.temp_dir] if ray else [], state_dir / "reaper.log")
        if ray is not None:
            self.ray = ray
            ray.start()
            self.env["RAY_ADDRESS"] = ray.address  # inherited by the simulation process
            self.env.update(ray.auth_env())  # ... with the token that lets it in
        command = [
            _bin("flower-superlink"),
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--control-api-address",
            f"127.0.0.1:{free_port()}",
            "--fleet-api-address",
            f"127.0.0.1:{free_port()}",
            "--database",
            str(state_dir / f"state-{self.port}.db"),
        ]
        self.log_path = state_dir / f"superlink-{self.port}.log"
        self.process = spawn_logged(command, self.env, self.log_path, cwd=self.flwr_home)
        self._write_connection()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"flower-superlink exited with code {self.process.returncode}; "
                    f"log: {self.log_path}\n{self.log_path.read_text()[-2000:]}"
                )
            if self._healthy():
                return
            time.sleep(0.2)
        raise TimeoutError(f"flower-superlink not ready after {self.startup_timeout:.0f}s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _write_connection(self) -> None:
        write_connection(
            self.flwr_home, self.connection, {"address": f"127.0.0.1:{self.port}", "insecure": True}
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the SuperLink and Ray, then every process still carrying this instance's tag."""
        if self.process is None and self.ray is None:
            if self.reaper is not None:
                self.reaper.release()
                self.reaper = None
            return
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
        if self.ray is not None:
            self.ray.stop(timeout)
        if self.process is not None:
            terminate(self.process, timeout)
        stop_tagged([self.tag], timeout)
        if self.ray is not None:
            self.ray.remove_files()
        if self.reaper is not None:
            self.reaper.release()
        self.process = None
        self.ray = None
        self.reaper = None

    # ------------------------------------------------------------------ runs
    def run(
        self,
        run_config_file: Path,
        num_supernodes: int,
        cpus_per_client: int = 1,
        gpus_per_client: float = 0.0,
        stream: bool = True,
        echo=print,
    ) -> RunOutcome:
        """Submit one simulation run with `num_supernodes` virtual nodes; wait for its status."""
        if self.process is None:
            raise RuntimeError("SuperLink not started")
        if self.ray is not None:
            self.ray.wait_until_listening(self.startup_timeout)
        federation = (
            f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client} "
            f"client-resources-num-gpus={gpus_per_client}"
        )
        outcome = submit_run(self, run_config_file, federation, stream=stream, echo=echo)
        if self.ray is not None and outcome.status != "finished:completed":
            self.ray.check()  # a dead Ray head explains a failed run better than its log
        return outcome


class Reaper:
    """The `immunefl.reaper` watchdog of one launcher: it stops the processes tagged `tag` and
    removes `remove` as soon as this process lets go of (or loses) the pipe's write end."""

    def __init__(self, tag: str, remove: list[Path], log_path: Path) -> None:
        read_end, self._write_end = os.pipe()  # not inheritable: only this process holds it
        env = {k: v for k, v in os.environ.items() if k != TAG_VAR}  # never reaps itself
        command = [sys.executable, "-m", "immunefl.reaper", "--tag", tag]
        for path in remove:
            command += ["--remove", str(path)]
        with open(log_path, "ab") as log_fh:
            self.process = subprocess.Popen(  # noqa: S603 - our own module
                command, stdin=read_end, stdout=log_fh, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
            )  # fmt: skip
        os.close(read_end)

    def release(self, timeout: float = 30.0) -> None:
        """Close the pipe (the reaper sweeps once, finds nothing after a clean stop, exits)."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
        # on a timeout it goes on alone; it ends by itself once nothing tagged is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)


def exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def tagged_pids(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds ``IMMUNEFL_SIM_TAG=<tag>``."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            if needle not in (pid_dir / "environ").read_bytes().split(b"\0"):
                continue
            state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(pid_dir.name))
    return found


def stop_tagged(tags: list[str], timeout: float = 20.0) -> None:
    """SIGTERM every live process carrying one of `tags`, then SIGKILL what remains."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        pids = [pid for tag in tags for pid in tagged_pids(tag)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(tagged_pids(t) for t in tags):
            time.sleep(0.2)


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
    command = [_bin("flwr"), "run", str(target.app_dir), target.connection,
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
        [_bin("flwr"), "ls", target.connection, "--run-id", str(run_id), "--format", "json"],
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
