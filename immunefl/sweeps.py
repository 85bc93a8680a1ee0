"""Running the points of an experiment file: one after another on one local SuperLink, or
``--parallel N`` at once, each on its own; progress with an ETA, each point's outcome checked
(`flwr run` exits 0 even when a run failed) and its figures drawn."""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from immunefl.launcher import LocalSimulation
from immunefl.processes import exit_on_signal
from immunefl.submission import RunOutcome, write_run_config
from task.resultsio import atomic_write_json, summary_warnings
from task.runconfig import RunConfig
from task.schema import PROJECT_ROOT


def figures(run_dir: Path) -> None:
    """Write a finished run's figures into its directory and print their paths."""
    from immunefl.report import load_runs, write_figures

    try:
        written = write_figures(load_runs([run_dir]), run_dir.name, run_dir)
    except Exception as exc:  # noqa: BLE001 - a figure must never turn a finished run into a failure
        print(f"immunefl: WARNING: no figures for {run_dir}: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return
    for kind, png in written:
        print(f"immunefl: figure ({kind}): {png}", flush=True)


def report_point(config: RunConfig, summary: dict[str, Any] | None, ok: bool, label: str) -> bool:
    """Print one point's outcome (warnings, figures, final accuracy); whether it succeeded."""
    run_dir = config.run_dir
    if not ok or summary is None or summary.get("status") == "failed":
        print(f"immunefl: {label} ended without a completed run"
              f"{'' if summary else ' and wrote no summary.json'}; see the log above",
              file=sys.stderr)  # fmt: skip
        if summary and summary.get("error"):
            print(f"immunefl: the run's error (summary.json):\n{summary['error']}", file=sys.stderr)
        return False
    for line in summary_warnings(summary):
        print(f"immunefl: WARNING: {line}", file=sys.stderr, flush=True)
    figures(run_dir)
    acc = summary["final_benign_acc"]
    print(
        f"immunefl: {summary.get('status', 'completed')} {label} in "
        f"{summary.get('wall_seconds', 0):.1f}s; final benign_acc "
        f"{acc if acc is None else f'{acc:.4f}'}; results in {run_dir}",
        flush=True,
    )
    return True


def _summary(config: RunConfig) -> dict[str, Any] | None:
    path = config.run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _run_flower(
    sim: LocalSimulation, mapping: dict[str, Any], name: str, num_partitions: int,
    args: argparse.Namespace, echo: Callable,
) -> RunOutcome:  # fmt: skip
    toml_path = write_run_config(mapping, args.flwr_home / "runs" / f"{name}.toml")
    return sim.run(
        toml_path,
        num_supernodes=num_partitions,
        cpus_per_client=args.cpus_per_client,
        gpus_per_client=args.gpus_per_client,
        echo=echo,
    )


def _run_one(
    sim: LocalSimulation, config: RunConfig, args: argparse.Namespace, echo: Callable
) -> tuple[bool, dict[str, Any] | None]:
    print(f"immunefl: run '{config.run_name}' -> {config.run_dir}", flush=True)
    outcome = _run_flower(sim, config.as_mapping(), config.run_name, config.num_partitions,
                          args, echo)  # fmt: skip
    if outcome.status != "finished:completed":
        print(f"immunefl: run {outcome.run_id} ended with status '{outcome.status}'; "
              f"see {args.flwr_home}/superlink/", file=sys.stderr)  # fmt: skip
    summary = _summary(config)
    ok = report_point(config, summary, outcome.status == "finished:completed",
                      f"run {outcome.run_id}")  # fmt: skip
    return ok, summary


def _run_group(
    sim: LocalSimulation, items: list[tuple[dict[str, Any], RunConfig]],
    args: argparse.Namespace, echo: Callable,
) -> list[tuple[bool, dict[str, Any] | None]]:  # fmt: skip
    """Several points in ONE Flower run (the sweep engine, `server_app.sweep`): the ServerApp
    runs them one after another on the same, warm nodes."""
    first = items[0][1]
    name = f"{Path(first.results_dir).name}-{first.run_name}-{len(items)}pts"
    points_file = Path(first.results_dir) / f".points-{first.run_name}.json"
    atomic_write_json(points_file, {"points": [
        {"name": c.run_name, "config": c.as_mapping()} for _, c in items]})  # fmt: skip
    carrier = {**first.as_mapping(), "sweep-file": str(points_file)}
    print(f"immunefl: {len(items)} points in one Flower run (warm nodes) -> "
          f"{first.results_dir}", flush=True)  # fmt: skip
    outcome = _run_flower(sim, carrier, name, first.num_partitions, args, echo)
    if outcome.status != "finished:completed":
        print(f"immunefl: run {outcome.run_id} ended with status '{outcome.status}'; "
              f"see {args.flwr_home}/superlink/", file=sys.stderr)  # fmt: skip
    done = []
    for _, config in items:
        summary = _summary(config)
        ok = report_point(config, summary, True, f"point {config.run_name}")
        done.append((ok, summary))
    return done


def plan_runs(configs: list[tuple[dict[str, Any], RunConfig]], parallel: int) -> list[list[int]]:
    """The points (indices) of each Flower run: ``parallel`` shares of the points, each split
    where ``num-partitions`` changes (the nodes of one Flower run serve all its points).

    >>> from types import SimpleNamespace as C
    >>> cfgs = [({}, C(num_partitions=n)) for n in (10, 10, 20, 20, 10)]
    >>> plan_runs(cfgs, 1), plan_runs(cfgs, 2)
    ([[0, 1], [2, 3], [4]], [[0], [2], [4], [1], [3]])
    """
    n = max(1, min(int(parallel), len(configs)))
    runs: list[list[int]] = []
    for share in (list(range(len(configs)))[k::n] for k in range(n)):
        group: list[int] = []
        for i in share:
            if group and configs[i][1].num_partitions != configs[group[0]][1].num_partitions:
                runs.append(group)
                group = []
            group.append(i)
        runs.append(group)
    return [r for r in runs if r]


def sweep_eta(elapsed: float, done: int, total: int) -> str:
    """``"  (ETA 12m 30s)"`` from the mean time of the finished points ("" before the first)."""
    if done == 0:
        return ""
    left = elapsed / done * (total - done)
    return f"  (elapsed {_hms(elapsed)}, ETA {_hms(left)})"


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def point_name(point: dict[str, Any]) -> str:
    name = "_".join(f"{k}={v}" for k, v in point.items()) or "point"
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", name)


def run_points(
    configs: list[tuple[dict[str, Any], RunConfig]], args: argparse.Namespace,
    echo: Callable[[str], None],
) -> list[dict[str, Any]]:  # fmt: skip
    """Run every point: the points of one share in one Flower run each (`plan_runs`);
    ``--parallel N`` runs N shares at once, each on its own SuperLink."""
    results: list[dict[str, Any] | None] = [None] * len(configs)
    runs = plan_runs(configs, args.parallel)
    todo: queue.Queue[list[int]] = queue.Queue()
    for job in runs:
        todo.put(job)
    t_sweep = time.monotonic()
    done = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(sim: LocalSimulation) -> None:
        while not errors:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            if len(configs) > 1:
                with lock:
                    eta = sweep_eta(time.monotonic() - t_sweep, done[0], len(configs))
                print(f"immunefl: sweep points {job[0] + 1}..{job[-1] + 1} of {len(configs)}"
                      f"{eta}", flush=True)  # fmt: skip
            tag = f"[{job[0] + 1}] " if args.parallel > 1 else ""
            try:
                items = [configs[i] for i in job]
                out = (
                    _run_group(sim, items, args, lambda line, t=tag: echo(t + line))
                    if len(job) > 1
                    else [_run_one(sim, items[0][1], args, lambda line, t=tag: echo(t + line))]
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                return
            for i, (ok, summary) in zip(job, out, strict=True):
                point, config = configs[i]
                results[i] = {"point": point, "run_name": config.run_name, "ok": ok,
                              "summary": summary}  # fmt: skip
            with lock:
                done[0] += len(job)

    n = max(1, min(int(args.parallel), len(runs)))
    sims = [LocalSimulation(PROJECT_ROOT, args.flwr_home) for _ in range(n)]
    # SIGTERM/SIGHUP become SystemExit in this (main) thread, whose `finally` stops everything
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)
    try:
        for sim in sims:
            sim.start()
        if n == 1:
            worker(sims[0])
        else:
            threads = [threading.Thread(target=worker, args=(sim,), daemon=True) for sim in sims]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
    finally:
        for sim in sims:
            sim.stop()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]
