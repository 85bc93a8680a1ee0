"""docker/: compose files validate (Debian's docker-compose, offline) and agree with the configs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from immunefl.experiments import resolve_config
from task.schema import PROJECT_ROOT

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
    # ClientApp code (an attacker's) shares a network with its own SuperNode only: it reaches
    # neither the SuperLink's port nor another node's Runtime API
    members: dict[str, set[str]] = {}
    for svc, spec in services.items():
        for net in spec.get("networks") or {"default": None}:
            members.setdefault(net, set()).add(svc)
    for name in nodes:
        app = name.replace("supernode", "clientapp")
        assert set(services[app]["networks"]) == {f"node-{name.split('-')[1]}"}
        assert members[f"node-{name.split('-')[1]}"] == {name, app}
    assert members["link"] == {"superlink", "serverapp"}
    assert members["fleet"] == {"superlink", *nodes}
    assert members["monitoring"] == {"serverapp", "prometheus", "pushgateway", "grafana"}
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
    # one source per series (the Pushgateway): scraping the ServerApp too counted everything twice
    assert targets == {run["metrics-push-url"].removeprefix("http://")}
    assert int(run["metrics-port"]) == 0 and run["run-name"] == ""  # a new directory per run
    # the SuperLink gets its certificate and key, never the CA's private key
    mounts = [v.split(":")[1] if isinstance(v, str) else v["target"]
              for v in services["superlink"]["volumes"]]  # fmt: skip
    assert sorted(mounts) == [f"/app/certificates/{f}" for f in ("ca.crt", "server.key",
                                                                   "server.pem")]  # fmt: skip
    for name, service in services.items():  # published ports on loopback only
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:") or port.get("host_ip") == "127.0.0.1", name
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_SECURITY_ADMIN_PASSWORD"] == "pw"


@needs_compose
def test_auth_and_state_overlays_combine_in_any_order() -> None:
    outs = [
        _config("compose.yml", "with-tls.yml", *files)
        for files in (("with-auth.yml", "with-state.yml"), ("with-state.yml", "with-auth.yml"))
    ]
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    first, second = (yaml.safe_load(o.stdout)["services"] for o in outs)
    assert first == second
    link = first["superlink"]
    assert link["environment"]["SUPERLINK_AUTH_ARGS"] == "--enable-supernode-auth"
    assert link["environment"]["SUPERLINK_STATE_ARGS"].startswith("--database /app/")
    assert any(str(v).startswith("superlink-state:/app") for v in link["volumes"])
    assert "SUPERLINK_STATE_ARGS" in " ".join(link["entrypoint"])
    for i in range(5):  # each SuperNode: its own key, TLS, and nothing else mounted
        node = first[f"supernode-{i}"]
        cmd = node["command"]
        assert cmd[cmd.index("--auth-supernode-private-key") + 1] == f"/app/keys/node-{i}"
        assert "--root-certificates" in cmd and "--insecure" not in cmd
        targets = sorted(str(v).split(":")[1] for v in node["volumes"])
        assert targets == ["/app/certificates/ca.crt", f"/app/keys/node-{i}"]


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

    def names(*mode: str) -> set[str]:
        out = subprocess.run([sys.executable, str(DOCKER / "requirements.py"), *mode,
                              str(PROJECT_ROOT / "pyproject.toml")],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return {re.split(r"[<>=\[]", r)[0] for r in out.stdout.split()}

    assert "python requirements.py --torch pyproject.toml > torch.txt" in dockerfile
    assert "python requirements.py --no-torch pyproject.toml > requirements.txt" in dockerfile
    # torch only from TORCH_INDEX: as an extra index PyPI's newer torch would win
    assert '--index-url "${TORCH_INDEX}" -r torch.txt' in dockerfile
    assert "extra-index-url" not in dockerfile
    every = names()
    assert {"torch", "torchvision", "flwr-datasets", "prometheus-client", "numpy"} <= every
    assert "flwr" not in every  # the base image pins Flower itself
    assert names("--torch") == {"torch", "torchvision"}
    assert names("--no-torch") == every - {"torch", "torchvision"}
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


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_generate_certs_never_silently_keeps_a_certificate_missing_a_new_name(tmp_path) -> None:
    script, out = str(DOCKER / "generate-certs.sh"), tmp_path / "certs"

    def gen(*names: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", script, str(out), *names], capture_output=True, text=True)

    assert gen("node-host", "10.0.0.1").returncode == 0
    assert oct((out / "server.key").stat().st_mode)[-3:] == "600"
    pem = (out / "server.pem").read_bytes()
    again = gen("node-host", "10.0.0.1")  # the same names: kept, said so, exit 0
    assert again.returncode == 0 and "covers every name" in again.stderr
    new = gen("other-host", "10.0.0.2")  # a name the certificate lacks: refused, named
    assert new.returncode == 1 and "not valid for: other-host 10.0.0.2" in new.stderr
    assert (out / "server.pem").read_bytes() == pem  # never overwritten


@needs_compose
def test_the_superexec_secret_reaches_the_superlink_and_the_serverapp_only() -> None:
    out = _config("compose.yml", "with-tls.yml", "with-auth.yml", "with-state.yml",
                  "with-secret.yml")  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert config["secrets"]["superexec"]["file"].endswith("docker/secrets/superexec")
    holders = {name for name, spec in services.items() if spec.get("secrets")}
    assert holders == {"superlink", "serverapp"}
    for name in holders:
        assert [s["source"] for s in services[name]["secrets"]] == ["superexec"]
    link = services["superlink"]
    flag = "--superexec-auth-secret-file /run/secrets/superexec"
    assert link["environment"]["SUPERLINK_SECRET_ARGS"] == flag
    assert "SUPERLINK_SECRET_ARGS" in link["entrypoint"][2]  # on the SuperLink's command line
    assert "--isolation" in link["command"]  # Flower ignores the secret in subprocess isolation
    assert link["command"][link["command"].index("--isolation") + 1] == "process"
    app = services["serverapp"]  # the SuperExec signs with it; TLS arguments unchanged
    assert app["entrypoint"] == ["flower-superexec", *flag.split()]
    assert app["command"] == ["--root-certificates", "/app/certificates/ca.crt",
                              "--runtime-api-address", "superlink:9092"]  # fmt: skip
    # the other overlays still combine with it
    assert link["environment"]["SUPERLINK_AUTH_ARGS"] == "--enable-supernode-auth"
    assert "SUPERLINK_STATE_ARGS" in link["environment"]
