"""What a rule is to the registry and the config check: the plugin contract for strategies.

A rule class declares its hyper-parameters as ``PARAMS`` (`task.params.Param`: run-config
key, constructor argument, default, help, check) and takes them as keyword arguments with
those defaults. `RuleContract` derives the rest, the same for our rules and a user's plugin
(``strategy = "package.module:Class"``):

- ``config_problems(config)``: every problem with the parameters' values in a run config
  (typed and checked, each message naming its key), plus the rule's own combination checks
  (`round_problems`, e.g. a trim level that needs more clients than a round has);
- ``from_config(config, select_nodes)``: the strategy for a run: the base keywords every rule
  shares (`ImmuneFedAvg.base_kwargs`) and the parameters' values;
- ``set_params(**values)`` (in a constructor): checks hand-given values the same way, so a bad
  value fails when the strategy is built, naming the argument and its key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from task.params import Param, check_kwargs, config_params
from task.runconfig import RunConfig
from task.schema import ConfigError

NodeSelector = Callable[[int], list[int]]


class RuleContract:
    """Mixin: `config_problems`, `from_config` and `set_params` from ``PARAMS``."""

    PARAMS: ClassVar[tuple[Param, ...]] = ()

    @classmethod
    def config_problems(cls, config: RunConfig) -> list[str]:
        """Problems with this rule's hyper-parameters in `config` (before anything starts)."""
        try:
            values = config_params(cls, config)
        except ConfigError as exc:
            return list(exc.problems)
        except (ValueError, TypeError) as exc:
            return [str(exc)]
        return cls.round_problems(values, config)

    @classmethod
    def round_problems(cls, values: dict[str, Any], config: RunConfig) -> list[str]:
        """Checks that need more than one value (e.g. the clients of a round); none here."""
        return []

    @classmethod
    def rule_kwargs(cls, config: RunConfig) -> dict[str, Any]:
        """The constructor's keywords for a run: the shared base ones and ``PARAMS``."""
        return {**cls.base_kwargs(config), **config_params(cls, config)}  # type: ignore[attr-defined]

    @classmethod
    def from_config(cls, config: RunConfig, select_nodes: NodeSelector) -> Any:
        """Build from a checked run config; ``select_nodes(round)`` picks each round's nodes."""
        return cls(select_nodes, **cls.rule_kwargs(config))

    def set_params(self, **values: Any) -> None:
        """Check hand-given hyper-parameters (ValueError naming argument and key), set them."""
        for name, value in check_kwargs(type(self), values).items():
            setattr(self, name, value)
