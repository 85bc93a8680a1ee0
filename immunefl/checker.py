"""The checks that need the rules and attacks (`immunefl.experiments.CHECKS`, the files a config
names), run in a short-lived child process.

The rules and attacks import flwr and torch: checked in the CLI's own process, they stayed in
its memory for the whole run (~350 MiB PSS, ~540 MiB RSS on top of the simulation's processes,
docs/performance.md). The child checks every point and exits before anything starts; the CLI
keeps only what it needs to launch and watch. Each point's problems come back as the same
`task.schema.ConfigError` the checks raise in-process.

    python -m immunefl.checker < configs.json > problems.json   # a list in, a list out
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from task.schema import ConfigError


def path_problems(mapping: dict[str, Any]) -> list[str]:
    """Files a config names that must exist before anything starts."""
    from attacks.backdoor import backdoor_poison
    from task.runconfig import RunConfig

    config = RunConfig.from_mapping(mapping)
    path = config.edge_case_file
    uses_file = backdoor_poison(config) == "edge-case" and config.edge_case_source == "file"
    if uses_file and not Path(path).expanduser().is_file():
        return [f"'edge-case-file' {path} does not exist (or is not a file)"]
    return []


def problems_of(mapping: dict[str, Any]) -> list[str]:
    """Every problem of one full config mapping: `CHECKS`, then its files."""
    from immunefl.experiments import CHECKS
    from task.runconfig import RunConfig

    try:
        RunConfig.from_mapping(mapping, checks=CHECKS)
    except ConfigError as exc:
        return list(exc.problems)
    return path_problems(mapping)


def check_in_child(mappings: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The problems of each mapping, found by a child process (`main`)."""
    out = subprocess.run(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-m", "immunefl.checker"], input=json.dumps(list(mappings)),
        capture_output=True, text=True,  # the caller's directory: relative paths as typed
    )  # fmt: skip
    try:
        answer = json.loads(out.stdout) if out.returncode == 0 else None
    except ValueError:
        answer = None
    if not (isinstance(answer, list) and len(answer) == len(mappings)):
        raise RuntimeError(f"checking the run configs failed (exit {out.returncode}):\n"
                           f"{out.stderr[-3000:]}")  # fmt: skip
    return answer


def raise_problems(
    mappings: Sequence[dict[str, Any]], points: Sequence[dict[str, Any]] | None = None
) -> None:
    """ConfigError with every problem of every mapping (each labelled with its point's values
    when there are several, as a sweep's expansion labels them), else nothing."""
    found = []
    for i, problems in enumerate(check_in_child(mappings)):
        point = points[i] if points is not None and len(mappings) > 1 else {}
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        found += [f"[{label}] {p}" if label else p for p in problems]
    if found:
        raise ConfigError(found)


def main() -> int:
    mappings = json.load(sys.stdin)
    json.dump([problems_of(m) for m in mappings], sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
