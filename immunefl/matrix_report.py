"""The report of an attack x defense matrix (``matrix.json`` and its points' results).

Per cell (defense, attack, axis values; mean +- sample sd over seeds): final benign accuracy,
the attack metric (ASR of a backdoor, mis_conf of a targeted attack) at the end and at its
maximum, and the mitigation rounds of a targeted attack. A cell whose attack reached the rule in
no adversarial round of some seed is marked ``n/d`` (not delivered) and a cell with a failed
point ``failed``: neither is ever shown as defended, and the worst-case ranking leaves them out
and says so. Written: heatmaps (PNG + SVG) and ``report.md``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTACK_METRICS = ("asr", "mis_conf")


@dataclass
class Cell:
    """The seeds of one (defense, attack, axis values) cell."""

    defense: str
    attack: str
    axes: tuple[tuple[str, Any], ...]
    acc: list[float] = field(default_factory=list)
    metric: str | None = None
    attack_end: list[float] = field(default_factory=list)
    attack_max: list[float] = field(default_factory=list)
    mitigation: list[str] = field(default_factory=list)
    failed: int = 0
    not_delivered: int = 0

    @property
    def state(self) -> str:
        return "failed" if self.failed else "n/d" if self.not_delivered else "ok"


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample sd (0 for one value).

    >>> [round(x, 4) for x in mean_sd([0.8, 0.9])]
    [0.85, 0.0707]
    """
    v = list(values)
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    m, sd = mean_sd(values)
    return f"{m:.{digits}f} +- {sd:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def _point(run_dir: Path, cell: Mapping[str, Any], attack: str) -> dict[str, Any]:
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return {"failed": True}
    summary = json.loads(summary_path.read_text())
    if summary.get("status") == "failed":
        return {"failed": True}
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    out: dict[str, Any] = {"failed": False, "acc": summary.get("final_benign_acc")}
    metric = next((m for m in ATTACK_METRICS if rows and m in rows[-1]), None)
    if metric is not None and attack != "none":
        values = [float(r[metric]) for r in rows if r.get(metric) is not None]
        out.update(metric=metric, end=values[-1], max=max(values))
    rounds = summary.get("mitigation_rounds") or {}
    if rounds:
        out["mitigation"] = str(next(iter(rounds.values())))
    out["not_delivered"] = attack != "none" and not summary.get("attack_delivered", True)
    return out


def load_cells(matrix_dir: Path) -> tuple[list[Cell], dict[str, Any]]:
    """The cells of a matrix run, in the file's order, and ``matrix.json``."""
    meta = json.loads((Path(matrix_dir) / "matrix.json").read_text())
    cells: dict[tuple, Cell] = {}
    for p in meta["points"]:
        cell = p["cell"]
        axes = tuple((k, v) for k, v in cell.items() if k not in ("defense", "attack", "seed"))
        key = (cell["defense"], cell["attack"], axes)
        c = cells.setdefault(key, Cell(cell["defense"], cell["attack"], axes))
        got = _point(Path(matrix_dir) / p["run_name"], cell, cell["attack"])
        if got["failed"]:
            c.failed += 1
            continue
        c.not_delivered += bool(got["not_delivered"])
        if got.get("acc") is not None:
            c.acc.append(float(got["acc"]))
        if "metric" in got:
            c.metric = got["metric"]
            c.attack_end.append(got["end"])
            c.attack_max.append(got["max"])
        if "mitigation" in got:
            c.mitigation.append(got["mitigation"])
    return list(cells.values()), meta


