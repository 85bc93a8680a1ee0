"""FedAvg with explicit, server-chosen participants — the base of every immunefl strategy.

Flower's `FedAvg.configure_train` samples nodes itself with an unseeded RNG. Threat scenarios
need exact node sets (who attacks in which round) and runs must be reproducible, so here
participants come from a `select_nodes(server_round) -> node ids` callable that the ServerApp
builds from its seeded scenario. Everything else (message building, reply checks, weighted
averaging) stays Flower's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

NodeSelector = Callable[[int], list[int]]


class ImmuneFedAvg(FedAvg):
    """Federated Averaging (McMahan et al., 2017) over the nodes `select_nodes` names.

    Parameters
    ----------
    select_nodes : callable
        ``select_nodes(server_round)`` returns the node ids to train in that round.
    federated_eval : bool
        Also evaluate on the round's participants (client-side evaluation).
    """

    def __init__(self, select_nodes: NodeSelector, federated_eval: bool = False) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0 if federated_eval else 0.0,
            min_train_nodes=1,
            min_evaluate_nodes=1 if federated_eval else 0,
            min_available_nodes=1,
        )
        self.select_nodes = select_nodes
        self._last_train_nodes: list[int] = []

    @classmethod
    def from_config(cls, config: Mapping[str, Any], select_nodes: NodeSelector) -> ImmuneFedAvg:
        """Build from a validated run config (subclasses read their own keys)."""
        return cls(select_nodes, federated_eval=bool(config["federated-eval"]))

    def _messages(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: list[int],
        message_type: str,
    ) -> Iterable[Message]:
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, message_type)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One TRAIN message per node chosen by `select_nodes` for this round."""
        self._last_train_nodes = list(self.select_nodes(server_round))
        return self._messages(
            server_round, arrays, config, self._last_train_nodes, MessageType.TRAIN
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Client-side evaluation (when enabled) on the round's training participants."""
        if self.fraction_evaluate == 0.0:
            return []
        return self._messages(
            server_round, arrays, config, self._last_train_nodes, MessageType.EVALUATE
        )
