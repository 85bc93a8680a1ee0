"""ServerApp: validate the config, then run its experiment, or every point of a sweep on the
same nodes (`server_app.sweep`: warm actors, one Flower run)."""

from __future__ import annotations

import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server_app.checks import CHECKS
from server_app.experiment import run_experiment
from server_app.sweep import run_sweep
from task.runconfig import RunConfig
from task.runlock import claimed

app = ServerApp()


def _in_simulation(grid: Grid) -> bool:
    """Whether the ServerApp runs on the simulation engine (every node is ours there)."""
    try:
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid
    except ImportError:  # pragma: no cover - a Flower without it: treat as a deployment
        return False
    return isinstance(grid, InMemoryGrid)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the experiment the run config describes (or the points of its ``sweep-file``)."""
    started = time.time()
    # the whole config is judged here too (a plain `flwr run .` has no host tool in front)
    config = RunConfig.from_mapping(context.run_config, checks=CHECKS).named()
    simulation = _in_simulation(grid)
    if config.sweep_file:
        run_sweep(grid, context.run_id, dict(context.run_config), config, simulation)
        return
    # one run per directory: our launcher's claim, or our own (a plain `flwr run .`, deployment)
    with claimed(config.run_dir, command=f"ServerApp of run {context.run_id}"):
        run_experiment(grid, config, context.run_id, simulation, started)
