"""Run the app on a local simulation SuperLink that this process starts, watches and stops.

`flwr run` against Flower's ``:local:`` connection spawns a detached SuperLink on fixed ports that
outlives the run, and `flwr run` exits 0 even when the run failed. `LocalSimulation` instead:

1. starts ``flower-superlink --simulation`` itself on free loopback ports, in its own process
   group, with runtime dependency installation disabled and a ``FLWR_HOME`` of its own (below
   the launcher's, removed on `stop`), where its runs install the app;
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

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

from immunefl.processes import (
    TAG_VAR,
    Reaper,
    exit_on_signal,
    find_bin,
    free_port,
    spawn_logged,
    stop_tagged,
    terminate,
)
from immunefl.rayhead import RayHead
from immunefl.submission import (
    RunOutcome,
    flwr_env,
    submit_run,
    write_connection,
)

CONNECTION_PREFIX = "immunefl-sim"


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
        self.server_home: Path | None = None

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
        # the SuperLink's own FLWR_HOME, where its simulation processes install the app. Flower
        # installs a FAB by creating the app's directory, then copying into it, and an installer
        # that finds the directory there uses it as it is: two SuperLinks sharing one home (a
        # parallel sweep) had a run import a half-copied app. `flwr run` and the connection
        # config keep the launcher's FLWR_HOME.
        # a new directory each time: a home a dead launcher left behind is never reused
        self.server_home = Path(tempfile.mkdtemp(prefix=f"home-{self.port}-", dir=state_dir))
        # first of all: whatever happens to this process from now on, its federation goes too
        self.reaper = Reaper(self.tag, [*([ray.temp_dir] if ray else []), self.server_home],
                             state_dir / "reaper.log")  # fmt: skip
        if ray is not None:
            self.ray = ray
            ray.start()
            self.env["RAY_ADDRESS"] = ray.address  # inherited by the simulation process
            self.env.update(ray.auth_env())  # ... with the token that lets it in
        command = [
            find_bin("flower-superlink"),
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
        server_env = {**self.env, "FLWR_HOME": str(self.server_home)}
        self.process = spawn_logged(command, server_env, self.log_path, cwd=self.flwr_home)
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
            if self.reaper is not None:  # it removes the SuperLink's home
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
        if self.server_home is not None:
            shutil.rmtree(self.server_home, ignore_errors=True)  # the installed app, ~14 MB
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
