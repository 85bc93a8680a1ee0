"""Server-side aggregation strategies (Flower Message API) and their registry.

`STRATEGIES` maps the run-config value of ``strategy`` to a class with a
``from_config(config, select_nodes)`` constructor; `build_strategy` looks names up and raises an
error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from strategies.fedavg import ImmuneFedAvg, NodeSelector

STRATEGIES: dict[str, type[ImmuneFedAvg]] = {
    "fedavg": ImmuneFedAvg,
}

__all__ = ["STRATEGIES", "ImmuneFedAvg", "NodeSelector", "build_strategy"]


def build_strategy(config: Mapping[str, Any], select_nodes: NodeSelector) -> ImmuneFedAvg:
    """Instantiate the strategy named by ``config["strategy"]``."""
    name = config["strategy"]
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name].from_config(config, select_nodes)
