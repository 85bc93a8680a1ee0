"""What a deployment host can find out by itself: whether each SuperNode it started got in, and
why not; whether a SuperLink address is loopback; the SuperExec shared secret.

`flwr supernode list` needs the SuperLink's Control API, which a node host may not reach (it
should not, docs/security.md), so `wait_for_nodes` decides from each SuperNode's own process
and log. What Flower 1.42 logs, measured with local processes (``tests/test_deploy_checks.py``):

- online: ``SuperNode ID: <id>`` (after the SuperLink activated the node);
- wrong CA: ``[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local
  issuer certificate``, exit code 305;
- a certificate for another name: ``... certificate verify failed: IP address mismatch,
  certificate is not valid for '127.0.0.2'`` (``Hostname mismatch`` for a DNS name), exit 305;
- a TLS node against an insecure SuperLink: ``[SSL: WRONG_VERSION_NUMBER]``, exit 305;
- an unregistered key: ``[code: 2004] Failed to activate SuperNode.``, exit 305;
- no key against an authenticating SuperLink: ``[code: 2001] SuperNode authentication is
  enabled. All SuperNodes must be registered via the CLI.``, exit 305;
- an insecure node against a TLS SuperLink, or no SuperLink at all: nothing but ``Connection
  attempt failed, retrying in N seconds``, for ever. Only a probe of the address tells these
  apart (`probe_superlink`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ONLINE = re.compile(r"SuperNode ID: (\d+)")
NAME_MISMATCH = re.compile(
    r"certificate verify failed: (?:IP address|Hostname) mismatch, certificate is not valid "
    r"for '([^']+)'"
)
VERIFY_FAILED = re.compile(r"certificate verify failed: ([^(\n]+?)\s*(?:\(_ssl|$)", re.M)
NOT_OUR_CA = ("unable to get local issuer certificate", "self-signed certificate",
              "self signed certificate")  # fmt: skip
FLOWER_EXIT = re.compile(r"Exit Code: (\d+)\n(.*?)\n(?:\n|For more information)", re.S)
SECRET_BYTES = 32


@dataclass(frozen=True)
class StartedNode:
    """A SuperNode process this host started, with what it was given."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    key: Path | None = None


@dataclass(frozen=True)
class NodeStatus:
    name: str
    online: bool
    reason: str = ""
    node_id: str = ""


def explain_refusal(text: str, superlink: str, certs: Path | None, key: Path | None) -> str:
    """Why a SuperNode's log says the SuperLink refused it, in our words ("" when it does not)."""
    ca = f"--certs {certs}" if certs is not None else "no --certs"
    if m := NAME_MISMATCH.search(text):
        return (f"TLS: certificate name mismatch: the SuperLink's certificate is not valid for "
                f"'{m[1]}' (the host in --superlink {superlink}); use a name the certificate "
                f"holds, or make it with `immunefl deploy certs DIR {m[1]}` on the SuperLink "
                "host")  # fmt: skip
    if m := VERIFY_FAILED.search(text):
        if any(s in m[1] for s in NOT_OUR_CA):
            return (f"TLS: the SuperLink's certificate is not signed by the CA you gave ({ca}: "
                    f"{certs / 'ca.crt' if certs else ''}); copy the ca.crt of the SuperLink "
                    "host's certificates")  # fmt: skip
        return f"TLS: the SuperLink's certificate was refused: {m[1].strip()}"
    if "WRONG_VERSION_NUMBER" in text:
        return (f"TLS: the SuperLink at {superlink} does not speak TLS (started with "
                "--insecure?); start it with --certs, or these nodes with --insecure")  # fmt: skip
    if "[code: 2004]" in text or "Failed to activate SuperNode" in text:
        return (f"SuperNode authentication: the SuperLink does not know this node's key "
                f"({key}.pub is not registered; the operator runs `immunefl deploy register "
                f"--keys DIR` with it)")  # fmt: skip
    if "[code: 2001]" in text:
        return ("SuperNode authentication: the SuperLink admits registered nodes only and this "
                "node has no key; give --keys DIR")  # fmt: skip
    return ""


