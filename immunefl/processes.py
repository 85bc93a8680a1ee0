"""Process supervision for the host tools: start, tag, stop and reap what a launcher starts.

Every process a launcher starts carries a unique ``IMMUNEFL_SIM_TAG`` in its environment,
inherited by all its descendants (the SuperLink detaches its SuperExec, so process groups do not
cover them); `stop_tagged` ends every live process carrying a tag (SIGTERM, then SIGKILL), and
the `Reaper` watchdog (`immunefl.reaper`) does so when the launcher dies, even of SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

TAG_VAR = "IMMUNEFL_SIM_TAG"


def find_bin(name: str) -> str:
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


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
