"""Prometheus exporter: values from rows, consistency, HTTP endpoint, Pushgateway, docs."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from immunefl.experiments import resolve_config
from immunefl.processes import free_port
from server_app.metrics import METRICS, NORM_BUCKETS, MetricsExporter, RoundCollector
from task.runconfig import RunConfig
from task.schema import PROJECT_ROOT


def _config(**over):
    base = {"run-name": "m1", "strategy": "invariant", "num-server-rounds": 5}
    return RunConfig.from_mapping(resolve_config(None, {**base, **over}))


ROWS = [
    {"round": 1, "adversarial": False, "benign_acc": 0.5, "benign_loss": 1.2, "mis_conf": 0.1,
     "num_replies": 10, "rejected_replies": 1, "failed_replies": 2, "round_seconds": 3.0,
     "aggregate_seconds": 0.02, "mask_density": 0.7, "update_norms": [0.3, 0.7, 60.0]},
    {"round": 2, "adversarial": True, "benign_acc": 0.6, "benign_loss": 1.0, "mis_conf": 0.9,
     "num_replies": 9, "rejected_replies": 0, "failed_replies": 1, "round_seconds": 2.5,
     "aggregate_seconds": 0.01, "mask_density": 0.6, "update_norms": [0.4, 1e6]},
]  # fmt: skip


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples, name, **labels):
    want = tuple(sorted({"run": "m1", "strategy": "invariant", **labels}.items()))
    return samples[(name, want)]


def test_collector_serves_last_round_and_accumulates_counters() -> None:
    reg_exporter = MetricsExporter(_config())
    for row in ROWS:
        reg_exporter.collector.observe(row)
    s = _samples(generate_latest(reg_exporter.registry).decode())
    assert _get(s, "immunefl_round") == 2
    assert _get(s, "immunefl_num_rounds") == 5
    assert _get(s, "immunefl_benign_accuracy") == 0.6
    assert _get(s, "immunefl_misclassification_confidence") == 0.9
    assert _get(s, "immunefl_adversarial_round") == 1.0
    assert _get(s, "immunefl_mask_density") == 0.6
    assert _get(s, "immunefl_round_duration_seconds") == 2.5
    # replies: ok = num_replies - rejected, summed over rounds
    assert _get(s, "immunefl_replies_total", status="ok") == 9 + 9
    assert _get(s, "immunefl_replies_total", status="rejected") == 1
    assert _get(s, "immunefl_replies_total", status="failed") == 3
    # histogram over all accepted update norms: 5 observations, cumulative buckets
    assert _get(s, "immunefl_update_norm_count") == 5
    assert _get(s, "immunefl_update_norm_sum") == pytest.approx(0.3 + 0.7 + 60 + 0.4 + 1e6)
    assert _get(s, "immunefl_update_norm_bucket", le="0.5") == 2
    assert _get(s, "immunefl_update_norm_bucket", le="1.0") == 3
    assert _get(s, "immunefl_update_norm_bucket", le="100.0") == 4
    assert _get(s, "immunefl_update_norm_bucket", le="+Inf") == 5
    info = _get(s, "immunefl_run_info", dataset="fmnist", attack="none", client_defense="none")
    assert info == 1.0
    # a metric the last row does not carry is absent, not stale or zero
    assert not any(name == "immunefl_attack_success_rate" for name, _ in s)


def test_snapshot_is_one_round_under_concurrent_updates() -> None:
    col = RoundCollector(_config())
    stop = threading.Event()

    def writer() -> None:
        r = 0
        while not stop.is_set():
            r += 1
            col.observe({"round": r, "benign_acc": r / 1e6, "num_replies": 1})

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(300):
            got = {m.name: m.samples[0].value for m in col.collect() if m.name in
                   ("immunefl_round", "immunefl_benign_accuracy")}  # fmt: skip
            if got:
                assert got["immunefl_benign_accuracy"] == pytest.approx(got["immunefl_round"] / 1e6)
    finally:
        stop.set()
        t.join()


def test_http_endpoint_serves_and_stops() -> None:
    port = free_port()
    exp = MetricsExporter(_config(**{"metrics-port": port, "metrics-addr": "127.0.0.1"}))
    exp.start()
    try:
        exp.record(ROWS[0])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert _get(_samples(text.decode()), "immunefl_benign_accuracy") == 0.5
        with pytest.raises(RuntimeError, match=f"metrics-port {port}"):
            MetricsExporter(_config(**{"metrics-port": port, "metrics-addr": "127.0.0.1"})).start()
    finally:
        exp.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Gateway.received.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_push_each_round_to_gateway_and_survive_a_dead_one() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    _Gateway.received.clear()
    try:
        exp = MetricsExporter(_config(**{"metrics-push-url": url}))
        for row in ROWS:
            exp.record(row)
    finally:
        server.shutdown()
    assert [p for _, p, _ in _Gateway.received] == ["/metrics/job/immunefl/run/m1"] * 2
    last = _samples(_Gateway.received[-1][2].decode())
    assert _get(last, "immunefl_round") == 2
    dead = MetricsExporter(_config(**{"metrics-push-url": f"http://127.0.0.1:{free_port()}"}))
    dead.record(ROWS[0])  # logged and counted, the run goes on
    assert dead.push_failures == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("metrics-port", 70000, "metrics-port"), ("metrics-push-url", "gw:9091", "http"),
     ("metrics-linger", -1, "metrics-linger")],
)  # fmt: skip
def test_bad_metrics_config_is_named(key, value, message) -> None:
    from task.schema import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config(**{key: value})


def test_every_metric_is_documented() -> None:
    doc = (PROJECT_ROOT / "docs" / "metrics.md").read_text()
    missing = [name for name in METRICS if f"`{name}" not in doc]
    assert not missing, f"docs/metrics.md lacks {missing}"
    assert len(NORM_BUCKETS) > 3


def _dashboard_metric_names(path: Path) -> set[str]:
    import json
    import re

    dash = json.loads(path.read_text())
    exprs = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash)
    assert exprs, "the dashboard has no queries"
    return {m for e in exprs for m in re.findall(r"\bimmunefl_[a-z_]+", e)}


def test_dashboard_queries_only_exported_metrics() -> None:
    path = PROJECT_ROOT / "docker" / "grafana" / "dashboards" / "immunefl.json"
    exported = set()
    for name, (kind, _, _) in METRICS.items():
        if kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "info":
            exported.add(f"{name}_info")
        else:
            exported.add(name)
    used = _dashboard_metric_names(path)
    assert used - exported == set(), f"dashboard queries unknown metrics {used - exported}"
    for needed in ("immunefl_benign_accuracy", "immunefl_misclassification_confidence",
                   "immunefl_attack_success_rate", "immunefl_adversarial_round",
                   "immunefl_replies_total", "immunefl_round_duration_seconds",
                   "immunefl_aggregate_duration_seconds", "immunefl_mask_density",
                   "immunefl_wbc_perturbed_fraction"):  # fmt: skip
        assert needed in used, f"dashboard does not show {needed}"


def test_the_metrics_endpoint_binds_loopback_unless_opened() -> None:
    from task.schema import load_schema

    assert load_schema()["metrics-addr"] == "127.0.0.1"
    assert MetricsExporter(_config(**{"metrics-port": 1})).addr == "127.0.0.1"
    assert MetricsExporter(_config(**{"metrics-port": 1, "metrics-addr": "0.0.0.0"})).addr == (
        "0.0.0.0"
    )
