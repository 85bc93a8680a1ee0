"""Prometheus metrics of a run: an HTTP endpoint (``metrics-port``) and/or a Pushgateway
(``metrics-push-url``), fed from the same per-round rows as ``rounds.jsonl``.

All series carry the labels ``run`` (run name) and ``strategy``. A scrape always sees one
consistent round: the collector serves a snapshot that is replaced as a whole, under a lock,
when a round ends (``immunefl_round`` and ``immunefl_benign_accuracy`` never come from two
different rounds). Every metric is documented in ``docs/metrics.md``; ``METRICS`` below is the
single list the exporter, the docs test and the Grafana dashboard test read.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator, Mapping
from logging import INFO, WARNING
from typing import Any

from flwr.common.logger import log
from prometheus_client import CollectorRegistry, push_to_gateway, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from task.runconfig import RunConfig

# name -> (type, help, row key or None). Gauges show the last finished round's value.
METRICS: dict[str, tuple[str, str, str | None]] = {
    "immunefl_round": ("gauge", "Last finished server round.", "round"),
    "immunefl_num_rounds": ("gauge", "Rounds configured for the run (num-server-rounds).", None),
    "immunefl_benign_accuracy": (
        "gauge", "Accuracy of the global model on the server test set (FL-WBC: without D_M).",
        "benign_acc"),
    "immunefl_benign_loss": ("gauge", "Cross-entropy of the global model on the server test set.",
                             "benign_loss"),
    "immunefl_misclassification_confidence": (
        "gauge", "Targeted attack: mean softmax probability of the adversarial labels on D_M "
        "(FL-WBC Sec. 7.1).", "mis_conf"),
    "immunefl_misclassification_accuracy": (
        "gauge", "Targeted attack: share of D_M classified as the adversarial label.", "mis_acc"),
    "immunefl_attack_success_rate": (
        "gauge", "Backdoor attacks: share of triggered test images classified as the target.",
        "asr"),
    "immunefl_adversarial_round": (
        "gauge", "1 when malicious nodes trained in the last round, else 0.", "adversarial"),
    "immunefl_malicious_aggregated": (
        "gauge", "Malicious updates that reached the aggregation rule in the last round "
        "(0 in an adversarial round: the attack was not delivered).", "malicious_aggregated"),
    "immunefl_aggregate_rejected": (
        "gauge", "1 when the last round's aggregate was refused (not a finite model of the "
        "broadcast shapes, or the rule raised).",
        "aggregate_rejected"),
    "immunefl_weight_capped": (
        "gauge", "Replies of the last round whose claimed example count was capped.",
        "weight_capped"),
    "immunefl_replies_total": (
        "counter", "Training replies by status: ok (aggregated), rejected (screened out), "
        "failed (error, timeout or missing).", None),
    "immunefl_round_duration_seconds": ("gauge", "Wall time of the last round.", "round_seconds"),
    "immunefl_aggregate_duration_seconds": (
        "gauge", "Time the last round's aggregation (screening + rule) took.", "aggregate_seconds"),
    "immunefl_mask_density": (
        "gauge", "Invariant aggregator: fraction of coordinates the AND-mask kept.",
        "mask_density"),
    "immunefl_wbc_perturbed_fraction": (
        "gauge", "FL-WBC: mean share of parameters perturbed per step.",
        "client.wbc_perturbed_fraction"),
    "immunefl_aep_norm": (
        "gauge", "||W_t(S) - W_t(S minus M)||: attack effect on parameters (FL-WBC Def. 1).",
        "aep_norm"),
    "immunefl_update_norm": (
        "histogram", "L2 norms of the accepted client updates (pseudo-gradients), all rounds.",
        None),
    "immunefl_last_round_timestamp_seconds": (
        "gauge", "Unix time the last round finished.", None),
    "immunefl_run": ("info", "The run: dataset, attack, client defense.", None),
}  # fmt: skip

NORM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, float("inf"))


class RoundCollector:
    """A prometheus_client collector serving the latest round's snapshot (see module doc)."""

    def __init__(self, config: RunConfig) -> None:
        self.labels = {"run": config.run_name, "strategy": config.strategy}
        self.info = {
            "dataset": config.dataset,
            "attack": config.attack,
            "client_defense": config.client_defense,
        }
        self.num_rounds = config.num_server_rounds
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._replies = {"ok": 0.0, "rejected": 0.0, "failed": 0.0}
        self._bucket_counts = [0] * len(NORM_BUCKETS)
        self._norm_sum = 0.0
        self._timestamp: float | None = None

    def observe(self, row: Mapping[str, Any]) -> None:
        """Fold one finished round's results row into the snapshot."""
        values = {}
        for name, (kind, _, key) in METRICS.items():
            if kind == "gauge" and key is not None and row.get(key) is not None:
                values[name] = float(row[key])
        rejected = float(row.get("rejected_replies", 0) or 0)
        ok = float(row.get("num_replies", 0) or 0) - rejected
        failed = float(row.get("failed_replies", 0) or 0)
        norms = [float(v) for v in row.get("update_norms", []) or []]
        with self._lock:
            self._values = values
            self._replies["ok"] += ok
            self._replies["rejected"] += rejected
            self._replies["failed"] += failed
            for v in norms:
                # the first bucket holding v (counts per bucket; cumulated when collected)
                self._bucket_counts[bisect.bisect_left(NORM_BUCKETS, v)] += 1
            self._norm_sum += sum(norms)
            self._timestamp = time.time()

    def collect(self) -> Iterator[Metric]:
        names, label_values = list(self.labels), list(self.labels.values())
        with self._lock:
            values = dict(self._values)
            replies = dict(self._replies)
            counts, total, stamp = list(self._bucket_counts), self._norm_sum, self._timestamp
        values["immunefl_num_rounds"] = float(self.num_rounds)
        if stamp is not None:
            values["immunefl_last_round_timestamp_seconds"] = stamp
        for name, (kind, help_text, _) in METRICS.items():
            if kind == "gauge" and name in values:
                g = GaugeMetricFamily(name, help_text, labels=names)
                g.add_metric(label_values, values[name])
                yield g
        c = CounterMetricFamily(
            "immunefl_replies", METRICS["immunefl_replies_total"][1], labels=[*names, "status"]
        )
        for status, count in replies.items():
            c.add_metric([*label_values, status], count)
        yield c
        cumulative, buckets = 0, []
        for bound, count in zip(NORM_BUCKETS, counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        h = HistogramMetricFamily(
            "immunefl_update_norm", METRICS["immunefl_update_norm"][1], labels=names
        )
        h.add_metric(label_values, buckets, total)
        yield h
        info = InfoMetricFamily("immunefl_run", METRICS["immunefl_run"][1], labels=names)
        info.add_metric(label_values, self.info)
        yield info


class MetricsExporter:
    """Serves (``metrics-port`` > 0) and/or pushes (``metrics-push-url``) a run's metrics.

    Export problems are logged and counted, never fatal: a run must not fail because a
    Pushgateway is down.
    """

    def __init__(self, config: RunConfig) -> None:
        self.registry = CollectorRegistry()
        self.collector = RoundCollector(config)
        self.registry.register(self.collector)
        self.port = config.metrics_port
        self.addr = config.metrics_addr
        self.push_url = config.metrics_push_url
        self.linger = config.metrics_linger
        self.job = "immunefl"
        self.push_failures = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.port > 0 or bool(self.push_url)

    def start(self) -> None:
        if self.port > 0:
            try:
                self._server, self._thread = start_http_server(
                    self.port, addr=self.addr, registry=self.registry
                )
            except OSError as exc:
                raise RuntimeError(
                    f"metrics-port {self.port}: cannot serve Prometheus metrics on "
                    f"{self.addr}:{self.port} ({exc}); choose a free port or 0 to turn it off"
                ) from exc
            log(INFO, "[immunefl] Prometheus metrics on http://%s:%d/metrics", self.addr,
                self.port)  # fmt: skip

    def record(self, row: Mapping[str, Any]) -> None:
        self.collector.observe(row)
        if self.push_url:
            try:
                push_to_gateway(
                    self.push_url, job=self.job, registry=self.registry,
                    grouping_key={"run": self.collector.labels["run"]}, timeout=5,
                )  # fmt: skip
            except OSError as exc:
                self.push_failures += 1
                log(WARNING, "[immunefl] push to %s failed (%d so far): %s", self.push_url,
                    self.push_failures, exc)  # fmt: skip

    def close(self) -> None:
        """Keep serving `metrics-linger` seconds (a last scrape), then stop the endpoint."""
        if self._server is None:
            return
        if self.linger > 0:
            time.sleep(self.linger)
        self._server.shutdown()
        self._server.server_close()
        self._server = None
