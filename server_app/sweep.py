"""The sweep engine: every point of a sweep in one Flower run, on the same nodes.

A separate `flwr run` per point pays a new simulation process, the app's install, Ray actors
that import torch and load data again; here the ServerApp runs the points one after another,
so the actors stay warm. The host (`immunefl sweep`) writes the points to a JSON file and
names it in ``sweep-file``; each point keeps everything a run of its own has: its config
(checked again here), seed streams and scenario, results directory, config.json, summary.json,
checkpoint and resume. The nodes learn a point's config from the messages themselves: every
message of a point carries a ``point`` record with the point's differences from the Flower
run's config (`PointGrid`), which the ClientApp lays over its run config. A point that fails
is recorded as failed (its summary.json) and the next one runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from logging import ERROR, INFO
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message
from flwr.common.logger import log
from flwr.serverapp import Grid

from server_app.checks import CHECKS
from server_app.experiment import run_experiment
from task import messages as M
from task.runconfig import RunConfig
from task.runlock import claimed

MAX_POINTS_FILE = 64 * 1024 * 1024


class PointGrid:
    """A grid whose every pushed message carries the point's config overrides."""

    def __init__(self, grid: Grid, overrides: Mapping[str, Any]) -> None:
        self.grid = grid
        self.overrides = json.dumps(dict(overrides), sort_keys=True)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        marked = []
        for msg in messages:
            msg.content[M.POINT] = ConfigRecord({M.OVERRIDES: self.overrides})
            marked.append(msg)
        return self.grid.push_messages(marked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


def load_points(path: str) -> list[dict[str, Any]]:
    """The points of a sweep file: ``{"points": [{"name": ..., "config": {...}}, ...]}``."""
    file = Path(path)
    if file.stat().st_size > MAX_POINTS_FILE:
        raise ValueError(f"'sweep-file' {path} is larger than {MAX_POINTS_FILE} bytes")
    data = json.loads(file.read_text())
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list) or not all(
        isinstance(p, dict) and isinstance(p.get("config"), dict) for p in points
    ):
        raise ValueError(f"'sweep-file' {path}: expected {{'points': [{{'config': {{...}}}}]}}")
    return points


def overrides_of(point: Mapping[str, Any], carrier: Mapping[str, Any]) -> dict[str, Any]:
    """What a point's config changes in the Flower run's (the nodes' ``context.run_config``).

    >>> overrides_of({"seed": 1, "lr": 0.1, "sweep-file": ""}, {"seed": 0, "lr": 0.1,
    ...              "sweep-file": "/s.json"})
    {'seed': 1, 'sweep-file': ''}
    """
    return {k: v for k, v in point.items() if carrier.get(k) != v}


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h {m % 60:02d}m" if m >= 60 else f"{m}m {s:02d}s"


def run_sweep(
    grid: Grid, run_id: int, carrier: Mapping[str, Any], config: RunConfig, simulation: bool
) -> list[str]:
    """Run every point of ``config.sweep_file``; return each point's status."""
    points = load_points(config.sweep_file)
    t0 = time.monotonic()
    statuses: list[str] = []
    for i, point in enumerate(points, 1):
        name = str(point.get("name", i))
        done = time.monotonic() - t0
        eta = f", ETA {_hms(done / (i - 1) * (len(points) - i + 1))}" if i > 1 else ""
        log(INFO, "[immunefl] sweep point %d/%d: %s (elapsed %s%s)", i, len(points), name,
            _hms(done), eta)  # fmt: skip
        try:
            mapping = {**point["config"], "sweep-file": ""}
            cfg = RunConfig.from_mapping(mapping, checks=CHECKS).named()
            if cfg.num_partitions != config.num_partitions:
                raise ValueError(
                    f"'num-partitions' {cfg.num_partitions} differs from the federation's "
                    f"{config.num_partitions}: run it in a Flower run of its own"
                )
            point_grid = PointGrid(grid, overrides_of(cfg.as_mapping(), carrier))
            with claimed(cfg.run_dir, command=f"ServerApp of run {run_id} (sweep point {i})"):
                summary = run_experiment(point_grid, cfg, run_id, simulation)  # type: ignore[arg-type]
            statuses.append(str(summary["status"]))
        except Exception as exc:  # noqa: BLE001 - one point's failure never stops the others
            log(ERROR, "[immunefl] sweep point %d/%d (%s) failed: %s: %s", i, len(points), name,
                type(exc).__name__, exc)  # fmt: skip
            statuses.append("failed")
    log(INFO, "[immunefl] sweep done: %d points in %s, %d failed", len(points),
        _hms(time.monotonic() - t0), statuses.count("failed"))  # fmt: skip
    return statuses
