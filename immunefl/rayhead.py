"""The local Ray cluster a launcher's simulation runs share (`RayHead`).

Started at the same time as the SuperLink, instead of letting every run's simulation process
start its own: Ray's start-up (~6 s here) then overlaps the SuperLink's, the CLI's and the
simulation process's own start, and the points of a sweep share one cluster. The runs find it
through ``RAY_ADDRESS``. The head runs with token authentication (``RAY_AUTH_MODE=token`` and a
random per-launcher ``RAY_AUTH_TOKEN`` that only our processes inherit), and every port of it
listens on loopback only: Ray 2.55 replaces ``--node-ip-address 127.0.0.1`` by the machine's
address (`ray._private.services.resolve_ip_for_localhost`) unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` says the cluster is one node, and its autoscaler
monitor serves metrics on a fixed port (44217, on every interface unless the head's address is
127.0.0.1): ``AUTOSCALER_METRIC_PORT`` gives each head a free one (docs/security.md).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

from immunefl.processes import find_bin, free_port, port_in_use, spawn_logged, terminate

RAY_HEAD_ENV = {"RAY_prestart_worker_first_driver": "0", "RAY_enable_worker_prestart": "0"}
#: a one-node cluster: Ray then keeps 127.0.0.1 as the node address (GCS, raylet, workers,
#: client server and monitor bind it); drivers need it too, to find their node by that address
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


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
        if not (port.isdigit() and port_in_use(int(port))):
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
        """What a driver needs to be let in (Ray token authentication) and find its node."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, **LOOPBACK_ENV}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the head and return at once: drivers connecting early wait for it."""
        prune_ray_dirs()
        self.port = free_port()
        # the monitor's metrics port is fixed (44217) otherwise: two heads would collide
        self.env["AUTOSCALER_METRIC_PORT"] = str(free_port())
        command = [find_bin("ray"), "start", "--head", "--block", "--port", str(self.port),
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
        while not port_in_use(self.port):
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
