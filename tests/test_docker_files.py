"""docker/: compose files validate (Debian's docker-compose, offline) and agree with the configs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from immunefl.config import PROJECT_ROOT, resolve_config

COMPOSE = shutil.which("docker-compose")
DOCKER = PROJECT_ROOT / "docker"
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="Debian package docker-compose missing")


def _config(*files: str, password: str | None = "pw") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    args = [COMPOSE or "docker-compose"]
    for f in files:
        args += ["-f", str(DOCKER / f)]
    return subprocess.run([*args, "config"], capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT)  # fmt: skip


@needs_compose
def test_compose_with_tls_and_monitoring_validates_and_matches_the_run_config() -> None:
    out = _config("compose.yml", "with-tls.yml", "with-monitoring.yml")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    nodes = {k: v for k, v in services.items() if k.startswith("supernode-")}
    node_configs = [v["command"][v["command"].index("--node-config") + 1] for v in nodes.values()]
    roles = ['role="malicious"' in c for c in node_configs]
    run = resolve_config(PROJECT_ROOT / "configs" / "deploy-docker.yaml")
    assert len(nodes) == int(run["num-partitions"]) and sum(roles) == int(run["num-malicious"])
    assert sorted(c.split()[0] for c in node_configs) == [
        f"partition-id={i}" for i in range(len(nodes))
    ]
    for name in nodes:  # one ClientApp SuperExec per SuperNode, pointed at it
        cmd = services[name.replace("supernode", "clientapp")]["command"]
        assert cmd[cmd.index("--runtime-api-address") + 1] == f"{name}:9094"
    # TLS everywhere the SuperLink is reached; no --insecure towards it
    assert "--ssl-certfile" in services["superlink"]["command"]
    for name in [*nodes, "serverapp"]:
        assert "--insecure" not in services[name]["command"], name
        assert "--root-certificates" in services[name]["command"], name
    # monitoring: pinned images, Prometheus scrapes the exporter port the run config opens
    for name in ("prometheus", "grafana", "pushgateway", "superlink", *nodes):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), image
    prom = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}  # fmt: skip
    assert f"serverapp:{run['metrics-port']}" in targets
    assert run["metrics-push-url"].removeprefix("http://") in targets
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_SECURITY_ADMIN_PASSWORD"] == "pw"


@needs_compose
def test_grafana_needs_an_admin_password() -> None:
    out = _config("compose.yml", "with-monitoring.yml", password=None)
    assert out.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in out.stderr


@needs_compose
def test_gpu_overlay_reserves_a_gpu_per_clientapp() -> None:
    out = _config("compose.yml", "with-gpu.yml")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    apps = [k for k in services if k.startswith("clientapp-")]
    assert apps
    for name in apps:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]


def test_provisioned_grafana_points_at_the_compose_prometheus() -> None:
    ds = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    source = ds["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    import json

    dash = json.loads((DOCKER / "grafana/dashboards/immunefl.json").read_text())
    uids = {p["datasource"]["uid"] for p in dash["panels"]}
    assert uids == {source["uid"]}
    prov = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/immunefl.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_image_installs_every_dependency_but_flwr(tmp_path) -> None:
    """Run the Dockerfile's own requirements step on pyproject.toml (no Docker needed)."""
    import re
    import sys

    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "python requirements.py pyproject.toml > requirements.txt" in dockerfile
    out = subprocess.run([sys.executable, str(DOCKER / "requirements.py"),
                          str(PROJECT_ROOT / "pyproject.toml")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    reqs = out.stdout.split()
    names = {re.split(r"[<>=\[]", r)[0] for r in reqs}
    assert {"torch", "torchvision", "flwr-datasets", "prometheus-client", "numpy"} <= names
    assert "flwr" not in names  # the base image pins Flower itself
    assert "FROM flwr/superexec:${FLWR_VERSION}" in dockerfile and "USER app" in dockerfile


def test_dockerfiles_build_with_the_classic_builder_too() -> None:
    """No heredocs (BuildKit only) and no `# syntax=` line (needs a registry)."""
    for path in [DOCKER / "Dockerfile", *sorted((DOCKER / "standin").glob("Dockerfile.*"))]:
        text = path.read_text()
        assert "<<" not in text, path
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), path


def test_build_context_leaves_out_environments_results_and_secrets() -> None:
    """An allow-list: everything out, then only what docker/Dockerfile copies back in."""
    lines = [x for x in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
             if x.strip() and not x.startswith("#")]  # fmt: skip
    assert lines == ["*", "!pyproject.toml", "!docker/requirements.py"]
