"""`immunefl deploy ...`: the deployment engine as processes, on one host or several.

One host (everything on loopback, started, run and stopped by one command)::

    immunefl deploy local configs/deploy-smoke.yaml --tls --auth

Several hosts (the SuperLink host also holds the CA; copy ``ca.crt`` to the others)::

    # SuperLink host (10.0.0.1); opening the port opens the Control API too (docs/security.md)
    immunefl deploy certs certs/ 10.0.0.1
    # beyond loopback the ServerApp's SuperExec gets a shared secret (<state>/superexec.secret)
    immunefl deploy superlink --address 10.0.0.1:9092 --certs certs/ --auth --state .deploy
    # each node host: a key per node, public keys sent to the operator who registers them
    immunefl deploy keys keys/ --partitions 0-1
    immunefl deploy register --superlink 10.0.0.1:9092 --certs certs/ --keys keys/  # operator
    immunefl deploy supernodes --superlink 10.0.0.1:9092 --certs certs/ --keys keys/ \\
        --partitions 0-1 --num-partitions 4 --malicious 1 --state .deploy
    # (waits until each node is online; exit 1 naming each refused node and why)
    # from the operator's machine on the nodes' private network (or through an SSH tunnel:
    # `ssh -N -L 9092:10.0.0.1:9092 operator@10.0.0.1 &`, then --superlink 127.0.0.1:9092)
    immunefl deploy run configs/deploy-smoke.yaml --superlink 10.0.0.1:9092 --certs certs/
    # on every host
    immunefl deploy down --state .deploy
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from immunefl.deploy import (
    Deployment,
    Security,
    generate_certs,
    generate_node_key,
    parse_partitions,
    stop_state,
)
from immunefl.deploy_checks import StartedNode, is_loopback, superexec_secret, wait_for_nodes
from immunefl.experiments import CHECKS, parse_overrides, resolve_config
from immunefl.processes import free_port
from immunefl.submission import RunFailed, write_run_config
from task.runconfig import RunConfig
from task.schema import PROJECT_ROOT, ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
OPEN_CONTROL_API_WARNING = (
    "immunefl: WARNING: the SuperLink binds {address}. Flower serves the Fleet API (SuperNodes), "
    "the Control API (`flwr run`, `flwr stop`, ...) and the Runtime API of the ServerApp on this "
    "one port, and the open-source release authenticates no Control API user: anyone who can "
    "reach it (with --certs: anyone holding the public ca.crt) can submit and stop runs. Keep it "
    "on a private network, or expose only /v1/fleet/ through a reverse proxy and submit runs "
    "through an SSH tunnel (docs/security.md)."
)

NO_SECRET_WARNING = (
    "immunefl: WARNING: --no-superexec-secret: nothing binds the ServerApp's SuperExec to this "
    "SuperLink, so whoever reaches the port can take the ServerApp's task (the app and its run "
    "config) and act as the ServerApp."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    dep = sub.add_parser(
        "deploy",
        help="deployment engine: SuperLink + SuperNodes as processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = dep.add_subparsers(dest="deploy_command", required=True)

    def security_args(p: argparse.ArgumentParser, server: bool = False) -> None:
        p.add_argument("--certs", type=Path, help="TLS directory (ca.crt" +
                       (", server.pem, server.key)" if server else ")"))  # fmt: skip
        p.add_argument("--insecure", action="store_true", help="no TLS (testing only)")
        if server:
            p.add_argument("--auth", action="store_true", help="SuperNode authentication")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--flwr-home", type=Path, default=Path(os.environ.get(
            "IMMUNEFL_FLWR_HOME", PROJECT_ROOT / ".flwr")), help="private FLWR_HOME")  # fmt: skip

    p = dsub.add_parser("certs", help="generate a CA and a SuperLink TLS certificate")
    p.add_argument("out", type=Path)
    p.add_argument("names", nargs="*", help="extra host names / IPs of the SuperLink")
    p.add_argument("--container", action="store_true", help="for docker compose: give server.key "
                   "to the SuperLink container's user (as root; --container-uid)")  # fmt: skip
    p.add_argument("--container-uid", type=int, default=49999, help="uid of that user (49999)")

    p = dsub.add_parser("keys", help="generate SuperNode key pairs node-<partition>(.pub)")
    p.add_argument("out", type=Path)
    p.add_argument("--partitions", required=True, help="e.g. 0-3,7")

    p = dsub.add_parser("superlink", help="start a SuperLink (detached)")
    p.add_argument(
        "--address",
        default="127.0.0.1:9092",
        help="HOST:PORT to bind (default loopback: Flower serves the Fleet, Control and Runtime "
        "API on this one port; see docs/security.md before opening it)",
    )
    p.add_argument("--state", type=Path, default=Path(".deploy"))
    p.add_argument("--superexec-secret", type=Path, metavar="FILE", help="shared secret (raw "
                   "bytes, mode 600) binding the ServerApp's SuperExec to the SuperLink; default "
                   "beyond loopback: a new random <state>/superexec.secret")  # fmt: skip
    p.add_argument("--no-superexec-secret", action="store_true", help="no secret even beyond "
                   "loopback: whoever reaches the port can take the ServerApp's task")  # fmt: skip
    security_args(p, server=True)
    common(p)

    p = dsub.add_parser("register", help="register node public keys with the SuperLink")
    p.add_argument("--superlink", required=True, help="HOST:PORT")
    p.add_argument("--keys", type=Path, required=True, help="directory of node-*.pub")
    security_args(p)
    common(p)

    p = dsub.add_parser("supernodes", help="start SuperNodes (detached) for some partitions")
    p.add_argument("--superlink", required=True, help="HOST:PORT")
    p.add_argument("--partitions", required=True, help="partition ids of the nodes, e.g. 0-3")
    p.add_argument("--num-partitions", type=int, required=True)
    p.add_argument("--malicious", default="", help="partition ids with role=malicious")
    p.add_argument("--keys", type=Path, help="private keys node-<partition> (authentication)")
    p.add_argument("--state", type=Path, default=Path(".deploy"))
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the nodes to be online (60)")  # fmt: skip
    security_args(p)
    common(p)

    p = dsub.add_parser("run", help="submit a run to a deployed SuperLink and wait for it")
    p.add_argument("config", type=Path, nargs="?")
    p.add_argument("--superlink", required=True, help="HOST:PORT")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    security_args(p)
    common(p)

    p = dsub.add_parser("down", help="stop what `superlink`/`supernodes` started")
    p.add_argument("--state", type=Path, default=Path(".deploy"))

    p = dsub.add_parser("local", help="SuperLink + one SuperNode per partition on loopback; "
                        "run CONFIG; stop everything")  # fmt: skip
    p.add_argument("config", type=Path, nargs="?")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tls", action="store_true", help="TLS with a generated CA")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (implies --tls)")
    p.add_argument("--state", type=Path, help="state directory (default: a temporary one)")
    common(p)


def _security(args: argparse.Namespace) -> Security:
    if args.certs is None and not args.insecure:
        raise ValueError("give --certs DIR (TLS) or --insecure")
    return Security(None if args.insecure else args.certs, getattr(args, "auth", False))


def _run_config(args: argparse.Namespace) -> RunConfig:
    config = RunConfig.from_mapping(
        resolve_config(args.config, parse_overrides(args.sets)), checks=CHECKS
    ).named()
    if config.weighting == "assigned":  # the ServerApp refuses it too
        why = "a deployment's server does not know the partition sizes: use equal or claimed"
        raise ConfigError([f"'weighting' assigned: {why}"])
    return config


def _submit(dep: Deployment, config: RunConfig, flwr_home: Path) -> int:
    toml_path = write_run_config(
        config.as_mapping(), flwr_home / "runs" / f"{config.run_name}.toml"
    )
    outcome = dep.run(toml_path)
    run_dir = config.run_dir
    if outcome.status != "finished:completed":
        print(f"immunefl: run {outcome.run_id} ended '{outcome.status}'", file=sys.stderr)
        return 1
    print(f"immunefl: completed run {outcome.run_id} in {outcome.seconds:.1f}s; results in "
          f"{run_dir} where the ServerApp ran (with `immunefl deploy`: the SuperLink host; "
          "with docker compose: the serverapp container, `docker compose ... cp "
          "serverapp:/results .`)")  # fmt: skip
    return 0


def _local(args: argparse.Namespace) -> int:
    from task.roles import malicious_partitions

    config = _run_config(args)
    n = config.num_partitions
    malicious = set(malicious_partitions(n, config))
    state = args.state or Path(tempfile.mkdtemp(prefix="immunefl-deploy-"))
    tls = args.tls or args.auth
    certs = generate_certs(state / "certs") if tls else None
    dep = Deployment(PROJECT_ROOT, args.flwr_home, state, f"127.0.0.1:{free_port()}",
                     Security(certs, args.auth))  # fmt: skip
    print(f"immunefl: deployment in {state}: SuperLink {dep.superlink} "
          f"(tls={'on' if tls else 'off'}, auth={'on' if args.auth else 'off'}), {n} SuperNodes "
          f"({len(malicious)} malicious)", flush=True)  # fmt: skip
    try:
        dep.start_superlink()
        for pid in range(n):
            key = None
            if args.auth:
                key = generate_node_key(state / "keys", f"node-{pid}")
                dep.register(key.with_suffix(".pub"), f"node-{pid}")
            role = "malicious" if pid in malicious else "benign"
            dep.start_supernode(pid, n, role, free_port(), key)
        dep.wait_online(n)
        return _submit(dep, config, args.flwr_home)
    finally:
        dep.stop()
        print(f"immunefl: stopped the deployment (logs in {state})", flush=True)


def _supernodes(args: argparse.Namespace) -> int:
    """Start the nodes, wait until each is online or refused; exit 1 naming every refusal."""
    security = _security(args)
    if args.keys is not None:
        if security.certs is None:
            raise ValueError("--keys (SuperNode authentication) needs TLS: give --certs DIR, "
                             "not --insecure")  # fmt: skip
        security = Security(security.certs, auth=True)
    if args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout}: must be positive")
    partitions = parse_partitions(args.partitions)
    malicious = set(parse_partitions(args.malicious))
    if stray := sorted(malicious - set(partitions)):
        raise ValueError(f"--malicious {args.malicious}: {stray} not in --partitions")
    keys = {pid: args.keys / f"node-{pid}" if args.keys else None for pid in partitions}
    if missing := [str(k) for k in keys.values() if k is not None and not k.is_file()]:
        raise FileNotFoundError(f"--keys {args.keys}: no private key {', '.join(missing)} "
                                "(make them with `immunefl deploy keys`)")  # fmt: skip
    dep = Deployment(PROJECT_ROOT, args.flwr_home, args.state, args.superlink, security)
    started, roles = [], {}
    for pid in partitions:
        roles[f"supernode-{pid}"] = "malicious" if pid in malicious else "benign"
        proc = dep.start_supernode(pid, args.num_partitions, roles[f"supernode-{pid}"],
                                   free_port(), keys[pid])  # fmt: skip
        started.append(StartedNode(f"supernode-{pid}", proc,
                                   dep.state_dir / f"supernode-{pid}.log", keys[pid]))  # fmt: skip
    refused = []
    for status in wait_for_nodes(started, args.superlink, security.certs, args.timeout):
        if status.online:
            print(f"immunefl: SuperNode {status.name} ({roles[status.name]}) online at "
                  f"{args.superlink} (node id {status.node_id})")  # fmt: skip
            continue
        refused.append(status.name)
        dep.stop_process(status.name)
        print(f"immunefl: SuperNode {status.name} refused: {status.reason} (stopped; log "
              f"{dep.state_dir / status.name}.log)", file=sys.stderr)  # fmt: skip
    if refused:
        print(f"immunefl: {len(refused)} of {len(started)} SuperNodes not online: "
              f"{', '.join(refused)}", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def deploy_main(args: argparse.Namespace) -> int:
    cmd = args.deploy_command
    for name, value in vars(args).items():  # every path flag: against the caller's directory
        if isinstance(value, Path):
            setattr(args, name, Path(os.path.abspath(value.expanduser())))
    try:
        if cmd == "certs":
            generate_certs(args.out, args.names, args.container_uid if args.container else None)
        elif cmd == "keys":
            for pid in parse_partitions(args.partitions):
                print(generate_node_key(args.out, f"node-{pid}"))
        elif cmd == "superlink":
            host, _, port = args.address.rpartition(":")
            probe = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
            dep = Deployment(PROJECT_ROOT, args.flwr_home, args.state, probe, _security(args))
            secret = superexec_secret(host, args.superexec_secret, args.no_superexec_secret,
                                      dep.state_dir)  # fmt: skip
            if not is_loopback(host):
                print(OPEN_CONTROL_API_WARNING.format(address=args.address), file=sys.stderr)
                if secret is None:
                    print(NO_SECRET_WARNING, file=sys.stderr)
            dep.start_superlink(bind_host=host or "0.0.0.0", secret=secret)
            bound = f"shared secret {secret}" if secret else "no shared secret"
            print(f"immunefl: SuperLink on {args.address} (ServerApp SuperExec: {bound}); stop "
                  f"with `immunefl deploy down --state {args.state}`")  # fmt: skip
        elif cmd == "register":
            keys = sorted(args.keys.glob("node-*.pub"))
            if not keys:
                raise RuntimeError(f"--keys {args.keys}: no node-*.pub public keys there "
                                   "(make them with `immunefl deploy keys`)")  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="immunefl-deploy-") as state:
                dep = Deployment(PROJECT_ROOT, args.flwr_home, Path(state), args.superlink,
                                 _security(args))  # fmt: skip
                for pub in keys:
                    print(f"{dep.register(pub, pub.stem)}: {pub}")
        elif cmd == "supernodes":
            return _supernodes(args)
        elif cmd == "run":
            config = _run_config(args)
            with tempfile.TemporaryDirectory(prefix="immunefl-deploy-") as state:
                dep = Deployment(PROJECT_ROOT, args.flwr_home, Path(state), args.superlink,
                                 _security(args))  # fmt: skip
                return _submit(dep, config, args.flwr_home)
        elif cmd == "down":
            names = stop_state(args.state)
            print(f"immunefl: stopped {len(names)} process(es): {', '.join(names) or 'none'}")
        elif cmd == "local":
            return _local(args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"immunefl: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError, RunFailed) as exc:
        print(f"immunefl: deployment failed: {exc}", file=sys.stderr)
        return 1
    return 0
