"""`immunefl` command line: run an experiment on the local simulation engine.

    immunefl run [CONFIG.yaml] [--set key=value ...] [--cpus-per-client N] [--gpus-per-client F]

Exits 0 only when the run finished with status ``finished:completed`` and wrote its summary;
the local SuperLink it started is stopped in every case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from immunefl.config import PROJECT_ROOT, ConfigError, parse_overrides, resolve_config
from immunefl.data import DataNotFoundError, locate_dataset
from immunefl.launcher import LocalSimulation, RunFailed, write_run_config
from server_app.results import default_run_name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="immunefl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment on the local simulation engine")
    run.add_argument("config", nargs="?", type=Path, help="YAML file of run-config overrides")
    run.add_argument("--config", dest="config_opt", type=Path, help="same as the positional")
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one run-config key (repeatable)",
    )
    run.add_argument(
        "--cpus-per-client",
        type=int,
        default=1,
        help="CPUs reserved per simulated client (Ray actor); default 1",
    )
    run.add_argument(
        "--gpus-per-client",
        type=float,
        default=0.0,
        help="GPU fraction per client, e.g. 0.25 (GPU machines only)",
    )
    run.add_argument(
        "--flwr-home",
        type=Path,
        default=Path(os.environ.get("IMMUNEFL_FLWR_HOME", PROJECT_ROOT / ".flwr")),
        help="private FLWR_HOME (default: <repo>/.flwr)",
    )
    run.add_argument("--quiet", action="store_true", help="only print immunefl's own lines")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    yaml_path = args.config or args.config_opt
    try:
        config = resolve_config(yaml_path, parse_overrides(args.sets))
        locate_dataset(str(config["dataset"]), str(config["data-dir"]))
    except (ConfigError, DataNotFoundError) as exc:
        print(f"immunefl: {exc}", file=sys.stderr)
        return 2
    config["results-dir"] = str(Path(str(config["results-dir"])).expanduser().resolve())
    config["run-name"] = str(config["run-name"]) or default_run_name(config)
    run_dir = Path(str(config["results-dir"])) / str(config["run-name"])
    if (run_dir / "rounds.jsonl").exists():
        print(f"immunefl: {run_dir} already holds a run; choose another run-name", file=sys.stderr)
        return 2
    toml_path = write_run_config(config, args.flwr_home / "runs" / f"{config['run-name']}.toml")

    def echo(line: str) -> None:
        if not args.quiet or "[immunefl]" in line or "ERROR" in line:
            print(line, flush=True)

    print(f"immunefl: run '{config['run-name']}' -> {run_dir}", flush=True)
    try:
        with LocalSimulation(PROJECT_ROOT, args.flwr_home) as sim:
            outcome = sim.run(
                toml_path,
                num_supernodes=int(config["num-partitions"]),
                cpus_per_client=args.cpus_per_client,
                gpus_per_client=args.gpus_per_client,
                echo=echo,
            )
    except (RunFailed, RuntimeError, TimeoutError) as exc:
        print(f"immunefl: run failed: {exc}", file=sys.stderr)
        return 1
    summary_path = run_dir / "summary.json"
    if outcome.status != "finished:completed" or not summary_path.exists():
        print(
            f"immunefl: run {outcome.run_id} ended with status '{outcome.status}'"
            f"{'' if summary_path.exists() else ' and wrote no summary.json'}; "
            f"see the log above and {args.flwr_home}/superlink/",
            file=sys.stderr,
        )
        return 1
    summary = json.loads(summary_path.read_text())
    print(
        f"immunefl: completed run {outcome.run_id} in {outcome.seconds:.1f}s; "
        f"final benign_acc {summary['final_benign_acc']:.4f}; results in {run_dir}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
