"""A non-editable install works outside the checkout: the wheel imports, carries its schema,
builds every strategy with its defaults, and runs the example Flower app (examples/flower-app)
with one of our rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.slow

CHECK = """
import json, sys
import attacks, immunefl, server_app, strategies, task
from strategies import STRATEGIES, DPFixedClipping, ImmuneFedAvg
from task.runconfig import RunConfig
site = sys.argv[1]
files = [m.__file__ for m in (attacks, immunefl, server_app, strategies, task)]
assert all(f.startswith(site) for f in files), files
cfg = RunConfig.defaults()
built = []
for name, cls in STRATEGIES.items():
    cls(ImmuneFedAvg()) if cls is DPFixedClipping else cls()
    cls.from_config(RunConfig.defaults(strategy=name), lambda r: [1])
    built.append(name)
print(json.dumps({"built": built, "rounds": cfg.num_server_rounds}))
"""

RUN_APP = """
import json, sys
from pathlib import Path
from immunefl.launcher import LocalSimulation
from immunefl.submission import write_run_config
app, out = Path(sys.argv[1]), Path(sys.argv[2])
toml = write_run_config({"rule": "invariant", "results-file": str(out / "m.json")}, out / "rc.toml")
with LocalSimulation(app, out / "home") as sim:
    outcome = sim.run(toml, num_supernodes=5, echo=lambda line: None)
print(outcome.status)
"""


def test_a_wheel_installed_outside_the_checkout_works(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "whl"), str(PROJECT_ROOT)],
                   check=True, timeout=600, cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "whl").glob("immunefl-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=600, cwd=tmp_path)  # fmt: skip
    assert (site / "task" / "schema.toml").exists() and not (site / "pyproject.toml").exists()
    env = {**os.environ, "PYTHONPATH": str(site)}  # before the checkout's editable path
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["built"][:3] == ["fedavg", "median", "trimmed-mean"]
    app = shutil.copytree(PROJECT_ROOT / "examples" / "flower-app", work / "flower-app")
    out = subprocess.run([sys.executable, "-c", RUN_APP, str(app), str(work)], cwd=work,
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.stdout.strip().endswith("finished:completed"), out.stderr[-3000:]
    metrics = json.loads((work / "m.json").read_text())
    assert all(row["aggregated_replies"] == 5 for row in metrics["train"].values())