def table(cells: list[Cell], what: str, pick, render=fmt) -> str:  # noqa: ANN001
    """A Markdown defenses x attacks table of ``render(pick(cell))`` (one per axis values);
    a failed or undelivered cell shows its state instead."""
    out = []
    for axes in dict.fromkeys(c.axes for c in cells):
        sub = [c for c in cells if c.axes == axes]
        attacks = list(dict.fromkeys(c.attack for c in sub))
        label = ", ".join(f"{k}={v}" for k, v in axes)
        out.append(f"**{what}**" + (f" ({label})" if label else "") + "\n")
        out.append("| defense | " + " | ".join(attacks) + " |")
        out.append("|---" * (len(attacks) + 1) + "|")
        for d in dict.fromkeys(c.defense for c in sub):
            row = {c.attack: c for c in sub if c.defense == d}
            out.append(f"| {d} | " + " | ".join(
                (row[a].state if row[a].state != "ok" else render(pick(row[a])))
                if a in row else "-" for a in attacks) + " |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def ranking(cells: list[Cell]) -> list[dict[str, Any]]:
    """Defenses by their worst case over the attacks (lowest mean final accuracy among the
    delivered, finished cells under attack), with the accuracy each costs without an attack
    (against the file's first defense)."""
    defenses = list(dict.fromkeys(c.defense for c in cells))
    clean = {c.defense: mean_sd(c.acc)[0] for c in cells if c.attack == "none" and c.acc}
    reference = clean.get(defenses[0])
    out = []
    for d in defenses:
        attacked = [c for c in cells if c.defense == d and c.attack != "none"]
        usable = [c for c in attacked if c.state == "ok" and c.acc]
        worst = min(usable, key=lambda c: mean_sd(c.acc)[0], default=None)
        metric = [c for c in usable if c.attack_max]
        out.append({
            "defense": d,
            "worst_acc": mean_sd(worst.acc)[0] if worst else math.nan,
            "worst_attack": worst.attack if worst else "-",
            "worst_attack_metric": max((mean_sd(c.attack_max)[0] for c in metric),
                                       default=math.nan),
            "clean_acc": clean.get(d, math.nan),
            "clean_cost": (reference - clean[d]) if reference is not None and d in clean
            else math.nan,
            "left_out": [f"{c.attack} ({c.state})" for c in attacked if c.state != "ok"],
        })  # fmt: skip
    return sorted(out, key=lambda r: -r["worst_acc"] if not math.isnan(r["worst_acc"]) else 1)


def ranking_table(rows: list[dict[str, Any]]) -> str:
    out = ["| rank | defense | worst-case accuracy | under | worst attack metric (max) | "
           "accuracy without attack | its cost | left out |", "|---" * 8 + "|"]  # fmt: skip
    for i, r in enumerate(rows, 1):
        nums = [f"{r[k]:.3f}" if not math.isnan(r[k]) else "-" for k in
                ("worst_acc", "worst_attack_metric", "clean_acc", "clean_cost")]  # fmt: skip
        out.append(f"| {i} | {r['defense']} | {nums[0]} | {r['worst_attack']} | {nums[1]} | "
                   f"{nums[2]} | {nums[3]} | {', '.join(r['left_out']) or '-'} |")  # fmt: skip
    return "\n".join(out)


def matrix_report(matrix_dir: Path, out_dir: Path | None = None, plots: bool = True) -> str:
    """report.md of a matrix (and, with `plots`, its heatmaps) in `out_dir` (default: the
    matrix's directory); returns the Markdown."""
    out_dir = Path(out_dir or matrix_dir)
    cells, meta = load_cells(Path(matrix_dir))
    parts = [f"# Attack x defense matrix: {meta.get('file', '')}", "",
             f"Points: {len(meta['points'])}; seeds per cell: "
             f"{len({p['cell']['seed'] for p in meta['points']})}. Cells: mean +- sample sd; "
             "`n/d`: the attack reached the rule in no adversarial round of some seed (never "
             "counted as defended); `failed`: a point failed.", ""]  # fmt: skip
    parts.append(table(cells, "final benign accuracy", lambda c: c.acc))
    if any(c.attack_end for c in cells):
        parts.append(table(cells, "attack metric at the end (ASR / mis_conf)",
                           lambda c: c.attack_end))  # fmt: skip
        parts.append(table(cells, "attack metric at its maximum", lambda c: c.attack_max))
    if any(c.mitigation for c in cells):
        parts.append(table(cells, "mitigation rounds (per seed)", lambda c: c.mitigation,
                           lambda v: ", ".join(v) or "-"))  # fmt: skip
    parts += ["## Ranking by the worst case over the attacks", "", ranking_table(ranking(cells)),
              ""]  # fmt: skip
    if plots:
        from immunefl.matrix_plots import heatmaps

        for kind, png in heatmaps(cells, out_dir):
            parts.append(f"![{kind}]({png.name})")
    text = "\n".join(parts) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(text)
    return text
