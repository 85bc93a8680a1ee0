"""`immunefl` command line: run experiments on the local simulation engine.

    immunefl run   [CONFIG.yaml] [--preset cpu] [--set key=value ...]   one run (or a sweep)
    immunefl sweep CONFIG.yaml   [--preset cpu] [--set key=value ...]   every point of a sweep
    immunefl report DIR ...        plots (PNG + SVG) and a Markdown report of finished runs
    immunefl configs               the experiments in configs/, their descriptions and presets

A list value in the YAML (or ``variants:``) makes the file a sweep; `run` then runs every point
too. ``--preset cpu`` applies the file's ``presets: {cpu: ...}`` values (fewer rounds/clients).
    immunefl deploy ...                                  deployment engine (see deploy --help)

Each exits 0 only when every run finished with status ``finished:completed`` and wrote its
summary; the local SuperLink it started (one for all points of a sweep) is stopped in every case.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from immunefl.checker import raise_problems
from immunefl.deploy_cli import add_parser as add_deploy_parser
from immunefl.deploy_cli import deploy_main
from immunefl.experiments import (
    MAX_POINTS,
    config_presets,
    expand_sweep,
    is_sweep,
    parse_overrides,
    resolve_config,
)
from immunefl.matrix import expand_matrix, is_matrix
from immunefl.submission import QuietEcho, RunFailed
from immunefl.sweeps import point_name, run_points
from immunefl.yamlfile import load_yaml
from task.datafiles import DataNotFoundError, locate_dataset
from task.resultsio import atomic_write_json
from task.runconfig import RunConfig
from task.runlock import CLAIM_VAR, Claim, RunDirTaken, claim_run_dir
from task.schema import PROJECT_ROOT, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="immunefl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run one experiment"), ("sweep", "run every point of a sweep"),
                       ("matrix", "run every attack against every defense (report: heatmaps, "
                        "worst-case ranking)")):  # fmt: skip
        p = sub.add_parser(name, help=f"{text} on the local simulation engine")
        p.add_argument("config", nargs="?", type=Path, help="YAML file of run-config values")
        p.add_argument("--config", dest="config_opt", type=Path, help="same as the positional")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override one run-config key (repeatable)")  # fmt: skip
        p.add_argument(
            "--cpus-per-client",
            type=int,
            default=1,
            help="CPUs reserved per simulated client (Ray actor); default 1",
        )
        p.add_argument(
            "--gpus-per-client",
            type=float,
            default=0.0,
            help="GPU fraction per client, e.g. 0.25 (GPU machines only)",
        )
        p.add_argument("--flwr-home", type=Path,
                       default=Path(os.environ.get("IMMUNEFL_FLWR_HOME", PROJECT_ROOT / ".flwr")),
                       help="private FLWR_HOME (default: <repo>/.flwr)")  # fmt: skip
        p.add_argument("--preset", help="a preset of the YAML file, e.g. cpu (smaller, faster)")
        p.add_argument("--quiet", action="store_true", help="only print immunefl's own lines")
        p.add_argument("--parallel", type=int, default=1, metavar="N",
                       help="sweeps: run N points at once, each on its own SuperLink (GPU "
                       "machines: with --gpus-per-client); default 1")  # fmt: skip
        p.add_argument("--resume", type=Path, metavar="DIR",
                       help="continue the run in DIR from its last checkpoint; with a sweep "
                       "file, the sweep in DIR: finished points are kept, checkpointed ones "
                       "continue, the rest run")  # fmt: skip
        p.add_argument("--max-points", type=int, default=MAX_POINTS, metavar="N",
                       help=f"refuse a sweep of more than N points ({MAX_POINTS})")  # fmt: skip
    add_deploy_parser(sub)
    sub.add_parser("configs", help="list the experiments in configs/ with their descriptions "
                   "and presets")  # fmt: skip
    rep = sub.add_parser("report", help="plots (PNG + SVG) and Markdown tables of finished runs")
    rep.add_argument(
        "dirs", nargs="+", type=Path, help="results directories, one per experiment (e.g. a sweep)"
    )
    rep.add_argument("--out", type=Path, help="where figures + report.md go (default: first DIR)")
    rep.add_argument("--no-plots", action="store_true", help="report.md (tables) only")
    rep.add_argument("--together", action="store_true", help="report every DIR as one "
                     "experiment (e.g. a control run beside the runs it controls)")  # fmt: skip
    plug = sub.add_parser("plugins", help="every rule and attack with its hyper-parameters "
                          "(and those of plugin classes you name)")  # fmt: skip
    plug.add_argument("refs", nargs="*", metavar="package.module:Class",
                      help="plugin rules or attacks to list too")  # fmt: skip
    return parser


#: Keys `--resume` may change: how the run is carried out, never what it computes.
RESUME_SETTABLE = frozenset({
    "poll-interval", "round-timeout", "checkpoint-every", "device", "save-model",
    "metrics-port", "metrics-addr", "metrics-push-url", "metrics-linger",
})  # fmt: skip


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config of the run in `run_dir`, set to resume from its checkpoint.

    Refused (nothing is started, nothing is written) when the directory holds no checkpoint,
    and for ``--set`` keys that would change the resumed experiment (only `RESUME_SETTABLE`).
    """
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ConfigError([f"--resume {run_dir}: no config.json there (not a run directory)"])
    problems = []
    if not (Path(run_dir) / "checkpoint.pt").exists():
        problems.append(
            f"--resume {run_dir}: no checkpoint.pt there (the run had checkpoint-every=0 or "
            "stopped before its first checkpoint); its results are left as they are"
        )
    changed = sorted(set(overrides) - RESUME_SETTABLE)
    if changed:
        problems.append(
            f"--resume: --set {', '.join(changed)} would change the resumed experiment; "
            f"only {', '.join(sorted(RESUME_SETTABLE))} may be set"
        )
    if problems:
        raise ConfigError(problems)
    saved = {k: v for k, v in json.loads(path.read_text()).items() if k != "_meta"}
    run_dir = Path(run_dir).resolve()
    saved.update({"results-dir": str(run_dir.parent), "run-name": run_dir.name, "resume": True})
    return resolve_config(None, {**saved, **overrides}, checks=())  # then `checked`


