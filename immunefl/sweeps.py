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
from immunefl.submission import write_run_config
from task.resultsio import summary_warnings
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


def _run_one(
    sim: LocalSimulation, config: RunConfig, args: argparse.Namespace, echo: Callable
) -> tuple[bool, dict[str, Any] | None]:
    toml_path = write_run_config(
        config.as_mapping(), args.flwr_home / "runs" / f"{config.run_name}.toml"
    )
    run_dir = config.run_dir
    print(f"immunefl: run '{config.run_name}' -> {run_dir}", flush=True)
    outcome = sim.run(
        toml_path,
        num_supernodes=config.num_partitions,
        cpus_per_client=args.cpus_per_client,
        gpus_per_client=args.gpus_per_client,
        echo=echo,
    )
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if outcome.status != "finished:completed" or summary is None:
        print(
            f"immunefl: run {outcome.run_id} ended with status '{outcome.status}'"
            f"{'' if summary else ' and wrote no summary.json'}; "
            f"see the log above and {args.flwr_home}/superlink/",
            file=sys.stderr,
        )
        if summary and summary.get("error"):
            print(f"immunefl: the run's error (summary.json):\n{summary['error']}", file=sys.stderr)
        return False, summary
    for line in summary_warnings(summary):
        print(f"immunefl: WARNING: {line}", file=sys.stderr, flush=True)
    figures(run_dir)
    acc = summary["final_benign_acc"]
    print(
        f"immunefl: {summary.get('status', 'completed')} run {outcome.run_id} in "
        f"{outcome.seconds:.1f}s; final benign_acc {acc if acc is None else f'{acc:.4f}'}; "
        f"results in {run_dir}",
        flush=True,
    )
    return True, summary


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
    """Run every point; ``--parallel N`` runs N at once, each on its own SuperLink."""
    results: list[dict[str, Any] | None] = [None] * len(configs)
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(configs)):
        todo.put(i)
    t_sweep = time.monotonic()
    done = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(sim: LocalSimulation) -> None:
        while not errors:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            point, config = configs[i]
            if len(configs) > 1:
                with lock:
                    eta = sweep_eta(time.monotonic() - t_sweep, done[0], len(configs))
                print(f"immunefl: sweep point {i + 1}/{len(configs)}: {point}{eta}", flush=True)
            tag = f"[{i + 1}] " if args.parallel > 1 else ""
            try:
                ok, summary = _run_one(sim, config, args, lambda line, tag=tag: echo(tag + line))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                return
            results[i] = {"point": point, "run_name": config.run_name, "ok": ok,
                          "summary": summary}  # fmt: skip
            with lock:
                done[0] += 1

    n = max(1, min(int(args.parallel), len(configs)))
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
