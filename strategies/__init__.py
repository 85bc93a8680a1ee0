"""Server-side aggregation strategies (Flower Message API) and their registry.

`STRATEGIES` maps the run-config value of ``strategy`` to a rule class; a value of the form
``package.module:Class`` names a rule of your own (a plugin: a subclass of `ImmuneFedAvg` that
overrides ``aggregate_updates`` and declares its hyper-parameters in ``PARAMS``; see
docs/plugins.md). Every rule follows the same contract (`strategies.contract`):
``config_problems(config)`` lists every problem with its hyper-parameters before anything
starts, ``from_config(config, select_nodes)`` builds the Flower strategy for a run, and the
constructor takes the hyper-parameters as keywords, so each rule also drops into your own
Flower ServerApp (docs/flower-apps.md).
"""

from __future__ import annotations

from typing import Protocol

from flwr.serverapp.strategy import Strategy

from strategies.contract import NodeSelector, RuleContract
from strategies.defenses import (
    CenteredClippingStrategy,
    DnCStrategy,
    FlameStrategy,
    FoolsGoldStrategy,
    GeoMedStrategy,
    NormBoundStrategy,
)
from strategies.fedavg import ImmuneFedAvg
from strategies.flower_rules import BulyanStrategy, DPFixedClipping, KrumStrategy, MultiKrumStrategy
from strategies.fltrust_rule import FLTrustStrategy
from strategies.preaggregate import preaggregation_problems
from strategies.robust import (
    CDPStrategy,
    InvariantStrategy,
    MedianStrategy,
    RLRStrategy,
    SignSGDStrategy,
    TrimmedMeanStrategy,
)
from task.params import plugin_class
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
STRATEGIES: dict[str, type[RuleContract]] = {
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
    "geomed": GeoMedStrategy,
    "centered-clipping": CenteredClippingStrategy,
    "fltrust": FLTrustStrategy,
    "foolsgold": FoolsGoldStrategy,
    "flame": FlameStrategy,
    "dnc": DnCStrategy,
    "norm-bound": NormBoundStrategy,
}

__all__ = [
    "STRATEGIES",
    "BulyanStrategy",
    "CDPStrategy",
    "CenteredClippingStrategy",
    "ConfigurableStrategy",
    "DPFixedClipping",
    "DnCStrategy",
    "FLTrustStrategy",
    "FlameStrategy",
    "FoolsGoldStrategy",
    "GeoMedStrategy",
    "ImmuneFedAvg",
    "InvariantStrategy",
    "KrumStrategy",
    "MedianStrategy",
    "MultiKrumStrategy",
    "NodeSelector",
    "NormBoundStrategy",
    "RLRStrategy",
    "SignSGDStrategy",
    "TrimmedMeanStrategy",
    "build_strategy",
    "strategy_class",
    "strategy_problems",
]


def strategy_class(name: str) -> type[RuleContract]:
    """The rule a ``strategy`` value names: a built-in, or a plugin ``package.module:Class``
    (which must subclass `ImmuneFedAvg`); ValueError listing the valid names otherwise."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    return plugin_class(name, "strategy", ImmuneFedAvg, STRATEGIES, "a rule")


def strategy_problems(config: RunConfig) -> list[str]:
    """Problems with the configured strategy's name or hyper-parameters, and with the
    pre-aggregators in front of it (`strategies.preaggregate`)."""
    try:
        cls = strategy_class(config.strategy)
    except (ValueError, TypeError) as exc:
        return [str(exc)]
    return preaggregation_problems(config, cls) + cls.config_problems(config)


def build_strategy(config: RunConfig, select_nodes: NodeSelector) -> Strategy:
    """Instantiate the strategy named by ``config.strategy``."""
    return strategy_class(config.strategy).from_config(config, select_nodes)