def list_configs(directory: Path) -> str:
    """One entry per experiment file: name, runs (sweep points), presets, description."""
    import textwrap

    lines = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        data = load_yaml(path) or {}
        header = []  # a file without `description:` is described by its leading comment
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        description = " ".join(str(data.get("description") or " ".join(header)).split())
        presets = ", ".join(config_presets(path)) or "none"
        try:
            if is_matrix(path):
                points = len(expand_matrix(path))
            else:
                points = len(expand_sweep(path)) if is_sweep(path) else 1
        except ConfigError:
            points = 0  # e.g. a deployment config that needs --set values
        runs = f"{points} run{'s' if points != 1 else ''}" if points else "needs --set values"
        lines.append(f"{path.stem}  [{runs}; presets: {presets}]")
        lines += textwrap.wrap(description, 96, initial_indent="    ", subsequent_indent="    ")
    lines.append(
        f"\nrun one: immunefl run {directory.name}/<name>.yaml [--preset cpu] "
        f"(a matrix: immunefl matrix {directory.name}/<name>.yaml)"
    )
    return "\n".join(lines)


def checked(raw: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[dict, RunConfig]]:
    """Points typed and checked whole (the task's checks here, `CHECKS` and the files they name
    in a child process: `immunefl.checker`), their data found, before anything starts
    (ConfigError or DataNotFoundError)."""
    configs = [(point, RunConfig.from_mapping(config)) for point, config in raw]
    raise_problems([config for _, config in raw], [point for point, _ in raw])
    for _, config in configs:
        locate_dataset(config.dataset, config.data_dir)
    return configs


