"""Launcher housekeeping that needs no SuperLink: stale Ray session directories."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from immunefl.launcher import RAY_DIR_PREFIX, free_port, prune_ray_dirs


def _session(root: Path, name: str, port: int | None, age: float) -> Path:
    d = root / f"{RAY_DIR_PREFIX}{name}"
    d.mkdir()
    if port is not None:
        (d / "ray_current_cluster").write_text(f"10.0.0.1:{port}")
    then = time.time() - age
    os.utime(d, (then, then))
    return d


def test_only_old_sessions_of_heads_that_are_gone_are_removed(tmp_path: Path) -> None:
    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        alive = _session(tmp_path, "alive", live.getsockname()[1], age=3600)
        dead = _session(tmp_path, "dead", free_port(), age=3600)
        never_up = _session(tmp_path, "never", None, age=3600)
        starting = _session(tmp_path, "starting", None, age=5)  # may not have its address yet
        other = tmp_path / "not-ours"
        other.mkdir()
        removed = prune_ray_dirs(tmp_path, min_age=600)
    assert sorted(removed) == sorted([dead, never_up])
    assert alive.exists() and starting.exists() and other.exists()
    assert not dead.exists() and not never_up.exists()
