"""Markdown tables from results directories (``immunefl report DIR ...``).

Finds every run (a directory with ``summary.json``) under the given directories and prints one
row per run, then one row per group of runs that differ only in ``seed`` (mean and spread of
benign accuracy, the attack's misclassification confidence around its first adversarial round,
and each seed's attack mitigation rounds).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

GROUP_KEYS = (
    "strategy", "client-defense", "wbc-s", "trim-beta", "partitioning", "attack", "poison-samples",
)  # fmt: skip


def load_runs(roots: Iterable[Path]) -> list[dict[str, Any]]:
    runs = []
    for root in roots:
        for summary_path in sorted(Path(root).rglob("summary.json")):
            run_dir = summary_path.parent
            rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
            runs.append({
                "dir": run_dir,
                "config": json.loads((run_dir / "config.json").read_text()),
                "summary": json.loads(summary_path.read_text()),
                "rows": rows,
            })  # fmt: skip
    return runs


def defense_label(config: dict[str, Any]) -> str:
    label = str(config["strategy"])
    if config["strategy"] == "trimmed-mean":
        label += f" b={config['trim-beta']}"
    if config["client-defense"] == "wbc":
        label += f" + FL-WBC s={config['wbc-s']}"
    elif config["client-defense"] == "ldp":
        label += f" + LDP sigma={config['ldp-sigma']}"
    return label


def _metric(run: dict[str, Any]) -> str | None:
    return next((k for k in ("mis_conf", "asr") if k in run["rows"][0]), None)


def _after(run: dict[str, Any], offset: int) -> float | None:
    metric, adv = _metric(run), run["summary"].get("adversarial_rounds") or []
    if metric is None or not adv:
        return None
    by_round = {r["round"]: r[metric] for r in run["rows"]}
    return by_round.get(adv[0] + offset)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def run_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| run | defense | partitioning | seed | final acc | metric @adv | @adv+1 | @adv+3 "
             "| @end | mitigation rounds |", "|" + " --- |" * 10]  # fmt: skip
    for run in runs:
        c, s = run["config"], run["summary"]
        mit = s.get("mitigation_rounds") or {}
        lines.append(
            f"| {c['run-name']} | {defense_label(c)} | {c['partitioning']} | {c['seed']} "
            f"| {_fmt(s['final_benign_acc'])} | {_fmt(_after(run, 0))} | {_fmt(_after(run, 1))} "
            f"| {_fmt(_after(run, 3))} | {_fmt(run['rows'][-1].get(_metric(run) or '', None))} "
            f"| {', '.join(f'{k}: {v}' for k, v in mit.items()) or '-'} |"
        )
    return "\n".join(lines)


def group_table(runs: list[dict[str, Any]]) -> str:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        key = tuple(run["config"].get(k) for k in GROUP_KEYS)
        groups.setdefault(key, []).append(run)
    lines = ["| defense | partitioning | seeds | final acc (mean +- sd) | metric @adv+3 (mean) "
             "| mitigation rounds per seed |", "|" + " --- |" * 6]  # fmt: skip
    for members in groups.values():
        c = members[0]["config"]
        accs = [m["summary"]["final_benign_acc"] for m in members]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        after = [x for x in (_after(m, 3) for m in members) if x is not None]
        mits = [next(iter((m["summary"].get("mitigation_rounds") or {"-": "-"}).values()))
                for m in sorted(members, key=lambda m: m["config"]["seed"])]  # fmt: skip
        lines.append(
            f"| {defense_label(c)} | {c['partitioning']} | {len(members)} "
            f"| {statistics.mean(accs):.3f} +- {sd:.3f} "
            f"| {_fmt(statistics.mean(after)) if after else '-'} "
            f"| {', '.join(str(x) for x in mits)} |"
        )
    return "\n".join(lines)


def report(roots: Iterable[Path]) -> str:
    runs = load_runs(roots)
    if not runs:
        raise FileNotFoundError("no runs (directories with summary.json) found")
    return f"{group_table(runs)}\n\n{run_table(runs)}\n"