def writable_problem(run_dir: Path) -> str | None:
    """Why the results of a run cannot be written to `run_dir` (checked before anything starts),
    or None. Creates the directories it will need anyway."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        return f"cannot write results to {run_dir}: {exc.strerror or exc}"
    return None


def resume_sweep(
    configs: list[tuple[dict[str, Any], RunConfig]],
) -> tuple[list[tuple[dict[str, Any], RunConfig]], list[dict[str, Any]]]:
    """The points of a killed sweep still to run (a checkpointed one set to resume), and the
    finished ones as results. A point whose directory holds rows without a checkpoint, or
    whose saved config differs from the file's (beyond `RESUME_SETTABLE`), is an error."""
    todo, done, problems = [], [], []
    for point, config in configs:
        run_dir = config.run_dir
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        saved_path = run_dir / "config.json"
        if saved_path.exists():
            saved = {k: v for k, v in json.loads(saved_path.read_text()).items() if k != "_meta"}
            mine = config.as_mapping()
            changed = sorted(k for k in mine if k not in RESUME_SETTABLE | {"resume"}
                             and saved.get(k, mine[k]) != mine[k])  # fmt: skip
            if changed:
                problems.append(f"{run_dir}: the file now sets {', '.join(changed)} "
                                "otherwise than the run there; resume with the file it ran "
                                "with")  # fmt: skip
                continue
        if summary and summary.get("status") in ("completed", "degraded"):
            done.append({"point": point, "run_name": config.run_name, "ok": True,
                         "summary": summary})  # fmt: skip
        elif (run_dir / "checkpoint.pt").exists():
            todo.append((point, dataclasses.replace(config, resume=True)))
        elif (run_dir / "rounds.jsonl").exists() and (run_dir / "rounds.jsonl").stat().st_size:
            problems.append(f"{run_dir} holds rounds but no checkpoint.pt (checkpoint-every=0): "
                            "move it away to run that point again")  # fmt: skip
        else:
            todo.append((point, config))
    if problems:
        raise ConfigError(problems)
    print(f"immunefl: resuming the sweep: {len(done)} points finished, {len(todo)} to run "
          f"({sum(c.resume for _, c in todo)} from their checkpoints)", flush=True)  # fmt: skip
    return todo, done


def cmd(args: argparse.Namespace) -> int:
    yaml_path = args.config or args.config_opt
    try:
        overrides = parse_overrides(args.sets)
        sweep_file = yaml_path is not None and is_sweep(yaml_path, args.preset)
        if args.command == "run" and args.resume is not None and not sweep_file:
            raw = [({}, resume_config(args.resume, overrides))]
        elif args.command == "run" and not is_sweep(yaml_path, args.preset):
            raw = [({}, resolve_config(yaml_path, overrides, preset=args.preset, checks=()))]
        else:  # a list value means a sweep, with `run` as with `sweep`
            if yaml_path is None:
                raise ConfigError(["`immunefl sweep` needs a YAML file"])
            raw = expand_sweep(yaml_path, overrides, preset=args.preset,
                               max_points=args.max_points, checks=())  # fmt: skip
            args.command = "sweep"
        configs = checked(raw)
    except (ConfigError, DataNotFoundError) as exc:
        print(f"immunefl: {exc}", file=sys.stderr)
        return 2
    sweep_name = ""
    if args.command == "sweep":
        base = configs[0][1]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        preset = f"-{args.preset}" if args.preset else ""
        sweep_name = base.run_name or f"{Path(yaml_path).stem}{preset}-{stamp}"
        parent = None
        if args.resume is not None:
            parent, sweep_name = str(Path(args.resume).resolve().parent), args.resume.resolve().name
        configs = [
            (point, dataclasses.replace(
                config, results_dir=str(Path(parent or config.results_dir) / sweep_name),
                run_name=point_name(point)))
            for point, config in configs
        ]  # fmt: skip
        root = Path(configs[0][1].results_dir).expanduser().resolve()
        print(f"immunefl: sweep of {len(configs)} points -> {root}/<point>/ (one directory per "
              f"point, named by its values, e.g. {configs[0][1].run_name}; run-name names the "
              "sweep's directory)", flush=True)  # fmt: skip
    configs = [(point, config.named()) for point, config in configs]
    return launch(args, configs, yaml_path)


