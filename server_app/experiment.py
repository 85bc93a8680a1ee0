"""One experiment on a grid: roster, threat scenario, rounds, results (`run_experiment`).

The ServerApp (`server_app.app`) runs one per Flower run, or one per point of a sweep
(`server_app.sweep`), each with its own config, seed streams, results directory, checkpoint
and summary.
"""

from __future__ import annotations

import os
import time
from logging import ERROR, INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from server_app.checkpoint import load_checkpoint, restore_numpy_rng, restore_strategy_state
from server_app.evaluation import CentralEvaluator
from server_app.loop import Counterfactual, run_rounds
from server_app.metrics import MetricsExporter
from server_app.mitigation import asr_threshold, mitigation_rounds
from server_app.outcomes import attack_delivery, run_status
from server_app.results import RunRecorder, summarize
from server_app.roster import discover
from server_app.scenario import ThreatScenario
from strategies import build_strategy
from task.allocator import configure_allocator
from task.models import init_model, load_initial_model
from task.resultsio import summary_warnings
from task.runconfig import RunConfig


def assigned_sizes(config: RunConfig, node_of: dict[int, int]) -> dict[int, float]:
    """Node id -> the size of the partition the server assigned it (simulation only)."""
    from task.partition import config_partitions

    parts = config_partitions(config)
    return {node: float(len(parts[p])) for p, node in node_of.items()}


def attack_summary(
    rows: list[dict[str, Any]], config: RunConfig, scheduled: list[int]
) -> dict[str, Any]:
    """Adversarial rounds and, per adversarial round, the attack mitigation rounds."""
    adversarial = [r["round"] for r in rows if r.get("adversarial")]
    out: dict[str, Any] = {"adversarial_rounds": adversarial, "scheduled_adversarial": scheduled}
    if config.attack != "none":
        out.update(attack_delivery(rows))
    if not adversarial or config.attack_mode != "rounds":
        return out
    last = rows[-1]["round"]
    if "mis_conf" in rows[0]:
        metric = {r["round"]: r["mis_conf"] for r in rows}
        out["mitigation_metric"] = "mis_conf"
        out["mitigation_threshold"] = config.mitigation_threshold
    elif "asr" in rows[0]:
        metric = {r["round"]: r["asr"] for r in rows}
        out["mitigation_metric"] = "asr"
        out["mitigation_threshold"] = asr_threshold(metric, adversarial[0])
    else:
        return out
    rounds = mitigation_rounds(metric, adversarial, out["mitigation_threshold"], last)
    out["mitigation_rounds"] = {str(t): v for t, v in rounds.items()}
    return out


