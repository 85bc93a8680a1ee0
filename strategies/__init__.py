"""Server-side aggregation strategies (Flower Message API) and their registry.

`STRATEGIES` maps the run-config value of ``strategy`` to a class that implements
`ConfigurableStrategy`: ``config_problems(config)`` (every problem with its hyper-parameters,
before anything starts) and ``from_config(config, select_nodes)`` (the Flower strategy);
`build_strategy` looks names up and raises an error listing the valid ones.
"""

from __future__ import annotations

from typing import Protocol

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
from task.runconfig import RunConfig


class ConfigurableStrategy(Protocol):
    """What a registry entry is: a Flower strategy class built from the run config."""

    def config_problems(self, config: RunConfig) -> list[str]:
        """Problems with the rule's run-config keys (messages name key and value)."""
        ...

    def from_config(self, config: RunConfig, select_nodes: NodeSelector) -> Strategy:
        """The strategy for this run; ``select_nodes(round)`` gives the round's node ids."""
        ...


#: run-config value of ``strategy`` -> its class
STRATEGIES: dict[str, ConfigurableStrategy] = {
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

__all__ = [
    "STRATEGIES",
    "ConfigurableStrategy",
    "ImmuneFedAvg",
    "NodeSelector",
    "build_strategy",
    "strategy_problems",
]


def strategy_problems(config: RunConfig) -> list[str]:
    """Problems with the configured strategy's name or hyper-parameters."""
    name = config.strategy
    if name not in STRATEGIES:
        return [f"'strategy' is '{name}'; valid: {', '.join(STRATEGIES)}"]
    return STRATEGIES[name].config_problems(config)


def build_strategy(config: RunConfig, select_nodes: NodeSelector) -> Strategy:
    """Instantiate the strategy named by ``config.strategy``."""
    name = config.strategy
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name].from_config(config, select_nodes)
