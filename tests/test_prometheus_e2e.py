"""A real Prometheus (Debian `prometheus`) scrapes a real simulation run's exporter.

Every (immunefl_round, immunefl_benign_accuracy) pair Prometheus stored must equal that round's
row in rounds.jsonl, and the final round must have been seen (metrics-linger).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from immunefl.processes import free_port
from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.slow
PROMETHEUS = shutil.which("prometheus")


def _query_range(base: str, expr: str, start: float, end: float) -> dict[float, float]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "0.5"})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=10) as r:
        data = json.load(r)
    assert data["status"] == "success", data
    series = data["data"]["result"]
    assert len(series) == 1, f"{expr}: expected one series, got {series}"
    labels = series[0]["metric"]
    assert labels["run"] == "prom" and labels["strategy"] == "fedavg", labels
    return {float(t): float(v) for t, v in series[0]["values"]}


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian package `prometheus` not installed")
def test_prometheus_scrapes_values_matching_rounds_jsonl(tmp_path: Path, fmnist_dir: Path):
    exporter_port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: immunefl\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    prom = subprocess.Popen(  # noqa: S603
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{prom_port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        start = time.time()
        out = subprocess.run(
            [sys.executable, "-m", "immunefl.cli", "run", str(PROJECT_ROOT / "configs/smoke.yaml"),
             "--flwr-home", str(tmp_path / "flwr"), "--quiet",
             "--set", f"results-dir={tmp_path / 'results'}", "--set", "run-name=prom",
             "--set", f"data-dir={fmnist_dir}", "--set", "num-server-rounds=4",
             "--set", f"metrics-port={exporter_port}", "--set", "metrics-addr=127.0.0.1",
             "--set", "metrics-linger=3"],
            capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        end = time.time()
        time.sleep(1.5)  # let the last scrape land in the head block
        rounds = _query_range(base, "immunefl_round", start, end)
        accs = _query_range(base, "immunefl_benign_accuracy", start, end)
        jsonl = [json.loads(x) for x in (tmp_path / "results/prom/rounds.jsonl").read_text()
                 .splitlines()]  # fmt: skip
        acc_of = {r["round"]: r["benign_acc"] for r in jsonl}
        pairs = {(rounds[t], accs[t]) for t in rounds if t in accs}
        assert pairs, "Prometheus stored no samples of the run"
        for rnd, acc in pairs:
            assert acc == acc_of[int(rnd)], f"round {rnd}: Prometheus {acc} vs jsonl {acc_of[rnd]}"
        assert max(r for r, _ in pairs) == 4, "the final round was never scraped"
        replies = _query_range(base, 'immunefl_replies_total{status="ok"}', start, end)
        assert max(replies.values()) == sum(r["num_replies"] for r in jsonl)
    finally:
        prom.terminate()
        prom.wait(timeout=30)
