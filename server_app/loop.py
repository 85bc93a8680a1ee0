"""The round loop: configure -> send/receive -> aggregate -> evaluate -> record.

Strategies stay Flower strategies (`configure_train`, `aggregate_train`, ...); this loop owns
what Flower's `Strategy.start` leaves out and a threat-model study needs each round: which
partitions trained, how many replies came back or failed, wall times, central evaluation, and a
results line written as soon as the round ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server_app.results import RunRecorder
from server_app.roster import Roster

Evaluator = Callable[[ArrayRecord], Mapping[str, float]]


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    arrays: ArrayRecord,
    *,
    num_rounds: int,
    roster: Roster,
    evaluator: Evaluator,
    recorder: RunRecorder,
    round_timeout: float = 3600.0,
) -> ArrayRecord:
    """Run `num_rounds` rounds from `arrays`; return the final global arrays."""
    for server_round in range(1, num_rounds + 1):
        t0 = time.perf_counter()
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        sampled = sorted(roster.partition_of(m.metadata.dst_node_id) for m in messages)
        replies = list(grid.send_and_receive(messages, timeout=round_timeout))
        failed = sum(1 for r in replies if r.has_error())
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        row: dict[str, Any] = {
            "round": server_round,
            "sampled": sampled,
            "num_replies": len(replies) - failed,
            "failed_replies": failed + (len(messages) - len(replies)),
            "model_updated": new_arrays is not None,
        }
        if train_metrics is not None:  # client metrics (weighted) + the rule's diagnostics
            row.update({k: v for k, v in train_metrics.items() if k != "num-examples"})
        eval_messages = list(
            strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
        )
        if eval_messages:
            eval_metrics = strategy.aggregate_evaluate(
                server_round, grid.send_and_receive(eval_messages, timeout=round_timeout)
            )
            if eval_metrics is not None:
                row["client_eval_acc"] = float(eval_metrics["eval_acc"])
                row["client_eval_loss"] = float(eval_metrics["eval_loss"])
        row.update(evaluator(arrays))
        row["round_seconds"] = time.perf_counter() - t0
        recorder.append_round(row)
        log(
            INFO,
            "[immunefl] round %d/%d  benign_acc %.4f  loss %.4f  replies %d/%d  %.2fs",
            server_round,
            num_rounds,
            row["benign_acc"],
            row["benign_loss"],
            row["num_replies"],
            len(messages),
            row["round_seconds"],
        )
    return arrays
