"""ServerApp: validate the config, learn the roster, run the threat scenario, write results."""

from __future__ import annotations

import os
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from immunefl.allocator import configure_allocator
from immunefl.config import validate_config
from immunefl.models import init_model
from server_app.checkpoint import load_checkpoint, restore_numpy_rng
from server_app.evaluation import CentralEvaluator
from server_app.loop import Counterfactual, run_rounds
from server_app.metrics import MetricsExporter
from server_app.mitigation import asr_threshold, mitigation_rounds
from server_app.results import RunRecorder, default_run_name, summarize
from server_app.roster import discover
from server_app.scenario import ThreatScenario
from strategies import build_strategy

app = ServerApp()


def attack_summary(
    rows: list[dict[str, Any]], config: dict[str, Any], scheduled: list[int]
) -> dict[str, Any]:
    """Adversarial rounds and, per adversarial round, the attack mitigation rounds."""
    adversarial = [r["round"] for r in rows if r.get("adversarial")]
    out: dict[str, Any] = {"adversarial_rounds": adversarial, "scheduled_adversarial": scheduled}
    if not adversarial or config["attack-mode"] != "rounds":
        return out
    last = rows[-1]["round"]
    if "mis_conf" in rows[0]:
        metric = {r["round"]: r["mis_conf"] for r in rows}
        out["mitigation_metric"] = "mis_conf"
        out["mitigation_threshold"] = float(config["mitigation-threshold"])
    elif "asr" in rows[0]:
        metric = {r["round"]: r["asr"] for r in rows}
        out["mitigation_metric"] = "asr"
        out["mitigation_threshold"] = asr_threshold(metric, adversarial[0])
    else:
        return out
    rounds = mitigation_rounds(metric, adversarial, out["mitigation_threshold"], last)
    out["mitigation_rounds"] = {str(t): v for t, v in rounds.items()}
    return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one experiment as configured by the run config."""
    started = time.time()
    config = validate_config(dict(context.run_config))
    run_name = str(config["run-name"]) or default_run_name(config)
    config["run-name"] = run_name
    run_dir = Path(str(config["results-dir"])).expanduser().resolve() / run_name
    ckpt = load_checkpoint(run_dir) if config["resume"] else None
    if config["resume"] and ckpt is None:
        log(
            WARNING, "[immunefl] resume=true but %s has no checkpoint: starting at round 1", run_dir
        )
    recorder = RunRecorder(
        run_dir, resume_rows=ckpt.rows if ckpt else ([] if config["resume"] else None)
    )
    num_rounds = int(config["num-server-rounds"])

    poll = float(config["poll-interval"])
    roster = discover(grid, int(config["num-partitions"]), poll_interval=poll)
    benign = [p for p, role in roster.role_of.items() if role == "benign"]
    malicious = [p for p, role in roster.role_of.items() if role == "malicious"]
    if len(malicious) != int(config["num-malicious"]):
        raise RuntimeError(
            f"the nodes report {len(malicious)} malicious partition(s) {sorted(malicious)} but "
            f"the run config says num-malicious={config['num-malicious']}; make them agree "
            '(deployment: SuperNodes started with role="malicious" in their node config)'
        )
    scenario = ThreatScenario(config, benign, malicious)
    scheduled = scenario.adversarial_rounds(num_rounds)
    recorder.write_config(
        config, run_id=context.run_id, started=started, malicious_partitions=sorted(malicious),
        adversarial_rounds=scheduled,
    )  # fmt: skip
    log(INFO, "[immunefl] results -> %s; adversarial rounds %s", run_dir, scheduled)
    # Evaluation and aggregation run while the clients wait: give them every core. (In
    # simulation this process also imports the ClientApp, whose actors use one thread each.)
    torch.set_num_threads(int(os.environ.get("IMMUNEFL_SERVER_THREADS", os.cpu_count() or 1)))
    configure_allocator()
    log(INFO, "[immunefl] server: torch threads %d", torch.get_num_threads())

    def select_nodes(server_round: int) -> list[int]:
        return [roster.node_of[p] for p in scenario.plan(server_round).partitions]

    model = init_model(str(config["model"]), str(config["dataset"]), int(config["seed"]))
    initial = ArrayRecord(model.state_dict())
    strategy = build_strategy(config, select_nodes)  # may seed NumPy's global RNG (dp-fixed)
    cf_initial = initial
    start_round = 1
    if ckpt is not None:
        initial = ArrayRecord(ckpt.model)
        cf_initial = ArrayRecord(ckpt.counterfactual) if ckpt.counterfactual else initial
        restore_numpy_rng(ckpt.numpy_rng)
        start_round = ckpt.server_round + 1
        log(INFO, "[immunefl] resuming %s after round %d", run_dir, ckpt.server_round)
    exporter = MetricsExporter(config)
    exporter.start()
    counterfactual = None
    if config["track-aep"]:
        counterfactual = Counterfactual(build_strategy(config, select_nodes), cf_initial)
    try:
        arrays = run_rounds(
            grid, strategy, initial,
            num_rounds=num_rounds, roster=roster, scenario=scenario,
            evaluator=CentralEvaluator(config), recorder=recorder, counterfactual=counterfactual,
            round_timeout=float(config["round-timeout"]), start_round=start_round,
            checkpoint_every=int(config["checkpoint-every"]),
            on_round=exporter.record if exporter.enabled else None, poll_interval=poll,
        )  # fmt: skip
    finally:
        exporter.close()
    if config["save-model"]:
        recorder.save_model(arrays.to_torch_state_dict())
    summary = summarize(recorder.rows, time.time() - started)
    summary.update(attack_summary(recorder.rows, config, scheduled))
    summary["status"] = "completed"
    recorder.write_summary(summary)
    log(INFO, "[immunefl] done: final benign_acc %.4f in %.1fs -> %s",
        summary["final_benign_acc"], summary["wall_seconds"], run_dir)  # fmt: skip
