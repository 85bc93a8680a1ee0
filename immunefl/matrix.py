"""`immunefl matrix FILE`: every attack against every defense, over seeds and optional axes.

The file (YAML, read with the same bounded reader as experiment files)::

    description: ...
    base: {num-server-rounds: 30, num-partitions: 100, clients-per-round: 10}
    attacks:
      - {name: none, attack: none}
      - {name: sign-flip, attack: sign-flip, num-malicious: 20, attack-mode: continuous}
    defenses:
      - {name: fedavg, strategy: fedavg}
      - {name: fedavg+wbc, strategy: fedavg, client-defense: wbc}
    seeds: [0, 1, 2]
    num-malicious: [10, 20]        # optional extra axes: any run-config key with a list
    presets:
      quick: {seeds: [0], num-server-rounds: 5}   # sections replace; single values join base

A point is base <- defense <- attack <- axis values <- seed (<- ``--set``), checked like any
run config before anything runs; every point runs on the sweep engine (`immunefl.sweeps`), and
``matrix.json`` records each point's cell (defense, attack, axis values, seed). The report is
`immunefl.matrix_report`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from immunefl.experiments import CHECKS, read_yaml_config, resolve_config
from task.schema import ConfigError, Scalar
from task.validation import Check

SECTIONS = ("base", "attacks", "defenses", "seeds", "description")


def _entries(data: Mapping[str, Any], section: str, path: Path) -> list[dict[str, Any]]:
    entries = data.get(section)
    if not isinstance(entries, list) or not entries:
        raise ConfigError([f"{path}: '{section}' must be a non-empty list of mappings"])
    problems, names = [], []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            problems.append(f"{path}: each of '{section}' needs a 'name', got {str(e)[:80]!r}")
            continue
        names.append(e["name"])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"{path}: '{section}' names {', '.join(dup)} more than once")
    if problems:
        raise ConfigError(problems)
    return [dict(e) for e in entries]


def read_matrix(path: Path, preset: str | None = None) -> dict[str, Any]:
    """The matrix file as ``{base, attacks, defenses, seeds, axes}``. A preset's sections
    replace the file's; a single value outside the sections joins ``base``."""
    data = read_yaml_config(Path(path), preset)  # bounded reading; the preset applied
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError([f"{path}: 'base' must be a mapping of run-config keys"])
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError([f"{path}: 'seeds' must be a non-empty list of integers"])
    axes = {k: v for k, v in data.items() if k not in SECTIONS and isinstance(v, list)}
    base = {**base, **{k: v for k, v in data.items() if k not in SECTIONS and k not in axes}}
    return {"base": base, "attacks": _entries(data, "attacks", path),
            "defenses": _entries(data, "defenses", path), "seeds": seeds, "axes": axes}  # fmt: skip


def is_matrix(path: Path) -> bool:
    """Whether a YAML file is a matrix file (it has ``attacks:`` and ``defenses:``)."""
    from immunefl.yamlfile import load_yaml

    data = load_yaml(Path(path))
    return isinstance(data, dict) and "attacks" in data and "defenses" in data


def point_name(cell: Mapping[str, Any]) -> str:
    """A point's directory name: defense, attack, axis values, seed."""
    parts = [cell["defense"], cell["attack"]]
    parts += [f"{k}={v}" for k, v in cell.items() if k not in ("defense", "attack", "seed")]
    parts.append(f"s{cell['seed']}")
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", "__".join(str(p) for p in parts))


def expand_matrix(
    path: Path, overrides: Mapping[str, Any] | None = None, preset: str | None = None,
    checks: Iterable[Check] = CHECKS,
) -> list[tuple[dict[str, Any], dict[str, Scalar]]]:  # fmt: skip
    """Every point as ``(its cell, its checked config)``; every problem of every point at once
    (`checks` as in `immunefl.experiments.resolve_config`).

    An axis or ``--set`` key that a defense or attack entry also sets is an error (it would
    silently override the entry)."""
    m = read_matrix(path, preset)
    overrides = dict(overrides or {})
    problems: list[str] = []
    for kind in ("attacks", "defenses"):
        for e in m[kind]:
            clash = sorted((set(e) - {"name"}) & (set(m["axes"]) | set(overrides)))
            if clash:
                problems.append(f"{path}: {kind} '{e['name']}' sets {', '.join(clash)}, which "
                                "an axis or --set also sets")  # fmt: skip
    if problems:
        raise ConfigError(problems)
    points = []
    axis_values = list(itertools.product(*m["axes"].values()))
    for d, a, values, seed in itertools.product(m["defenses"], m["attacks"], axis_values,
                                                m["seeds"]):  # fmt: skip
        axes = dict(zip(m["axes"], values, strict=True))
        cell = {"defense": d["name"], "attack": a["name"], **axes, "seed": seed}
        layer = {**m["base"], **{k: v for k, v in d.items() if k != "name"},
                 **{k: v for k, v in a.items() if k != "name"}, **axes, "seed": seed,
                 **overrides}  # fmt: skip
        try:
            points.append((cell, resolve_config(None, layer, checks=checks)))
        except ConfigError as exc:
            problems.extend(f"[{point_name(cell)}] {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    return points
