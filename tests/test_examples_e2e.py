"""The two ways in, end to end: the example plugin module (a rule and an attack of a user's own,
examples/plugins) in a short sweep, and our strategies inside someone else's Flower app
(examples/flower-app, the quickstart layout) for 2 rounds with two of our rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from immunefl.launcher import LocalSimulation
from immunefl.submission import write_run_config
from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def test_the_example_plugins_run_a_sweep_against_two_attacks(tmp_path: Path, fmnist_dir: Path):
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "sweep", "examples/plugins/sweep.yaml",
         "--preset", "ci", "--flwr-home", str(tmp_path / "home"),
         "--set", f"results-dir={tmp_path / 'res'}", "--set", "run-name=plug",
         "--set", f"data-dir={fmnist_dir}"],
        capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep = json.loads((tmp_path / "res" / "plug" / "sweep.json").read_text())
    assert [p["point"]["attack"] for p in sweep["points"]] == [
        "sign-flip", "examples.plugins.my_plugins:ScaledNoise"]  # fmt: skip
    for point in sweep["points"]:
        assert point["ok"], point
        rows = _rows(tmp_path / "res" / "plug" / point["run_name"])
        assert all("kept" in row for row in rows)  # the plugin rule aggregated every round
        assert sum(row["malicious_aggregated"] for row in rows) > 0  # the attack was delivered
        config = json.loads((tmp_path / "res" / "plug" / point["run_name"] / "config.json")
                            .read_text())  # fmt: skip
        assert json.loads(config["plugin-params"])["norm-factor"] == 2.0


@pytest.mark.parametrize("rule", ["trimmed-mean", "invariant"])
def test_our_strategies_drop_into_a_flower_app(tmp_path: Path, rule: str) -> None:
    app = PROJECT_ROOT / "examples" / "flower-app"
    results = tmp_path / "metrics.json"
    toml = write_run_config({"rule": rule, "results-file": str(results)}, tmp_path / "rc.toml")
    lines: list[str] = []
    with LocalSimulation(app, tmp_path / "home") as sim:
        outcome = sim.run(toml, num_supernodes=6, echo=lines.append)
    assert outcome.status == "finished:completed", "\n".join(lines[-60:])
    metrics = json.loads(results.read_text())
    assert sorted(metrics["train"]) == ["1", "2"]
    for row in metrics["train"].values():
        assert row["aggregated_replies"] == 6 and row["rejected_replies"] == 0
    assert all("client_eval.eval_acc" in row for row in metrics["evaluate"].values())
