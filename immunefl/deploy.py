"""Flower's deployment engine as plain processes: one SuperLink, N SuperNodes, on one or more hosts.

The same topology as ``docker/compose.yml`` without Docker. Every process is started detached (its
own session) with ``IMMUNEFL_SIM_TAG=<tag>`` in its environment, inherited by the SuperExec and
app processes Flower spawns; the tag and PID are recorded in ``<state-dir>/processes.json`` so
``immunefl deploy down`` stops exactly what was started (SuperNodes first, then the SuperLink).

Security, both optional and off only when asked (``--insecure``):

- TLS: the SuperLink serves a certificate signed by a CA (``docker/generate-certs.sh``); nodes
  and the ``flwr`` CLI verify it with the CA certificate (``--root-certificates``).
- SuperNode authentication (needs TLS): the SuperLink accepts only nodes whose ECDSA public key
  was registered with ``flwr supernode register``; each node signs with its private key.

Node configs carry ``partition-id``, ``num-partitions`` and ``role`` (``benign``/``malicious``), so
the roster the ServerApp builds (``whoami``) comes from the nodes themselves, as in a real
federation.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immunefl.processes import TAG_VAR, find_bin, spawn_logged, stop_tagged
from immunefl.submission import flwr_env, submit_run, write_connection

CERTS_SCRIPT = Path(__file__).resolve().parents[1] / "docker" / "generate-certs.sh"


@dataclass(frozen=True)
class Security:
    """TLS material and SuperNode authentication; ``certs=None`` means insecure."""

    certs: Path | None = None  # holds ca.crt (+ server.pem, server.key on the SuperLink host)
    auth: bool = False

    def __post_init__(self) -> None:
        if self.auth and self.certs is None:
            raise ValueError("SuperNode authentication needs TLS (give a certificates directory)")

    @property
    def ca(self) -> Path:
        assert self.certs is not None
        return self.certs / "ca.crt"


def generate_certs(
    out: Path,
    names: list[str] = (),
    container_uid: int | None = None,  # type: ignore[assignment]
) -> Path:
    """CA + SuperLink certificate in `out` (valid for localhost, 127.0.0.1 and `names`);
    ``server.key`` goes to `container_uid` (a container deployment) or stays the caller's."""
    env = {k: v for k, v in os.environ.items() if k != "SUPERLINK_UID"}
    if container_uid is not None:
        env["SUPERLINK_UID"] = str(container_uid)
    subprocess.run(["bash", str(CERTS_SCRIPT), str(out), *names], check=True, env=env)  # noqa: S603,S607
    return Path(out)


def generate_node_key(keys_dir: Path, name: str) -> Path:
    """An ECDSA P-384 key pair ``<keys_dir>/<name>`` + ``.pub`` (kept if it exists)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = keys_dir / name
    if not key.exists():
        subprocess.run(  # noqa: S603,S607
            ["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", name, "-f", str(key)],
            check=True,
        )
    return key


def node_config_arg(values: Mapping[str, Any]) -> str:
    """``--node-config`` text: strings quoted (Flower rejects bare strings), numbers bare."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (int, float)):
            text = str(value)
        else:
            text = json.dumps(str(value))
        parts.append(f"{key}={text}")
    return " ".join(parts)


def superlink_command(
    host: str, port: int, security: Security, database: Path, secret: Path | None = None
) -> list[str]:
    """`flower-superlink`; with `secret`, its ServerApp SuperExec is ours (``--isolation
    process``) and must sign its Runtime API calls with the secret (Flower ignores the secret in
    the default subprocess isolation)."""
    command = [find_bin("flower-superlink"), "--host", host, "--port", str(port), "--database",
               str(database), "--disable-runtime-dependency-installation"]  # fmt: skip
    if secret is not None:
        command += ["--isolation", "process", "--superexec-auth-secret-file", str(secret)]
    if security.certs is None:
        command.append("--insecure")
    else:
        command += ["--ssl-ca-certfile", str(security.certs / "ca.crt"),
                    "--ssl-certfile", str(security.certs / "server.pem"),
                    "--ssl-keyfile", str(security.certs / "server.key")]  # fmt: skip
    if security.auth:
        command.append("--enable-supernode-auth")
    return command


