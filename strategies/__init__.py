"""Server-side aggregation strategies (Flower Message API) and their registry.

`STRATEGIES` maps the run-config value of ``strategy`` to a class with
``from_config(config, select_nodes)`` and ``config_problems(config)``; `build_strategy` looks
names up and raises an error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flwr.serverapp.strategy import Strategy

from strategies.fedavg import ImmuneFedAvg, NodeSelector
from strategies.flower_rules import BulyanStrategy, DPFixedClipping, KrumStrategy, MultiKrumStrategy
from strategies.robust import (
    CDPStrategy,
    InvariantStrategy,
    MedianStrategy,
    RLRStrategy,
    SignSGDStrategy,
    TrimmedMeanStrategy,
)

STRATEGIES: dict[str, Any] = {
    "fedavg": ImmuneFedAvg,
    "median": MedianStrategy,
    "trimmed-mean": TrimmedMeanStrategy,
    "invariant": InvariantStrategy,
    "rlr": RLRStrategy,
    "signsgd": SignSGDStrategy,
    "cdp": CDPStrategy,
    "krum": KrumStrategy,
    "multikrum": MultiKrumStrategy,
    "bulyan": BulyanStrategy,
    "dp-fixed": DPFixedClipping,
}

__all__ = ["STRATEGIES", "ImmuneFedAvg", "NodeSelector", "build_strategy", "strategy_problems"]


def strategy_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems with the configured strategy's name or hyper-parameters."""
    name = config["strategy"]
    if name not in STRATEGIES:
        return [f"'strategy' is '{name}'; valid: {', '.join(STRATEGIES)}"]
    return STRATEGIES[name].config_problems(config)


def build_strategy(config: Mapping[str, Any], select_nodes: NodeSelector) -> Strategy:
    """Instantiate the strategy named by ``config["strategy"]``."""
    name = config["strategy"]
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name].from_config(config, select_nodes)
