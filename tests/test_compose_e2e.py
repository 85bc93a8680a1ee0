"""docker/ for real: images built, the compose federation up in containers, a run, checked.

A private Docker daemon (own data-root, exec-root, socket and pidfile in a temporary directory,
stopped by PID) builds the images with no registry: scripts/build-standin-images.sh makes
stand-ins of Flower's and Prometheus' images (BuildKit), docker-compose builds docker/Dockerfile
(docker-compose v1: the classic builder). Then compose.yml + with-tls.yml + with-auth.yml +
with-state.yml + with-monitoring.yml come up without Grafana (no Grafana image can be made
offline), the SuperNode keys are registered, and `immunefl deploy run configs/deploy-docker.yaml`
runs 2 rounds (partition 4 malicious, targeted attack in round 2) from the host against the
SuperLink's loopback port. Published ports are on 127.0.0.1; the daemon does not touch iptables,
so containers reach nothing but each other. Every container, network, mount and process is gone
at the end (checked). Skipped, with the reason, where no Docker daemon can start.

The data: a slice of the real Fashion-MNIST (FMNIST_DIR), so that 5 ClientApps train in seconds
on 2 cores; the run config, node configs and images are the shipped ones.

Time on a 2-core machine: about 3 min with warm caches (~/.cache/immunefl/docker), 4 min from an
empty cache; much longer when other work loads the machine (Flower gives a spawned ClientApp
process 30 s to claim its task, so a heavily overloaded host can fail the run's first query).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from immunefl.deploy import Deployment, Security, generate_certs, generate_node_key
from immunefl.processes import free_port
from task.schema import PROJECT_ROOT
from tests.conftest import slice_fmnist

pytestmark = pytest.mark.slow

DOCKER_DIR = PROJECT_ROOT / "docker"
FILES = ["compose.yml", "with-tls.yml", "with-auth.yml", "with-state.yml", "with-monitoring.yml"]
NODES = 5
SERVICES = [
    "superlink",
    "pushgateway",
    "prometheus",
    "serverapp",
    *(f"supernode-{i}" for i in range(NODES)),
    *(f"clientapp-{i}" for i in range(NODES)),
]  # fmt: skip  (all but grafana)
APP_UID = 49999  # the user `app` of Flower's images
TRAIN_SLICE, TEST_SLICE = 2500, 1000
RUN_ARGS = ["--set", "num-server-rounds=2", "--set", "adv-rounds=2"]


def _docker_cli() -> str | None:
    # Debian's client (20.10) first: BuildKit built in. A newer client without the buildx
    # plugin refuses DOCKER_BUILDKIT=1.
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")


def _why_no_docker() -> str | None:
    if os.geteuid() != 0:
        return "a private Docker daemon needs root"
    for tool, pkg in (("dockerd", "docker.io"), ("docker-compose", "docker-compose"),
                      ("openssl", "openssl"), ("ssh-keygen", "openssh-client")):  # fmt: skip
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {pkg}; scripts/setup.sh does it in CI)"
    if _docker_cli() is None:
        return "no docker client (apt-get install docker.io)"
    cache = Path(os.environ.get("IMMUNEFL_DOCKER_CACHE", Path.home() / ".cache/immunefl/docker"))
    base_tar = cache / "bookworm-minbase-python3.tar"
    if shutil.which("debootstrap") is None and not base_tar.exists():
        return "debootstrap not found and no cached base image (apt-get install debootstrap)"
    return None


def _run(cmd: list[str], env: dict[str, str], timeout: float = 600, check: bool = True,
         **kw: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {out.returncode}\n{out.stdout[-3000:]}\n"
                             f"{out.stderr[-3000:]}")  # fmt: skip
    return out


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _links() -> set[str]:
    """Network interfaces of the host (bridges and veths a daemon made show up here)."""
    return set(os.listdir("/sys/class/net"))


class PrivateDockerd:
    """A dockerd of our own under `root`, stopped by PID; nothing of it survives `stop`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = root / "docker.sock"
        self.pidfile = root / "docker.pid"
        self.log = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.links_before = _links()
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        self.env.pop("DOCKER_CONTEXT", None)

    def start(self, timeout: float = 60.0) -> None:
        pool = f"10.{random.randint(200, 249)}.0.0/16"  # noqa: S311  (not the host's networks)
        cmd = ["dockerd", "--data-root", str(self.root / "data"), "--exec-root",
               str(self.root / "exec"), "-H", f"unix://{self.sock}", "--pidfile",
               str(self.pidfile), "--bridge=none", "--iptables=false", "--ip-forward=false",
               "--ip-masq=false", "--default-address-pool", f"base={pool},size=24"]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ok = subprocess.run([_docker_cli(), "version"], env=self.env, capture_output=True)
            if ok.returncode == 0:
                return
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-1500:]
        self.stop()
        raise RuntimeError(f"dockerd did not start ({timeout:.0f}s):\n{tail}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def leftovers(self) -> list[str]:
        """What of this daemon is still on the machine (after `stop`)."""
        problems = [f"process {p}" for p in _processes_mentioning(str(self.root))]
        mounts = Path("/proc/mounts").read_text().splitlines()
        problems += [f"mount {m}" for m in mounts if str(self.root) in m]
        problems += [f"network interface {n}" for n in _links() - self.links_before]
        return problems


class Stack:
    """The compose federation in a private daemon; `close` tears it all down and reports."""

    def __init__(self, tmp: Path, fmnist: Path) -> None:
        self.tmp = tmp
        self.timings: dict[str, float] = {}
        self.closed = False
        self.problems: list[str] = []
        self.daemon = PrivateDockerd(tmp / "d")
        self.daemon.root.mkdir()
        self.docker = _docker_cli() or "docker"
        self.project = f"immunefle2e{os.getpid()}"
        self.port, self.prom_port = free_port(), free_port()
        self.certs = generate_certs(tmp / "certs", container_uid=APP_UID)  # the SuperLink reads it
        self.keys = tmp / "keys"
        for i in range(NODES):
            generate_node_key(self.keys, f"node-{i}")
        self.stranger = generate_node_key(tmp / "stranger", "node-9")  # never registered
        for key in [*(self.keys / f"node-{i}" for i in range(NODES)), self.stranger]:
            os.chown(key, APP_UID, -1)  # each SuperNode container reads its own key
        data = slice_fmnist(fmnist, tmp / "fmnist", TRAIN_SLICE, TEST_SLICE)
        self.env = dict(self.daemon.env, COMPOSE_PROJECT_NAME=self.project,
                        IMMUNEFL_CERTS=str(self.certs), IMMUNEFL_KEYS=str(self.keys),
                        FMNIST_DIR=str(data), SUPERLINK_PORT=str(self.port),
                        PROMETHEUS_PORT=str(self.prom_port), DOCKER=self.docker,
                        GRAFANA_ADMIN_PASSWORD="grafana-is-not-started")  # fmt: skip
        self.flwr_home = tmp / "flwr"
        self.link: Deployment | None = None

    def _step(self, name: str, start: float) -> None:
        self.timings[name] = round(time.monotonic() - start, 1)

    def compose(self, *args: str, timeout: float = 600, check: bool = True,
                **env: str) -> subprocess.CompletedProcess[str]:  # fmt: skip
        files = [a for f in FILES for a in ("-f", str(DOCKER_DIR / f))]
        return _run(["docker-compose", *files, *args], dict(self.env, **env), timeout, check)

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def up(self) -> None:
        t = time.monotonic()
        self.daemon.start()
        self._step("dockerd", t)
        t = time.monotonic()
        _run(["bash", str(PROJECT_ROOT / "scripts/build-standin-images.sh")],
             dict(self.env, DOCKER_BUILDKIT="1"), timeout=1800)  # fmt: skip
        self._step("stand-in images (BuildKit)", t)
        # docker-compose v1 builds through the Docker API: the classic builder. Meanwhile the
        # SuperLink, monitoring and SuperNodes (stand-in images) start and the keys get registered.
        t = time.monotonic()
        files = [a for f in FILES for a in ("-f", str(DOCKER_DIR / f))]
        build_log = self.tmp / "compose-build.log"
        with build_log.open("w") as log:
            build = subprocess.Popen(  # noqa: S603
                ["docker-compose", *files, "build", "serverapp"], stdout=log,
                stderr=subprocess.STDOUT, env=dict(self.env, DOCKER_BUILDKIT="0",
                                                   COMPOSE_DOCKER_CLI_BUILD="0"),
            )  # fmt: skip
        warnings.warn("compose e2e: Grafana is not started (no Grafana image can be made "
                      "offline); its dashboard's queries are checked against Prometheus",
                      stacklevel=2)  # fmt: skip
        try:
            self.compose("up", "-d", "--no-build", "superlink", "pushgateway", "prometheus")
            self.link = Deployment(PROJECT_ROOT, self.flwr_home, self.tmp / "state",
                                   f"127.0.0.1:{self.port}", Security(self.certs))  # fmt: skip
            self.register_all()
            self.compose("up", "-d", "--no-build", *(f"supernode-{i}" for i in range(NODES)))
            self._step("SuperLink up + keys registered", t)
        except BaseException:
            build.kill()
            build.wait()
            raise
        rc = build.wait(timeout=1200)
        assert rc == 0, build_log.read_text()[-3000:]
        self._step("immunefl image (classic builder, in parallel)", t)
        if os.environ.get("IMMUNEFL_COMPOSE_BOTH_BUILDERS") == "1":
            t = time.monotonic()
            cmd = [self.docker, "build", "-q", "--network", "none", "-f",
                   str(DOCKER_DIR / "Dockerfile"), "-t", "immunefl/superexec:buildkit",
                   str(PROJECT_ROOT)]  # fmt: skip
            _run(cmd, dict(self.env, DOCKER_BUILDKIT="1"), timeout=1200)
            self._step("immunefl image (BuildKit)", t)
        t = time.monotonic()
        self.compose("up", "-d", "--no-build", *SERVICES)
        self.link.wait_online(NODES, timeout=180)
        self._step("all up, nodes online", t)

    def register_all(self, timeout: float = 90.0) -> None:
        """Register every node's public key (in parallel; the SuperLink may still start)."""
        assert self.link is not None
        link, deadline = self.link, time.monotonic() + timeout

        def register(i: int) -> None:
            while True:
                try:
                    link.register(self.keys / f"node-{i}.pub", f"node-{i}")
                    return
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)

        with ThreadPoolExecutor(NODES) as pool:
            list(pool.map(register, range(NODES)))

    def deploy_run(self, *extra: str, timeout: float = 600) -> tuple[str, list[dict]]:
        """`immunefl deploy run configs/deploy-docker.yaml` -> (run dir, rounds.jsonl rows)."""
        t = time.monotonic()
        cmd = [sys.executable, "-m", "immunefl.cli", "deploy", "run",
               str(PROJECT_ROOT / "configs/deploy-docker.yaml"), "--superlink",
               f"127.0.0.1:{self.port}", "--certs", str(self.certs), "--flwr-home",
               str(self.flwr_home), *extra]  # fmt: skip
        try:
            out = _run(cmd, self.env, timeout, check=False, cwd=PROJECT_ROOT)
            failure = (
                ""
                if out.returncode == 0
                else (f"deploy run -> {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            )
        except subprocess.TimeoutExpired as exc:
            failure = f"deploy run still running after {timeout:.0f}s: {exc}"
        if failure:  # the why is in the containers: show their last lines
            logs = {
                svc: self.compose("logs", "--no-color", "--tail", "40", svc, check=False)
                for svc in ("superlink", "serverapp", "supernode-0", "clientapp-0")
            }
            raise AssertionError(
                failure + "\n" + "\n".join(f"--- {svc}:\n{o.stdout[-3000:]}"
                                            for svc, o in logs.items())
            )  # fmt: skip
        self._step(f"run {' '.join(extra)}", t)
        match = re.search(r"results in (/results/\S+)", out.stdout)
        assert match, out.stdout[-3000:]
        rows = self.results(match.group(1) + "/rounds.jsonl")
        return match.group(1), [json.loads(x) for x in rows.splitlines()]

    def results(self, path: str) -> str:
        out = _run([self.docker, "exec", self.container("serverapp"), "cat", path], self.env)
        return out.stdout

    def promql(self, expr: str) -> list[dict]:
        url = (f"http://127.0.0.1:{self.prom_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))  # fmt: skip
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def close(self) -> list[str]:
        if self.closed:
            return self.problems
        self.closed = True
        t = time.monotonic()
        try:
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=300,
                             check=False)  # fmt: skip
                left = _run([self.docker, "ps", "-aq"], self.env, check=False).stdout.split()
                if left:
                    self.problems.append(f"containers after `down`: {left}")
                    _run([self.docker, "rm", "-f", *left], self.env, check=False)
                nets = _run([self.docker, "network", "ls", "--format", "{{.Name}}"], self.env,
                            check=False).stdout.split()  # fmt: skip
                extra = [n for n in nets if n not in ("host", "none", "bridge")]
                if extra:
                    self.problems.append(f"networks after `down`: {extra}")
        finally:
            self.daemon.stop()
            self.problems += self.daemon.leftovers()
            shutil.rmtree(self.daemon.root, ignore_errors=True)
            self._step("teardown", t)
            print(f"compose e2e timings (s): {self.timings}", flush=True)
        return self.problems


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fmnist_dir: Path):
    why = _why_no_docker()
    if why:
        pytest.skip(f"compose e2e skipped: no Docker daemon can start here: {why}")
    s = Stack(tmp_path_factory.mktemp("compose"), fmnist_dir)
    try:
        try:
            s.up()
        except RuntimeError as exc:
            if "dockerd did not start" in str(exc):
                pytest.skip(f"compose e2e skipped: no Docker daemon can start here: {exc}")
            raise
        s.first = s.deploy_run(*RUN_ARGS)  # type: ignore[attr-defined]
        yield s
    finally:
        s.close()


def test_two_rounds_in_containers_with_the_attack_delivered(stack: Stack) -> None:
    run_dir, rows = stack.first  # type: ignore[attr-defined]
    assert [r["round"] for r in rows] == [1, 2]
    assert not rows[0]["adversarial"] and rows[1]["adversarial"]
    assert rows[1]["malicious"] == [4]  # partition 4: role="malicious" in the node config
    assert rows[1]["malicious_aggregated"] >= 1  # its update reached the aggregation rule
    assert rows[0]["malicious_aggregated"] == 0
    assert all(r["failed_replies"] == 0 for r in rows)
    summary = json.loads(stack.results(f"{run_dir}/summary.json"))
    assert summary["status"] == "completed"


def test_every_dashboard_query_matches_rounds_jsonl(stack: Stack) -> None:
    from server_app.metrics import METRICS

    run_dir, rows = stack.first  # type: ignore[attr-defined]
    run = run_dir.rsplit("/", 1)[1]
    last = rows[-1]
    deadline = time.monotonic() + 30  # the final push, then a 1 s scrape
    while not [r for r in stack.promql(f'immunefl_round{{run="{run}"}}')
               if float(r["value"][1]) == len(rows)]:  # fmt: skip
        assert time.monotonic() < deadline, "Prometheus never saw the last round"
        time.sleep(1)
    dash = json.loads((DOCKER_DIR / "grafana/dashboards/immunefl.json").read_text())
    exprs = {t["expr"] for p in dash["panels"] for t in p.get("targets", [])}
    assert exprs
    checked = []
    for expr in sorted(exprs):
        result = stack.promql(expr.replace("$run", run))
        name = re.search(r"immunefl_\w+", expr).group(0)  # type: ignore[union-attr]
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if expr.startswith(("sum by (run)", "immunefl_")) and "rate(" not in expr:
            key = METRICS.get(name, ("", "", None))[2]
            if name == "immunefl_replies_total":
                want: float | None = float(sum(r.get("rejected_replies") or 0 for r in rows))
            elif name == "immunefl_num_rounds":
                want = float(len(rows))
            else:
                want = None if last.get(key) is None else float(last[key])
            if want is None:  # no such value in the rows: no series either
                assert result == [], (expr, result)
            else:  # one series (one source: no double counting), the rows' value
                assert len(result) == 1, (expr, result)
                assert float(result[0]["value"][1]) == pytest.approx(want, rel=1e-6), expr
        else:  # rates and quantiles over the run: data, one series per group
            assert result, expr
            groups = [tuple(sorted(r["metric"].items())) for r in result]
            assert len(groups) == len(set(groups)), (expr, result)
            assert base in METRICS or name in METRICS, expr
        checked.append(expr)
    # with 2 rejected replies the old setup showed 4; now: ok + rejected + failed = replies sent
    total = stack.promql(f'sum(immunefl_replies_total{{run="{run}"}})')
    sent = sum((r.get("num_replies") or 0) + (r.get("failed_replies") or 0) for r in rows)
    assert float(total[0]["value"][1]) == sent
    assert len(checked) == len(exprs)


def test_a_second_run_on_the_same_stack(stack: Stack) -> None:
    first_dir, _ = stack.first  # type: ignore[attr-defined]
    run_dir, rows = stack.deploy_run("--set", "num-server-rounds=1", "--set", "adv-rounds=1")
    assert run_dir != first_dir  # an empty run-name: a new, timestamped directory
    assert [r["round"] for r in rows] == [1]


def test_an_unregistered_supernode_is_refused(stack: Stack) -> None:
    name = f"{stack.project}_stranger"
    cmd = [stack.docker, "run", "--name", name, "--network", f"{stack.project}_fleet",
           "-v", f"{stack.certs}/ca.crt:/app/certificates/ca.crt:ro",
           "-v", f"{stack.stranger}:/app/keys/node-9:ro", "flwr/supernode:1.41.0",
           "--superlink", "superlink:9092", "--root-certificates", "/app/certificates/ca.crt",
           "--auth-supernode-private-key", "/app/keys/node-9",
           "--node-config", 'partition-id=0 num-partitions=5 role="benign"']  # fmt: skip
    try:
        out = _run(cmd, stack.env, timeout=180, check=False)
    finally:
        _run([stack.docker, "rm", "-f", name], stack.env, check=False)
    assert out.returncode != 0
    assert "Failed to activate SuperNode" in out.stdout + out.stderr, out.stderr[-2000:]


def test_a_restarted_superlink_still_knows_the_registered_keys(stack: Stack) -> None:
    assert stack.link is not None
    stack.compose("restart", "-t", "10", "superlink")
    # in-memory state would forget the keys: the nodes could not come back
    stack.link.wait_online(NODES, timeout=180)
    nodes = json.loads(stack.link.flwr("supernode", "list", stack.link.connection, "--format",
                                       "json").stdout)["nodes"]  # fmt: skip
    assert len(nodes) >= NODES


def test_nothing_is_left_behind(stack: Stack) -> None:
    assert stack.close() == []