def run_experiment(
    grid: Grid, config: RunConfig, run_id: int, simulation: bool, started: float | None = None
) -> dict[str, Any]:
    """Run one experiment (one point of a sweep) on `grid`; return its summary.

    Raises when the experiment fails (its summary.json says so first)."""
    started = time.time() if started is None else started
    run_dir = config.run_dir
    ckpt = load_checkpoint(run_dir) if config.resume else None
    if config.resume and ckpt is None:  # never start over on top of a run's results
        raise RuntimeError(f"resume=true but {run_dir} has no checkpoint.pt: nothing to resume")
    recorder = RunRecorder(
        run_dir, resume_rows=ckpt.rows if ckpt else ([] if config.resume else None)
    )
    num_rounds = config.num_server_rounds

    poll = config.poll_interval
    # nodes must connect within two minutes; their whoami answers get the patience of a
    # training round (simulation actors import torch and load data first, slow on a loaded
    # machine), never less than two minutes
    roster = discover(
        grid, config.num_partitions, poll_interval=poll,
        reply_timeout=max(120.0, config.round_timeout),
    )  # fmt: skip
    benign = [p for p, role in roster.role_of.items() if role == "benign"]
    malicious = [p for p, role in roster.role_of.items() if role == "malicious"]
    if len(malicious) != config.num_malicious:
        raise RuntimeError(
            f"the nodes report {len(malicious)} malicious partition(s) {sorted(malicious)} but "
            f"the run config says num-malicious={config.num_malicious}; make them agree "
            '(deployment: SuperNodes started with role="malicious" in their node config)'
        )
    scenario = ThreatScenario(config, benign, malicious)
    scheduled = scenario.adversarial_rounds(num_rounds)
    recorder.write_config(
        config.as_mapping(), run_id=run_id, started=started,
        malicious_partitions=sorted(malicious), adversarial_rounds=scheduled,
    )  # fmt: skip
    when = (
        "continuous: every round that samples a malicious client"
        if scenario.mode == "continuous" and scenario.attack != "none"
        else f"adversarial rounds {scheduled}"
    )
    log(INFO, "[immunefl] results -> %s; %s", run_dir, when)
    # Evaluation and aggregation run while the clients wait: give them every core. (In
    # simulation this process also imports the ClientApp, whose actors use one thread each.)
    torch.set_num_threads(int(os.environ.get("IMMUNEFL_SERVER_THREADS", os.cpu_count() or 1)))
    configure_allocator()
    log(INFO, "[immunefl] server: torch threads %d", torch.get_num_threads())

    if config.weighting == "assigned" and not simulation:
        raise RuntimeError(
            "weighting=assigned weighs each reply by the size of the partition the server "
            "assigned, which only a simulation knows (a deployed node holds its own data): "
            "use weighting=equal or claimed"
        )
    log(INFO, "[immunefl] %s: a node exception that no configured fault explains %s",
        "simulation" if simulation else "deployment",
        "stops the run" if simulation else "is logged and counted; the run goes on")  # fmt: skip

    def select_nodes(server_round: int) -> list[int]:
        return [roster.node_of[p] for p in scenario.plan(server_round).partitions]

    model = init_model(config.model, config.dataset, config.seed)
    if config.initial_model:  # train clean once, attack many times: round 1 starts from it
        model.load_state_dict(
            load_initial_model(config.initial_model, config.model, config.dataset)
        )
        log(INFO, "[immunefl] round 1 starts from initial-model %s", config.initial_model)
    initial = ArrayRecord(model.state_dict())
    strategy = build_strategy(config, select_nodes)  # may seed NumPy's global RNG (dp-fixed)
    # the counterfactual's strategy too, before a resumed run restores that RNG: built after it,
    # dp-fixed would seed it again and a resumed run's noise would differ from a whole run's
    cf_strategy = build_strategy(config, select_nodes) if config.track_aep else None
    cf_initial = initial
    start_round = 1
    if ckpt is not None:
        initial = ArrayRecord(ckpt.model)
        cf_initial = ArrayRecord(ckpt.counterfactual) if ckpt.counterfactual else initial
        restore_numpy_rng(ckpt.numpy_rng)
        restore_strategy_state(strategy, ckpt.strategy_state)
        restore_strategy_state(cf_strategy, ckpt.cf_strategy_state)
        start_round = ckpt.server_round + 1
        log(INFO, "[immunefl] resuming %s after round %d", run_dir, ckpt.server_round)
    exporter = MetricsExporter(config)
    exporter.start()
    counterfactual = None
    if cf_strategy is not None:
        counterfactual = Counterfactual(cf_strategy, cf_initial)
    assigned = assigned_sizes(config, roster.node_of) if config.weighting == "assigned" else {}
    for s in (strategy, counterfactual.strategy if counterfactual else None):
        if s is not None:
            s.reported_sizes.update(roster.reported_sizes())
            if isinstance(getattr(s, "client_keys", None), dict):  # keys that outlive node ids
                s.client_keys.update({n: p for p, n in roster.node_of.items()})
            inner = getattr(s, "strategy", s)  # dp-fixed wraps ours (and weighs replies alike)
            inner.weighting = config.weighting
            inner.assigned_sizes.update(assigned)

    def finish(extra: dict[str, Any]) -> dict[str, Any]:
        summary = summarize(recorder.rows, time.time() - started)
        summary.update(attack_summary(recorder.rows, config, scheduled))
        summary.update(run_status(recorder.rows, num_rounds))
        summary.update(extra)
        recorder.write_summary(summary)
        return summary

    try:
        arrays = run_rounds(
            grid, strategy, initial,
            num_rounds=num_rounds, roster=roster, scenario=scenario,
            evaluator=CentralEvaluator(config), recorder=recorder, counterfactual=counterfactual,
            round_timeout=config.round_timeout, start_round=start_round,
            checkpoint_every=config.checkpoint_every,
            on_round=exporter.record if exporter.enabled else None, poll_interval=poll,
            stop_on_client_error=simulation,
        )  # fmt: skip
    except Exception as exc:
        summary = finish({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        log(ERROR, "[immunefl] run failed after %d round(s): %s", len(recorder.rows),
            summary["error"])  # fmt: skip
        raise
    finally:
        exporter.close()
    if config.save_model:
        recorder.save_model(arrays.to_torch_state_dict(), config.pretrain_holdout)
    summary = finish({})
    for line in summary_warnings(summary):
        log(WARNING, "[immunefl] %s", line)
    if summary["status"] == "failed":
        raise RuntimeError(f"no round updated the model; see {run_dir / 'summary.json'}")
    log(INFO, "[immunefl] done (%s): final benign_acc %s in %.1fs -> %s", summary["status"],
        summary["final_benign_acc"], summary["wall_seconds"], run_dir)  # fmt: skip
    return summary