def launch(
    args: argparse.Namespace, configs: list[tuple[dict[str, Any], RunConfig]], yaml_path: Any
) -> int:
    """Resume (a sweep with ``--resume``), claim every run directory, run; the exit code."""
    finished: list[dict[str, Any]] = []
    if args.command == "sweep" and args.resume is not None:
        try:
            configs, finished = resume_sweep(configs)
        except ConfigError as exc:
            print(f"immunefl: {exc}", file=sys.stderr)
            return 2
    claims: list[Claim] = []
    token = uuid.uuid4().hex
    try:
        for _, config in configs:
            if problem := writable_problem(config.run_dir):
                print(f"immunefl: results-dir: {problem}", file=sys.stderr)
                return 2
            # claimed first (atomic), then judged: a run that started beside us is seen
            claims.append(claim_run_dir(config.run_dir, token, command=f"immunefl {args.command}"))
            if (config.run_dir / "rounds.jsonl").exists() and not config.resume:
                print(f"immunefl: {config.run_dir} already holds a run; choose another run-name",
                      file=sys.stderr)  # fmt: skip
                return 2
        os.environ[CLAIM_VAR] = token  # the ServerApps we start honour our claims
        return run_claimed(args, configs, yaml_path, finished)
    except RunDirTaken as exc:
        print(f"immunefl: {exc}", file=sys.stderr)
        return 2
    finally:
        for claim in claims:
            claim.release()


def run_claimed(
    args: argparse.Namespace, configs: list[tuple[dict[str, Any], RunConfig]], yaml_path: Any,
    finished: list[dict[str, Any]] | None = None,
) -> int:  # fmt: skip
    """Run the checked, claimed `configs` (`finished`: points of a resumed sweep that are done
    already); print a sweep's table; the exit code."""

    def show(line: str) -> None:
        print(line, flush=True)

    echo = QuietEcho(show) if args.quiet else show

    try:
        results = (finished or []) + (run_points(configs, args, echo) if configs else [])
    except (RunFailed, RuntimeError, TimeoutError) as exc:
        print(f"immunefl: run failed: {exc}", file=sys.stderr)
        return 1
    ok_all = all(r["ok"] for r in results)
    if args.command == "sweep":
        sweep_dir = Path(configs[0][1].results_dir)
        atomic_write_json(sweep_dir / "sweep.json", {"config": str(yaml_path), "points": results})
        print(f"immunefl: sweep of {len(results)} points -> {sweep_dir}/sweep.json")
        for r in results:
            acc = (r["summary"] or {}).get("final_benign_acc")
            acc = float("nan") if acc is None else acc
            state = (r["summary"] or {}).get("status", "completed") if r["ok"] else "FAILED"
            print(f"  {r['run_name']:40} {state:9} benign_acc {acc:.4f}")
    return 0 if ok_all else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "deploy":
        return deploy_main(args)
    if args.command == "configs":
        print(list_configs(PROJECT_ROOT / "configs"))
        return 0
    if args.command == "report":
        from immunefl.report import report

        out = args.out or args.dirs[0]
        try:
            print(report(args.dirs, out, plots=not args.no_plots, together=args.together),
                  end="")  # fmt: skip
        except (OSError, ValueError) as exc:
            print(f"immunefl: {exc}", file=sys.stderr)
            return 2
        what = "report.md" if args.no_plots else "figures and report.md"
        print(f"immunefl: {what} in {out}", file=sys.stderr)
        return 0
    if args.command == "matrix":
        from immunefl.matrix_cli import matrix_main

        return matrix_main(args)
    if args.command == "plugins":
        from immunefl.plugins import listing

        try:
            print(listing(args.refs), end="")
        except ValueError as exc:
            print(f"immunefl: {exc}", file=sys.stderr)
            return 2
        return 0
    return cmd(args)


if __name__ == "__main__":
    sys.exit(main())
