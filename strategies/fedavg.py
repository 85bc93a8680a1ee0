"""FedAvg over explicit, server-chosen participants — the base of every immunefl strategy.

What every rule inherits:

- **Participants** come from ``select_nodes(server_round) -> node ids`` (built by the ServerApp
  from its seeded scenario); Flower's own `FedAvg.configure_train` samples with an unseeded RNG.
- **Screening** of every reply (`strategies.updates.screen_replies`): malformed, non-finite or
  oversized updates are rejected, logged with node id and reason, and counted
  (``rejected_replies``); the round aggregates the rest if at least ``min-replies`` remain,
  otherwise it is skipped and the global model is unchanged. A rule that cannot run on the
  replies left (too few to trim, say) also skips the round instead of crashing the server.
- **Pseudo-gradients**: rules see ``U (n, d)``, ``U_i = W_i - W_global``, stacked once on the
  aggregation device, and return one update ``g~ (d,)``; the new global is
  ``W_global + server_lr * g~``. FedAvg's rule is the example-weighted mean.
- **Diagnostics** (aggregation wall time and what the rule reports) join the round's metrics.

Subclasses override `aggregate_updates` only (and `from_config`/`config_problems` for their
hyper-parameters).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.mean import weighted_mean
from strategies.updates import Layout, Screened, apply_update, screen_replies

NodeSelector = Callable[[int], list[int]]
Diagnostics = dict[str, float | list[float]]


def mean_client_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Per key, the example-weighted mean over the replies that report the key.

    Replies need not share keys (malicious nodes report fewer, FL-WBC nodes report
    ``wbc_perturbed_fraction``): a key is averaged over the nodes that sent it, never diluted by
    those that did not (Flower's `aggregate_metricrecords` treats a missing key as 0).
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for record in records:
        for metrics in record.metric_records.values():
            w = float(metrics.get(weight_key, 0.0))
            for key, value in metrics.items():
                if key == weight_key or isinstance(value, list):
                    continue
                sums[key] = sums.get(key, 0.0) + w * float(value)
                weights[key] = weights.get(key, 0.0) + w
    return MetricRecord({k: sums[k] / weights[k] for k in sums if weights[k] > 0})


class ImmuneFedAvg(FedAvg):
    """Federated Averaging (McMahan et al., 2017) with screening, on pseudo-gradients.

    Parameters
    ----------
    select_nodes : callable
        ``select_nodes(server_round)`` returns the node ids to train in that round.
    federated_eval : bool
        Also evaluate on the round's participants (client-side evaluation).
    min_replies : int
        Fewest accepted replies a round needs to update the model.
    max_update_norm : float
        Reject updates whose L2 norm exceeds this (0 = no limit).
    server_lr : float
        Server step size applied to the aggregated pseudo-gradient.
    device : str
        Aggregation device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        select_nodes: NodeSelector,
        federated_eval: bool = False,
        min_replies: int = 1,
        max_update_norm: float = 0.0,
        server_lr: float = 1.0,
        device: str = "auto",
    ) -> None:
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0 if federated_eval else 0.0,
            min_train_nodes=1,
            min_evaluate_nodes=1 if federated_eval else 0,
            min_available_nodes=1,
        )
        from immunefl.training import resolve_device

        self.select_nodes = select_nodes
        self.min_replies = int(min_replies)
        self.max_update_norm = float(max_update_norm)
        self.server_lr = float(server_lr)
        self.device = resolve_device(device)
        self._last_train_nodes: list[int] = []
        self._global: ArrayRecord | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def base_kwargs(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "federated_eval": bool(config["federated-eval"]),
            "min_replies": int(config["min-replies"]),
            "max_update_norm": float(config["max-update-norm"]),
            "server_lr": float(config["server-lr"]),
            "device": str(config["device"]),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], select_nodes: NodeSelector) -> ImmuneFedAvg:
        """Build from a validated run config (subclasses add their own keys)."""
        return cls(select_nodes, **cls.base_kwargs(config))

    @classmethod
    def config_problems(cls, config: Mapping[str, Any]) -> list[str]:
        """Problems with this rule's hyper-parameters for `config` (checked before round 1)."""
        return []

    # ----------------------------------------------------------------- configure
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
        self._global = arrays
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

    # ----------------------------------------------------------------- aggregate
    def screen(self, server_round: int, replies: Iterable[Message]) -> Screened:
        """Screen replies against the arrays broadcast this round; log every rejection."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        # Replies arrive in any order; aggregate them in the order the nodes were chosen, so
        # floating-point sums (and therefore whole runs) do not depend on network timing.
        rank = {node: i for i, node in enumerate(self._last_train_nodes)}
        ordered = sorted(
            replies, key=lambda m: (rank.get(m.metadata.src_node_id, len(rank)),
                                    m.metadata.src_node_id),
        )  # fmt: skip
        screened = screen_replies(
            ordered, self._global, Layout.of(self._global), self.device, self.max_update_norm
        )
        for node, reason in screened.failed:
            log(WARNING, "round %d: node %d failed: %s", server_round, node, reason)
        for node, reason in screened.rejected:
            log(WARNING, "round %d: rejected reply from node %d: %s", server_round, node, reason)
        return screened

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, aggregate pseudo-gradients with the rule, step the global model."""
        t0 = time.perf_counter()
        screened = self.screen(server_round, replies)
        diag: Diagnostics = {
            "rejected_replies": len(screened.rejected),
            "aggregated_replies": len(screened.accepted),
            "update_norms": screened.norms,
        }
        arrays: ArrayRecord | None = None
        if len(screened.accepted) < self.min_replies:
            log(
                WARNING,
                "round %d skipped: %d accepted replies < min-replies %d; global model unchanged",
                server_round, len(screened.accepted), self.min_replies,
            )  # fmt: skip
        else:
            try:
                arrays, extra = self.aggregate_accepted(server_round, screened)
                diag.update(extra)
            except ValueError as exc:
                log(WARNING, "round %d skipped: %s; global model unchanged", server_round, exc)
                diag["aggregated_replies"] = 0
        diag["aggregate_seconds"] = time.perf_counter() - t0
        metrics = MetricRecord(diag)
        if screened.accepted:
            client = mean_client_metrics(
                [m.content for m in screened.accepted], self.weighted_by_key
            )
            for key, value in client.items():
                metrics[key] = value
        log(INFO, "round %d aggregated %d replies", server_round, diag["aggregated_replies"])
        return arrays, metrics

    def aggregate_accepted(
        self, server_round: int, screened: Screened
    ) -> tuple[ArrayRecord, Diagnostics]:
        """Run the pseudo-gradient rule on the accepted replies (overridable as a whole)."""
        assert self._global is not None and screened.updates is not None
        update, diag = self.aggregate_updates(screened.updates, screened.weights, server_round)
        layout = Layout.of(self._global)
        return apply_update(self._global, layout, update * self.server_lr, screened.accepted), diag

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        """The aggregation rule on ``U (n, d)``; FedAvg: the example-weighted mean."""
        return weighted_mean(U, weights), {}
