"""FedAvg over explicit, server-chosen participants — the base of every immunefl strategy.

What every rule inherits:

- **Participants** come from ``select_nodes(server_round) -> node ids`` (built by the ServerApp
  from its seeded scenario); Flower's own `FedAvg.configure_train` samples with an unseeded RNG.
- **Screening** of every field of every reply (`strategies.updates`): extra records, bad
  metrics, arrays whose bytes disagree with the model, non-finite or oversized updates are
  rejected, logged with node id and reason, and counted (``rejected_replies``); claimed example
  counts are capped (``weight_capped``). The round aggregates the rest if at least
  ``min-replies`` remain, otherwise it is skipped and the global model is unchanged. A rule that
  fails on the replies left (too few to trim, say) also skips the round instead of crashing the
  server. `last_screened` keeps the outcome for the round loop (outcomes by role).
- **Client metrics** come back as ``client.<key>`` (weighted per key over the replies reporting
  it), so no client can write a key of the server's own bookkeeping.
- **Evaluate replies** are screened the same way (`aggregate_evaluate`).
- **Pseudo-gradients**: rules see ``U (n, d)``, ``U_i = W_i - W_global``, stacked once on the
  aggregation device, and return one update ``g~ (d,)``; the new global is
  ``W_global + server_lr * g~``. FedAvg's rule is the example-weighted mean.
- **Pre-aggregation** (``pre-aggregator``: bucketing, NNM, clipping; `strategies.preaggregate`)
  maps ``U`` to the rows the rule combines, in `aggregate_accepted`.
- **Diagnostics** (aggregation wall time and what the rule reports) join the round's metrics.
- **Server state** a rule keeps across rounds (FoolsGold's histories, a centre) goes through
  `server_state` / `load_server_state` into the checkpoint, so a resumed run is bit-identical.

Subclasses override `aggregate_updates` only, declare their hyper-parameters in ``PARAMS`` and
take them as keyword arguments (`strategies.contract`): that is the whole plugin contract.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.contract import NodeSelector, RuleContract
from strategies.mean import weighted_mean
from strategies.preaggregate import PreAggregation
from strategies.updates import (
    EVAL_PREFIX,
    METRICS_KEY,
    Layout,
    ReplyRejected,
    Screened,
    apply_update,
    cap_weights,
    client_metrics,
    mean_client_metrics,
    only_records,
    screen_replies,
    sender_problem,
)
from task import messages as M
from task.runconfig import RunConfig

Diagnostics = dict[str, float | list[float]]


class ImmuneFedAvg(RuleContract, FedAvg):
    """Federated Averaging (McMahan et al., 2017) with screening, on pseudo-gradients.

    Built like Flower's `FedAvg` in your own ServerApp (``ImmuneFedAvg()`` or a rule such as
    ``TrimmedMeanStrategy(beta=0.2, fraction_train=0.5)``), or by immunefl's ServerApp with
    ``select_nodes`` (`from_config`).

    Parameters
    ----------
    select_nodes : callable, optional
        ``select_nodes(server_round)`` returns the node ids to train in that round (immunefl's
        seeded scenario). Without it, nodes are sampled as Flower's FedAvg samples them, from
        ``fraction_train`` / ``fraction_evaluate`` of the connected nodes, waiting for
        ``min_available_nodes`` (and ``min_train_nodes`` / ``min_evaluate_nodes``).
    federated_eval : bool, optional
        Client-side evaluation on the round's participants. Default: on when nodes are sampled
        by Flower's rule and ``fraction_evaluate`` > 0, off with ``select_nodes``.
    min_replies : int
        Fewest accepted replies a round needs to update the model.
    max_update_norm : float
        Reject updates whose L2 norm exceeds this (0 = no limit).
    server_lr : float
        Server step size applied to the aggregated pseudo-gradient.
    device : str
        Aggregation device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    weight_cap_ratio : float
        A claimed example count is capped at this many times the round's median claim
        (`strategies.updates.cap_weights`).
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes :
        Flower's sampling arguments (used without ``select_nodes``; with it, refused unless left
        at their defaults, so that nothing is silently ignored).
    pre_aggregation : PreAggregation, optional
        Pre-aggregators applied to the stacked updates before the rule (`strategies.preaggregate`).
    weighted_by_key, arrayrecord_key, configrecord_key :
        Flower's record names; replies are screened against ``num-examples``, ``arrays`` and
        ``metrics``, so other values are refused.
    """

    def __init__(
        self,
        select_nodes: NodeSelector | None = None,
        *,
        federated_eval: bool | None = None,
        min_replies: int = 1,
        max_update_norm: float = 0.0,
        server_lr: float = 1.0,
        device: str = "auto",
        weight_cap_ratio: float = 2.0,
        pre_aggregation: PreAggregation | None = None,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = M.WEIGHT,
        arrayrecord_key: str = M.ARRAYS,
        configrecord_key: str = M.CONFIG,
    ) -> None:
        sampling = (fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes,
                    min_available_nodes)  # fmt: skip
        if select_nodes is not None and sampling != (1.0, 1.0, 2, 2, 2):
            raise ValueError(
                "Flower's sampling arguments (fraction_*, min_*_nodes) choose nodes only "
                "without select_nodes; with select_nodes they would be ignored"
            )
        names = {"weighted_by_key": (weighted_by_key, M.WEIGHT),
                 "arrayrecord_key": (arrayrecord_key, M.ARRAYS),
                 "configrecord_key": (configrecord_key, M.CONFIG)}  # fmt: skip
        for arg, (value, ours) in names.items():
            if value != ours:
                raise ValueError(f"{arg}={value!r}: replies are screened against {ours!r}")
        if not 0.0 <= fraction_train <= 1.0 or not 0.0 <= fraction_evaluate <= 1.0:
            raise ValueError("fraction_train and fraction_evaluate must be in [0, 1]")
        if federated_eval is None:
            federated_eval = select_nodes is None and fraction_evaluate > 0
        # Flower's FedAvg would warn that federated evaluation is skipped when
        # fraction_evaluate is 0.0; our own flag decides, so Flower's stays positive
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate if fraction_evaluate > 0 else 1.0,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes if federated_eval else 0,
            min_available_nodes=min_available_nodes,
        )
        from task.training import resolve_device

        if int(min_replies) < 1:
            raise ValueError(f"min_replies must be >= 1, got {min_replies}")
        if not float(weight_cap_ratio) >= 1:
            raise ValueError(f"weight_cap_ratio must be >= 1, got {weight_cap_ratio}")
        self.federated_eval = bool(federated_eval)
        self.select_nodes = select_nodes
        self.min_replies = int(min_replies)
        self.max_update_norm = float(max_update_norm)
        self.server_lr = float(server_lr)
        self.device = resolve_device(device)
        self.weight_cap_ratio = float(weight_cap_ratio)
        self.pre_aggregation = pre_aggregation
        #: node id -> a key that outlives the SuperLink (partition id) for rules that remember
        self.client_keys: dict[int, int] = {}
        #: the accepted nodes of the round being aggregated, in the order of the rows of U
        self.round_nodes: list[int] = []
        self._last_train_nodes: list[int] = []
        self._last_eval_nodes: list[int] = []
        self._global: ArrayRecord | None = None
        #: example counts the nodes reported at discovery (node id -> count): claims are capped
        self.reported_sizes: dict[int, float] = {}
        #: `weighting` (claimed | equal | assigned) and the sizes the server assigned (node id ->
        #: size), set like `reported_sizes` by the ServerApp (`strategies.updates.screen_replies`)
        self.weighting, self.assigned_sizes = "claimed", {}
        #: the last round's screening outcome (the round loop reads it: outcomes by role)
        self.last_screened = Screened()
        self.last_eval = Screened()
        #: set while a wrapper (dp-fixed) hands back copies of replies this strategy screened
        self.resubmission = False

    def summary(self) -> None:
        """Log what this strategy does (Flower's `start` calls it), not Flower's defaults."""
        how = ("select_nodes (the scenario's seeded choice)" if self.select_nodes is not None
               else f"Flower's sampling: fraction_train {self.fraction_train}, "
                    f"min_available_nodes {self.min_available_nodes}")  # fmt: skip
        log(INFO, "\t├──> %s: nodes by %s", type(self).__name__, how)
        log(INFO, "\t├──> client-side evaluation: %s", "on" if self.federated_eval else "off")
        params = ", ".join(f"{p.arg}={getattr(self, p.arg, p.default)!r}" for p in self.PARAMS)
        pre = ",".join(self.pre_aggregation.names) if self.pre_aggregation else "none"
        log(INFO, "\t└──> screening: min_replies %d, max_update_norm %g, weight_cap_ratio %g; "
            "pre-aggregator %s%s", self.min_replies, self.max_update_norm, self.weight_cap_ratio,
            pre, f"; {params}" if params else "")  # fmt: skip

    # ----------------------------------------------------------------- construction
    @classmethod
    def base_kwargs(cls, config: RunConfig) -> dict[str, Any]:
        return {
            "federated_eval": config.federated_eval,
            "min_replies": config.min_replies,
            "max_update_norm": config.max_update_norm,
            "server_lr": config.server_lr,
            "device": config.device,
            "weight_cap_ratio": config.weight_cap_ratio,
            "pre_aggregation": PreAggregation.from_config(config),
        }

    # ----------------------------------------------------------------- server state
    def server_state(self) -> dict[str, Any]:
        """What the rule keeps across rounds (tensors, numbers, dicts, lists); none here."""
        return {}

    def load_server_state(self, state: dict[str, Any]) -> None:
        """Restore `server_state` (a resumed run)."""

    # ----------------------------------------------------------------- configure
    def _messages(
        self,
        server_round: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        node_ids: list[int],
        message_type: str,
    ) -> Iterable[Message]:
        config[M.SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, message_type)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One TRAIN message per node chosen by `select_nodes` for this round (or sampled as
        Flower's FedAvg samples them, waiting for enough nodes, without it)."""
        self._global = arrays
        if self.select_nodes is None:
            messages = list(super().configure_train(server_round, arrays, config, grid))
            self._last_train_nodes = [m.metadata.dst_node_id for m in messages]
            return messages
        self._last_train_nodes = list(self.select_nodes(server_round))
        return self._messages(
            server_round, arrays, config, self._last_train_nodes, MessageType.TRAIN
        )

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Client-side evaluation (when enabled): on the round's training participants with
        `select_nodes`, else on nodes sampled as Flower's FedAvg samples them."""
        if not self.federated_eval:
            return []
        if self.select_nodes is None:
            messages = list(super().configure_evaluate(server_round, arrays, config, grid))
            self._last_eval_nodes = [m.metadata.dst_node_id for m in messages]
            return messages
        self._last_eval_nodes = list(self._last_train_nodes)
        return self._messages(
            server_round, arrays, config, self._last_train_nodes, MessageType.EVALUATE
        )

    # ----------------------------------------------------------------- aggregate
    def _ordered(self, replies: Iterable[Message]) -> list[Message]:
        # Replies arrive in any order; aggregate them in the order the nodes were chosen, so
        # floating-point sums (and therefore whole runs) do not depend on network timing.
        rank = {node: i for i, node in enumerate(self._last_train_nodes)}
        return sorted(
            replies, key=lambda m: (rank.get(m.metadata.src_node_id, len(rank)),
                                    m.metadata.src_node_id),
        )  # fmt: skip

    def screen(self, server_round: int, replies: Iterable[Message]) -> Screened:
        """Screen replies against the arrays broadcast this round; log every rejection."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        screened = screen_replies(
            self._ordered(replies), self._global, Layout.of(self._global), self.device,
            self.max_update_norm, self.reported_sizes, self.weight_cap_ratio,
            None if self.resubmission else set(self._last_train_nodes),
            weighting=self.weighting, assigned=self.assigned_sizes,
        )  # fmt: skip
        _log_outcomes(server_round, "train", screened)
        self.last_screened = screened
        return screened

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, aggregate pseudo-gradients with the rule, step the global model."""
        t0 = time.perf_counter()
        screened = self.screen(server_round, replies)
        diag: Diagnostics = {
            "rejected_replies": len(screened.rejected),
            "weight_capped": len(screened.capped),
            "aggregated_replies": len(screened),
            "update_norms": screened.norms,
        }
        arrays: ArrayRecord | None = None
        if len(screened) < self.min_replies:
            log(
                WARNING,
                "round %d skipped: %d accepted replies < min-replies %d; global model unchanged",
                server_round, len(screened), self.min_replies,
            )  # fmt: skip
            diag["aggregated_replies"] = 0
        else:
            try:
                arrays, extra = self.aggregate_accepted(server_round, screened)
                diag.update(extra)
            except Exception as exc:  # noqa: BLE001 - no reply may crash the server
                log(WARNING, "round %d skipped: the rule failed (%s: %s); global model unchanged",
                    server_round, type(exc).__name__, exc)  # fmt: skip
                diag["aggregated_replies"] = 0
                diag["aggregate_rejected"] = 1
                arrays = None
        diag["aggregate_seconds"] = time.perf_counter() - t0
        metrics = MetricRecord(diag)
        if len(screened):
            assert screened.weights is not None
            client = mean_client_metrics(screened.metrics, screened.weights.tolist())
            for key, value in client.items():
                metrics[key] = value
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Client-side evaluation replies, screened like train replies: one reply per node
        asked, exactly one ``metrics`` record of finite numbers and a positive (capped) weight;
        averaged per key as ``client_eval.<key>``. A bad reply is rejected and counted, never
        fatal."""
        out = Screened()
        claims: list[float] = []
        seen: set[int] = set()
        expected = None if self.resubmission else set(self._last_eval_nodes)
        for msg in self._ordered(replies):
            node = msg.metadata.src_node_id
            if problem := sender_problem(node, seen, expected):
                out.rejected.append((node, problem))
                continue
            if msg.has_error():
                out.failed.append((node, str(msg.error.reason)))
                continue
            try:
                only_records(msg.content, {METRICS_KEY: MetricRecord})
                weight, values = client_metrics(msg.content.metric_records[METRICS_KEY])
            except ReplyRejected as exc:
                out.rejected.append((node, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001
                out.rejected.append((node, f"screening failed: {type(exc).__name__}: {exc}"))
                continue
            out.nodes.append(node)
            out.metrics.append(values)
            claims.append(weight)
        weights, why = cap_weights(
            claims, [self.reported_sizes.get(n) for n in out.nodes], self.weight_cap_ratio
        )
        out.weights = torch.tensor(weights, dtype=torch.float64)
        out.capped = [(n, w) for n, w in zip(out.nodes, why, strict=True) if w is not None]
        _log_outcomes(server_round, "evaluate", out)
        self.last_eval = out
        if not out.nodes:
            return None
        return MetricRecord(mean_client_metrics(out.metrics, weights, EVAL_PREFIX))

    def aggregate_accepted(
        self, server_round: int, screened: Screened
    ) -> tuple[ArrayRecord, Diagnostics]:
        """Run the pseudo-gradient rule on the accepted replies (overridable as a whole)."""
        assert self._global is not None and screened.updates is not None
        self.round_nodes = list(screened.nodes)
        U, weights = screened.updates, screened.weights
        if self.pre_aggregation is not None:  # `strategies.preaggregate`
            U, weights = self.pre_aggregation.apply(U, weights, server_round)
        update, diag = self.aggregate_updates(U, weights, server_round)
        layout = Layout.of(self._global)
        return apply_update(self._global, layout, update * self.server_lr, screened.arrays), diag

    def aggregate_updates(
        self, U: torch.Tensor, weights: torch.Tensor, server_round: int
    ) -> tuple[torch.Tensor, Diagnostics]:
        """The aggregation rule on ``U (n, d)``; FedAvg: the example-weighted mean."""
        return weighted_mean(U, weights), {}


def _printable(text: str, limit: int = 2000) -> str:
    """Client-written text as one log line: control characters escaped (no forged lines)."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


def _log_outcomes(server_round: int, phase: str, screened: Screened) -> None:
    for node, reason in screened.failed:
        log(WARNING, "round %d %s: node %d failed: %s", server_round, phase, node,
            _printable(reason))  # fmt: skip
    for node, reason in screened.rejected:
        log(WARNING, "round %d %s: rejected reply from node %d: %s",
            server_round, phase, node, _printable(reason))  # fmt: skip
    for node, reason in screened.capped:
        log(WARNING, "round %d %s: capped the weight of node %d: %s",
            server_round, phase, node, reason)  # fmt: skip
