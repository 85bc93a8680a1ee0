"""`immunefl matrix FILE`: expand the matrix (`immunefl.matrix`), run its points on the sweep
engine (like `immunefl sweep`, resumable with ``--resume DIR``), write ``matrix.json`` and the
report (`immunefl.matrix_report`) into the matrix's directory."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from immunefl.experiments import parse_overrides
from immunefl.matrix import expand_matrix, point_name
from task.datafiles import DataNotFoundError
from task.resultsio import atomic_write_json
from task.schema import ConfigError


def matrix_main(args: argparse.Namespace) -> int:
    from immunefl.cli import checked, launch

    path = args.config or args.config_opt
    try:
        if path is None:
            raise ConfigError(["`immunefl matrix` needs a matrix file (docs: immunefl/matrix.py)"])
        raw = expand_matrix(Path(path), parse_overrides(args.sets), args.preset, checks=())
        if len(raw) > args.max_points:
            raise ConfigError([f"{path} has {len(raw)} points, more than --max-points "
                               f"{args.max_points}"])  # fmt: skip
        configs = checked(raw)
    except (ConfigError, DataNotFoundError) as exc:
        print(f"immunefl: {exc}", file=sys.stderr)
        return 2
    base = configs[0][1]
    preset = f"-{args.preset}" if args.preset else ""
    name = base.run_name or f"{Path(path).stem}{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = Path(base.results_dir)
    if args.resume is not None:
        parent, name = args.resume.resolve().parent, args.resume.resolve().name
    configs = [
        (cell, dataclasses.replace(config, results_dir=str(parent / name),
                                   run_name=point_name(cell)).named())
        for cell, config in configs
    ]  # fmt: skip
    root = Path(configs[0][1].results_dir)
    print(f"immunefl: matrix of {len(configs)} points -> {root}/<defense>__<attack>__...__s<seed>/",
          flush=True)  # fmt: skip
    args.command = "sweep"  # the sweep engine, sweep.json and --resume as for a sweep
    code = launch(args, configs, path)
    sweep = root / "sweep.json"
    if not sweep.exists():
        return code
    results = json.loads(sweep.read_text())["points"]
    atomic_write_json(root / "matrix.json", {
        "file": str(path), "preset": args.preset,
        "points": [{"cell": r["point"], "run_name": r["run_name"], "ok": r["ok"]}
                   for r in results]})  # fmt: skip
    from immunefl.matrix_report import matrix_report

    print(matrix_report(root), end="")
    print(f"immunefl: matrix report, heatmaps -> {root}/report.md", flush=True)
    return code
