"""The ServerApp: a robust rule from immunefl, built and started exactly like Flower's FedAvg.

Every reply is screened before it reaches the rule (malformed arrays, NaN, lying weights are
rejected and logged); the rule's own hyper-parameters are checked when it is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from flowerapp.task import make_model
from strategies import ImmuneFedAvg, InvariantStrategy, MedianStrategy, TrimmedMeanStrategy

app = ServerApp()


def make_strategy(rule: str, fraction_train: float) -> ImmuneFedAvg:
    """Our rules take Flower's usual arguments and their own hyper-parameters as keywords."""
    common = {"fraction_train": fraction_train, "min_available_nodes": 5}
    rules = {
        "fedavg": lambda: ImmuneFedAvg(**common),
        "median": lambda: MedianStrategy(**common),
        "trimmed-mean": lambda: TrimmedMeanStrategy(beta=0.2, **common),
        "invariant": lambda: InvariantStrategy(tau=0.2, alpha=0.2, **common),
    }
    return rules[rule]()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy = make_strategy(str(cfg["rule"]), float(cfg["fraction-train"]))
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(make_model().state_dict()),
        num_rounds=int(cfg["num-server-rounds"]),
    )
    if cfg["results-file"]:
        rounds = {
            "train": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
            "evaluate": {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
        }
        Path(str(cfg["results-file"])).write_text(json.dumps(rounds, indent=1))
