"""The round loop: plan -> configure -> send/receive -> aggregate -> evaluate -> record.

Strategies stay Flower strategies (`configure_train`, `aggregate_train`, ...); this loop owns
what Flower's `Strategy.start` leaves out and a threat-model study needs each round: the
scenario's plan (adversarial or not, who trains), how many replies came back, were rejected or
failed, wall times, central evaluation (benign and attack metrics), an optional counterfactual
model without attacks (AEP, FL-WBC Def. 1), and a results line written as soon as the round
ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import ERROR, INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server_app.checkpoint import Checkpoint, numpy_rng_state, save_checkpoint, strategy_state
from server_app.outcomes import ClientFailure, round_outcomes, unexpected_failures
from server_app.results import RunRecorder
from server_app.roster import Roster
from server_app.scenario import RoundPlan, ThreatScenario
from server_app.transport import MAX_INTERVAL, exchange
from strategies.updates import EVAL_PREFIX, Layout, Screened
from task import messages as M

Evaluator = Callable[[ArrayRecord], Mapping[str, float]]


@dataclass
class Counterfactual:
    """W_t(S \\ M): the same rounds and participants, malicious nodes training benignly."""

    strategy: Strategy
    arrays: ArrayRecord


def _train_round(
    grid: Grid, strategy: Strategy, server_round: int, arrays: ArrayRecord,
    config: ConfigRecord, timeout: float, poll: float,
) -> tuple[list[Message], list[Message], ArrayRecord | None, Any]:  # fmt: skip
    messages = list(strategy.configure_train(server_round, arrays, config, grid))
    replies = exchange(grid, messages, timeout, poll)
    try:
        new_arrays, metrics = strategy.aggregate_train(server_round, replies)
    except Exception as exc:  # noqa: BLE001 - defence in depth: a round fails, never the run
        log(ERROR, "[immunefl] round %d: aggregation raised %s: %s; global model unchanged",
            server_round, type(exc).__name__, exc)  # fmt: skip
        new_arrays, metrics = None, {"aggregate_rejected": 1}
    return messages, replies, new_arrays, metrics


def train_config(plan: RoundPlan) -> ConfigRecord:
    """The train message's config: in an adversarial round, the round's benign and malicious
    partitions (what a full-knowledge attacker is assumed to observe: `attacks.knowledge`;
    benign nodes ignore them); empty otherwise."""
    if not plan.adversarial:
        return ConfigRecord()
    return ConfigRecord(
        {M.ROUND_BENIGN: list(plan.benign), M.ROUND_MALICIOUS: list(plan.malicious)}
    )


def aggregate_refusal(
    layout: Layout, new_arrays: ArrayRecord | None, server_round: int, what: str
) -> int:
    """1 (and an error logged) when `new_arrays` is not a finite model of the broadcast
    `layout`, so the caller keeps its `what` unchanged; 0 when it is fine or absent."""
    if new_arrays is None or not (problem := layout.aggregate_problem(new_arrays)):
        return 0
    log(ERROR, "[immunefl] round %d: aggregate refused (%s); %s unchanged",
        server_round, problem, what)  # fmt: skip
    return 1


def strategy_screening(strategy: Strategy, attr: str = "last_screened") -> Screened:
    """The strategy's screening outcome of its last train (or evaluate) aggregation."""
    found = getattr(strategy, attr, None)
    if not isinstance(found, Screened):
        raise TypeError(f"{type(strategy).__name__} keeps no '{attr}' (not an immunefl strategy)")
    return found