def superexec_command(runtime: str, security: Security, secret: Path) -> list[str]:
    """The ServerApp SuperExec of a SuperLink in ``--isolation process``, holding the secret."""
    command = [find_bin("flower-superexec"), "--runtime-api-address", runtime,
               "--superexec-auth-secret-file", str(secret)]  # fmt: skip
    if security.certs is None:
        return [*command, "--insecure"]
    return [*command, "--root-certificates", str(security.ca)]


def supernode_command(
    superlink: str, port: int, node_config: Mapping[str, Any], security: Security,
    key: Path | None = None,
) -> list[str]:  # fmt: skip
    command = [find_bin("flower-supernode"), "--superlink", superlink, "--port", str(port),
               "--node-config", node_config_arg(node_config)]  # fmt: skip
    if security.certs is None:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(security.ca)]
    if security.auth:
        if key is None:
            raise ValueError("SuperNode authentication is on but no private key was given")
        command += ["--auth-supernode-private-key", str(key)]
    return command


def parse_partitions(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"bad partition list '{text}': use e.g. 0-3,7")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


class Deployment:
    """Processes of one deployment, recorded in a state directory (see module doc)."""

    def __init__(
        self,
        app_dir: Path,
        flwr_home: Path,
        state_dir: Path,
        superlink: str,
        security: Security,
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.flwr_home = Path(flwr_home).resolve()
        self.state_dir = Path(state_dir).resolve()
        self.superlink = superlink
        self.security = security
        self.tags: dict[str, str] = {}
        self.env = flwr_env(self.flwr_home)
        host, _, port = superlink.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"SuperLink address '{superlink}' is not HOST:PORT")
        self.host, self.port = host, int(port)
        self.connection = f"immunefl-dep-{host.replace('.', '-').replace(':', '-')}-{port}"
        entry: dict[str, Any] = {"address": superlink}
        if security.certs is None:
            entry["insecure"] = True
        else:
            entry["root-certificates"] = str(security.ca.resolve())
        write_connection(self.flwr_home, self.connection, entry)

    # ------------------------------------------------------------ processes
    def _record(self, role: str, name: str, pid: int, tag: str, log_path: Path) -> None:
        path = self.state_dir / "processes.json"
        records = json.loads(path.read_text()) if path.exists() else []
        records.append({"role": role, "name": name, "pid": pid, "tag": tag, "log": str(log_path)})
        path.write_text(json.dumps(records, indent=2) + "\n")

    def _spawn(
        self, role: str, name: str, command: list[str], flwr_home: Path | None = None
    ) -> subprocess.Popen[bytes]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex
        env = dict(self.env, **{TAG_VAR: tag})
        if flwr_home is not None:
            env["FLWR_HOME"] = str(flwr_home)
        log_path = self.state_dir / f"{name}.log"
        proc = spawn_logged(command, env, log_path, cwd=self.state_dir)
        self._record(role, name, proc.pid, tag, log_path)
        self.tags[name] = tag
        return proc

    def stop_process(self, name: str, timeout: float = 20.0) -> None:
        """Stop one process this object started and forget it in ``processes.json``."""
        stop_tagged([self.tags.pop(name)], timeout)
        path = self.state_dir / "processes.json"
        records = [r for r in json.loads(path.read_text()) if r["name"] != name]
        path.write_text(json.dumps(records, indent=2) + "\n")

    def start_superlink(
        self, bind_host: str | None = None, timeout: float = 60.0, secret: Path | None = None
    ) -> None:
        """Start the SuperLink on this host and wait until its port accepts connections.

        With `secret` (a file of raw bytes), also start its ServerApp SuperExec, which signs its
        Runtime API calls with it: a SuperExec without it is refused (HTTP 401).
        """
        command = superlink_command(bind_host or self.host, self.port, self.security,
                                    self.state_dir / "superlink.db", secret)  # fmt: skip
        proc = self._spawn("superlink", "superlink", command, self.process_home("superlink"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.state_dir / "superlink.log").read_text()[-2000:]
                raise RuntimeError(f"flower-superlink exited ({proc.returncode}):\n{log}")
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex((self.host if self.host != "0.0.0.0" else "127.0.0.1",
                                 self.port)) == 0:  # fmt: skip
                    break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"SuperLink not listening on {self.superlink} after {timeout:.0f}s")
        if secret is not None:
            self._start_superexec(secret)

    def _start_superexec(self, secret: Path, settle: float = 2.0) -> None:
        """Our ServerApp SuperExec; one refused by the SuperLink exits within `settle` seconds."""
        # the SuperLink's home: this SuperExec installs the apps of the runs it is given there
        proc = self._spawn("superexec", "superexec",
                           superexec_command(self.superlink, self.security, secret),
                           self.process_home("superlink"))  # fmt: skip
        try:
            proc.wait(timeout=settle)
        except subprocess.TimeoutExpired:
            return
        log = (self.state_dir / "superexec.log").read_text()[-2000:]
        raise RuntimeError(f"the ServerApp's flower-superexec exited ({proc.returncode}):\n{log}")

    def start_supernode(
        self, partition_id: int, num_partitions: int, role: str, port: int,
        key: Path | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        config = {"partition-id": partition_id, "num-partitions": num_partitions, "role": role}
        command = supernode_command(self.superlink, port, config, self.security, key)
        name = f"supernode-{partition_id}"
        return self._spawn("supernode", name, command, self.process_home(name))

    def process_home(self, name: str) -> Path:
        """The FLWR_HOME of a SuperNode, or of the SuperLink and its ServerApp SuperExec
        (``superlink``): where Flower installs the app it is sent.

        No two may share one: Flower 1.42's ``install_from_fab`` creates the app directory and
        then copies into it, and a second installer that finds the directory already there
        imports from it at once, half-copied (our ``task`` without its ``client_app``, say,
        seen as a shadowed package on a slow machine). It lives in this deployment's state
        directory, so two deployments of one host (each has its own) never share one either,
        even for the same partition. `flwr run` keeps the user's FLWR_HOME.
        """
        return self.state_dir / "flwr-home" / name

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every process recorded in this deployment's state directory."""
        stop_state(self.state_dir, timeout)

    # ------------------------------------------------------------ control
    def flwr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a `flwr` CLI command against this SuperLink."""
        return subprocess.run(  # noqa: S603
            [find_bin("flwr"), *args], env=self.env, capture_output=True, text=True, check=check
        )

    def register(self, public_key: Path, name: str, timeout: float = 60.0) -> str:
        """Register a SuperNode's public key (SuperNode authentication).

        Returns ``"registered"``, or ``"already registered"`` when the SuperLink already holds
        this key (re-running the step is harmless). While the SuperLink is not reachable yet
        (a container still starting) it retries for up to ``timeout`` seconds; any other
        refusal is an error that quotes Flower's answer.
        """
        deadline = time.monotonic() + timeout
        while True:
            out = self.flwr("supernode", "register", str(public_key), self.connection,
                            "--name", name, check=False)  # fmt: skip
            text = out.stdout + out.stderr
            if out.returncode == 0 and "registered successfully" in out.stdout:
                return "registered"
            if "already in use" in text.lower():
                return "already registered"
            if "unavailable" not in text.lower() or time.monotonic() > deadline:
                why = "" if "unavailable" not in text.lower() else f" (for {timeout:.0f}s)"
                raise RuntimeError(f"registering {public_key} failed{why}:\n{text}")
            time.sleep(1.0)

    def online_nodes(self) -> int:
        out = self.flwr("supernode", "list", self.connection, "--format", "json", check=False)
        try:
            nodes = json.loads(out.stdout)["nodes"]
        except (ValueError, KeyError):
            return 0
        return sum(1 for n in nodes if n.get("status") == "online")

    def wait_online(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while (online := self.online_nodes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {online} of {count} SuperNodes online after {timeout}s")
            time.sleep(1.0)

    def run(self, run_config_file: Path, echo=print, timeout: float = 86400.0):  # noqa: ANN201
        """Submit a run (`flwr run`, streamed) and return its outcome with the final status."""
        return submit_run(self, run_config_file, None, stream=True, echo=echo, timeout=timeout)


def stop_state(state_dir: Path, timeout: float = 20.0) -> list[str]:
    """Stop what ``<state_dir>/processes.json`` records: the ServerApp SuperExec, SuperNodes,
    then the SuperLink.

    Returns the names of the recorded processes.
    """
    path = Path(state_dir) / "processes.json"
    if not path.exists():
        return []
    records = json.loads(path.read_text())
    for role in ("superexec", "supernode", "superlink"):
        stop_tagged([r["tag"] for r in records if r["role"] == role], timeout)
    path.unlink()
    return [r["name"] for r in records]
