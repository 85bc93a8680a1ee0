"""The watchdog that takes a launcher's federation with it when the launcher dies.

`immunefl run` starts a SuperLink, and through it a SuperExec, the simulation process and a Ray
cluster; most of them run in sessions of their own, so they outlive a launcher killed with
SIGKILL (no handler runs then) and finish the run unseen. `LocalSimulation` therefore starts
this reaper first: ``python -m immunefl.reaper --tag TAG [--remove DIR ...]`` with its standard
input the read end of a pipe whose write end only the launcher holds. The reaper blocks on
that pipe; whatever way the launcher ends (normal exit, exception, SIGTERM, SIGKILL, OOM), the
kernel closes the write end and the read returns EOF. The reaper then stops every process that
carries ``IMMUNEFL_SIM_TAG=TAG`` in its environment (SIGTERM, then SIGKILL), sweeping again until
none is left (a process may be forked while a sweep runs, and a SIGKILLed process may take a
moment to go), removes the given directories (the Ray head's session files, the SuperLink's
home) and exits. After a normal stop there is nothing left to do and it exits at once.

It imports nothing heavy and carries no tag itself.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from immunefl.processes import stop_tagged, tagged_pids


def reap(tags: list[str], remove: list[str], deadline_seconds: float = 60.0) -> int:
    """Stop every process carrying one of `tags`, until none is left or the deadline passes;
    then remove `remove`. Returns the number of processes still alive (0 on success)."""
    deadline = time.monotonic() + deadline_seconds
    while any(tagged_pids(t) for t in tags) and time.monotonic() < deadline:
        stop_tagged(tags, timeout=5.0)
    left = sum(len(tagged_pids(t)) for t in tags)
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m immunefl.reaper", description=__doc__)
    parser.add_argument("--tag", action="append", required=True)
    parser.add_argument("--remove", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        while sys.stdin.buffer.read(4096):  # the launcher never writes: this waits for EOF
            pass
    except (OSError, KeyboardInterrupt):
        pass
    return 1 if reap(args.tag, args.remove) else 0


if __name__ == "__main__":
    sys.exit(main())