def probe_superlink(address: str, timeout: float = 3.0) -> str:
    """``"tls"``, ``"plain"`` (a server that is not TLS), or why nothing answered at `address`."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except ConnectionRefusedError:
        return "connection refused: nothing listens there"
    except TimeoutError:
        return f"no answer within {timeout:.0f}s (wrong address, or a firewall between the hosts)"
    except OSError as exc:
        return f"unreachable: {exc.strerror or exc}"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with sock:
        sock.settimeout(timeout)
        try:
            context.wrap_socket(sock, server_hostname=host).close()
        except (ssl.SSLError, OSError):
            return "plain"
    return "tls"


def _undecided_reason(superlink: str, certs: Path | None, timeout: float) -> str:
    probe = probe_superlink(superlink)
    if probe == "tls" and certs is None:
        return (f"TLS: the SuperLink at {superlink} speaks TLS but this node was started with "
                "--insecure; give --certs DIR (holding the SuperLink's ca.crt)")  # fmt: skip
    if probe in ("tls", "plain"):
        return (f"not online after {timeout:.0f}s although the SuperLink at {superlink} "
                "answers (Flower still retrying)")  # fmt: skip
    return f"no SuperLink at {superlink}: {probe}"


def _exit_reason(text: str, code: int | None) -> str:
    if m := FLOWER_EXIT.search(text):
        detail = " ".join(line.strip() for line in m[2].splitlines() if line.strip())
        return f"exited (Flower exit code {m[1]}): {detail}"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-3:]
    return f"exited (code {code}) before it was online; its log ends: {' | '.join(tail)}"


def wait_for_nodes(
    nodes: list[StartedNode],
    superlink: str,
    certs: Path | None,
    timeout: float,
    poll: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> list[NodeStatus]:
    """Wait until each node is online at the SuperLink, was refused, exited, or `timeout` ends.

    A node whose log names a refusal is refused even while Flower is still shutting it down;
    one still undecided at the deadline gets the reason a probe of the SuperLink gives.
    """
    decided: dict[str, NodeStatus] = {}
    deadline = clock() + timeout
    while True:
        for node in nodes:
            if node.name in decided:
                continue
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            if m := ONLINE.search(text):
                decided[node.name] = NodeStatus(node.name, True, node_id=m[1])
            elif why := explain_refusal(text, superlink, certs, node.key):
                decided[node.name] = NodeStatus(node.name, False, why)
            elif (code := node.process.poll()) is not None:
                decided[node.name] = NodeStatus(node.name, False, _exit_reason(text, code))
        if len(decided) == len(nodes) or clock() > deadline:
            break
        time.sleep(poll)
    undecided = [n for n in nodes if n.name not in decided]
    if undecided:
        why = _undecided_reason(superlink, certs, timeout)
        for node in undecided:
            decided[node.name] = NodeStatus(node.name, False, why)
    return [decided[n.name] for n in nodes]


# ---------------------------------------------------------------- SuperLink address and secret
def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server on this machine (``""``/0.0.0.0: every interface)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def check_secret_file(path: Path) -> Path:
    """A secret file the user gave: a non-empty regular file only its owner can read."""
    if not path.is_file():
        raise ValueError(f"--superexec-secret {path}: no such file")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"--superexec-secret {path}: other users may read it (mode "
                         f"{stat.S_IMODE(mode):o}); chmod 600 {path}")  # fmt: skip
    if path.stat().st_size == 0:
        raise ValueError(f"--superexec-secret {path}: the file is empty")
    return path


def generate_secret(path: Path) -> Path:
    """A new random secret (raw bytes, mode 600) at `path`, replacing an older one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(SECRET_BYTES))
    return path


def superexec_secret(
    bind_host: str, given: Path | None, opt_out: bool, state_dir: Path
) -> Path | None:
    """The SuperExec secret file `immunefl deploy superlink` uses, or None (see its --help)."""
    if given is not None and opt_out:
        raise ValueError("--superexec-secret and --no-superexec-secret contradict each other")
    if given is not None:
        return check_secret_file(given)
    if opt_out or is_loopback(bind_host):
        return None
    return generate_secret(state_dir / "superexec.secret")