def _mmss(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def float_distance(a: ArrayRecord, b: ArrayRecord) -> float:
    """L2 distance between the floating-point tensors of two models."""
    sa, sb = a.to_torch_state_dict(), b.to_torch_state_dict()
    total = sum(
        float(((sa[k].double() - sb[k].double()) ** 2).sum())
        for k in sa if sa[k].is_floating_point()
    )  # fmt: skip
    return total**0.5


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    arrays: ArrayRecord,
    *,
    num_rounds: int,
    roster: Roster,
    scenario: ThreatScenario,
    evaluator: Evaluator,
    recorder: RunRecorder,
    counterfactual: Counterfactual | None = None,
    round_timeout: float = 3600.0,
    start_round: int = 1,
    checkpoint_every: int = 0,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    poll_interval: float = MAX_INTERVAL,
    stop_on_client_error: bool = False,
) -> ArrayRecord:
    """Run rounds `start_round`..`num_rounds` from `arrays`; return the final global arrays.

    With ``checkpoint_every = k > 0`` a checkpoint is written after every k-th round;
    `on_round` (e.g. the metrics exporter) sees every row once it is on disk. With
    `stop_on_client_error` (simulation) a node exception that no configured fault explains
    raises `ClientFailure`. An aggregate that is not a finite model of the broadcast shape is
    refused (``aggregate_rejected``): the global model stays as it was.
    """
    t_start = time.perf_counter()
    for server_round in range(start_round, num_rounds + 1):
        t0 = time.perf_counter()
        plan = scenario.plan(server_round)
        layout = Layout.of(arrays)
        messages, replies, new_arrays, train_metrics = _train_round(
            grid, strategy, server_round, arrays, train_config(plan), round_timeout, poll_interval
        )
        t_train = time.perf_counter() - t0
        screened = strategy_screening(strategy)
        if stop_on_client_error and (bugs := unexpected_failures(screened, roster)):
            raise ClientFailure(f"round {server_round}: " + "\n".join(bugs))
        aggregate_rejected = int((train_metrics or {}).get("aggregate_rejected", 0))
        if refused := aggregate_refusal(layout, new_arrays, server_round, "global model"):
            new_arrays, aggregate_rejected = None, refused
        if new_arrays is not None:
            arrays = new_arrays
        failed = sum(1 for r in replies if r.has_error())
        row: dict[str, Any] = dict(train_metrics or {})  # the rule's diagnostics, client.* keys
        row.pop(M.WEIGHT, None)
        row.update({  # the server's own bookkeeping, written last: nothing overwrites it
            "round": server_round,
            "adversarial": plan.adversarial,
            "sampled": sorted(roster.partition_of(m.metadata.dst_node_id) for m in messages),
            "malicious": plan.malicious,
            "num_replies": len(replies) - failed,
            "failed_replies": failed + (len(messages) - len(replies)),
            "rejected_replies": len(screened.rejected),
            "weight_capped": len(screened.capped),
            "aggregate_rejected": aggregate_rejected,
            "model_updated": new_arrays is not None,
            **round_outcomes(messages, replies, screened, roster,
                             aggregated=bool(row.get("aggregated_replies"))),
        })  # fmt: skip
        eval_messages = list(
            strategy.configure_evaluate(server_round, arrays, ConfigRecord(), grid)
        )
        if eval_messages:
            eval_replies = exchange(grid, eval_messages, round_timeout, poll_interval)
            eval_metrics = strategy.aggregate_evaluate(server_round, eval_replies)
            evaluated = strategy_screening(strategy, "last_eval")
            if stop_on_client_error and (bugs := unexpected_failures(evaluated, roster)):
                raise ClientFailure(f"round {server_round} (evaluate): " + "\n".join(bugs))
            row.update({k: v for k, v in (eval_metrics or {}).items() if k.startswith(EVAL_PREFIX)})
            row["eval_failed"] = len(evaluated.failed) + len(eval_messages) - len(eval_replies)
            row["eval_rejected"] = len(evaluated.rejected)
        t_eval = time.perf_counter()
        row.update(evaluator(arrays))
        row["train_phase_seconds"] = t_train
        row["eval_seconds"] = time.perf_counter() - t_eval
        if counterfactual is not None:
            _, _, cf_arrays, cf_train = _train_round(
                grid, counterfactual.strategy, server_round, counterfactual.arrays,
                ConfigRecord({M.BENIGN_OVERRIDE: True}), round_timeout, poll_interval,
            )  # fmt: skip
            cf_refused = int((cf_train or {}).get("aggregate_rejected", 0))
            if aggregate_refusal(Layout.of(counterfactual.arrays), cf_arrays, server_round,
                                 "counterfactual model"):  # fmt: skip
                cf_arrays, cf_refused = None, 1
            row["cf_aggregate_rejected"] = cf_refused
            if cf_arrays is not None:
                counterfactual.arrays = cf_arrays
            row["aep_norm"] = float_distance(counterfactual.arrays, arrays)
            cf_metrics = evaluator(counterfactual.arrays)
            row.update({f"cf_{k}": v for k, v in cf_metrics.items()})
        row["round_seconds"] = time.perf_counter() - t0
        recorder.append_round(row)
        if on_round is not None:
            on_round(row)
        if checkpoint_every and server_round % checkpoint_every == 0:
            save_checkpoint(
                recorder.run_dir,
                Checkpoint(
                    server_round, arrays.to_torch_state_dict(),
                    counterfactual.arrays.to_torch_state_dict() if counterfactual else None,
                    recorder.rows, numpy_rng_state(), strategy_state(strategy),
                    strategy_state(counterfactual.strategy) if counterfactual else None,
                ),
            )  # fmt: skip
        attack = "".join(
            f"  {k} {row[k]:.3f}" for k in ("mis_conf", "asr") if k in row
        )  # fmt: skip
        if plan.adversarial:
            attack += f"  malicious aggregated {row['malicious_aggregated']}/{len(plan.malicious)}"
        if row["rejected_replies"] or row["aggregate_rejected"]:
            attack += f"  rejected {row['rejected_replies']}"
            attack += "  AGGREGATE REFUSED" if row["aggregate_rejected"] else ""
        done = server_round - start_round + 1
        eta = (time.perf_counter() - t_start) / done * (num_rounds - server_round)
        log(
            INFO,
            "[immunefl] round %d/%d%s  benign_acc %.4f%s  replies %d/%d  %.2fs  ETA %s",
            server_round, num_rounds, " ADV" if plan.adversarial else "", row["benign_acc"],
            attack, row["num_replies"], len(messages), row["round_seconds"], _mmss(eta),
        )  # fmt: skip
    return arrays
