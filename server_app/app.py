"""ServerApp: validate the config, learn the roster, run the rounds, write the results."""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from immunefl.config import validate_config
from immunefl.models import init_model
from server_app.evaluation import CentralEvaluator
from server_app.loop import run_rounds
from server_app.results import RunRecorder, default_run_name, summarize
from server_app.roster import discover
from server_app.sampling import sample_partitions
from strategies import build_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one experiment as configured by the run config."""
    started = time.time()
    config = validate_config(dict(context.run_config))
    run_name = str(config["run-name"]) or default_run_name(config)
    config["run-name"] = run_name
    run_dir = Path(str(config["results-dir"])).expanduser().resolve() / run_name
    recorder = RunRecorder(run_dir)
    recorder.write_config(config, run_id=context.run_id, started=started)
    log(INFO, "[immunefl] results -> %s", run_dir)

    num_partitions = int(config["num-partitions"])
    roster = discover(grid, num_partitions)
    malicious = [p for p, role in roster.role_of.items() if role != "benign"]
    if malicious:
        raise RuntimeError(
            f"partitions {malicious[:10]} declare role=malicious, but no attack is implemented yet"
        )
    seed, k = int(config["seed"]), int(config["clients-per-round"])

    def select_nodes(server_round: int) -> list[int]:
        return [
            roster.node_of[p] for p in sample_partitions(seed, server_round, roster.partitions, k)
        ]

    strategy = build_strategy(config, select_nodes)
    model = init_model(str(config["model"]), str(config["dataset"]), seed)
    arrays = run_rounds(
        grid,
        strategy,
        ArrayRecord(model.state_dict()),
        num_rounds=int(config["num-server-rounds"]),
        roster=roster,
        evaluator=CentralEvaluator(config),
        recorder=recorder,
    )
    if config["save-model"]:
        recorder.save_model(arrays.to_torch_state_dict())
    summary = summarize(recorder.rows, time.time() - started)
    summary["status"] = "completed"
    recorder.write_summary(summary)
    log(
        INFO,
        "[immunefl] done: final benign_acc %.4f in %.1fs -> %s",
        summary["final_benign_acc"],
        summary["wall_seconds"],
        run_dir,
    )
