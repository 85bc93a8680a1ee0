"""Hyper-parameter sensitivity from finished runs (the Invariant paper's Fig. 6 style).

Reads every ``<root>/*/<point>/`` run directory (config.json, rounds.jsonl), keeps those whose
config matches every ``--where KEY=VALUE``, groups them by ``--x KEY``, and reports per value
the mean ± sd over seeds of: the attack's ASR at round ``--round``, its mean over the last
``--tail`` rounds up to it, and the benign accuracy at that round. Prints a Markdown table and,
with ``--figure FILE``, draws ASR and accuracy against the value (error bars: sd).

    python scripts/sensitivity.py docs/data/invariant-edge-fmnist --x invariant-tau \\
        --where strategy=invariant --where invariant-alpha=0.25 --where attack=edge-case \\
        --where attack-collude=false --where attack-adaptive=false
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def load(root: Path) -> list[dict[str, Any]]:
    """Every run under `root` with its config and rounds."""
    runs = []
    for cfg in sorted(root.glob("*/*/config.json")):
        rounds = cfg.parent / "rounds.jsonl"
        if not rounds.is_file():
            continue
        rows = [json.loads(line) for line in rounds.read_text().splitlines() if line.strip()]
        runs.append({"dir": cfg.parent, "config": json.loads(cfg.read_text()), "rows": rows})
    return runs


def matches(config: dict[str, Any], where: list[tuple[str, str]]) -> bool:
    """Whether ``str(config[key])`` equals each value (booleans and numbers compared as text,
    case-insensitively: ``false`` matches False, ``0.25`` matches 0.25)."""
    for key, value in where:
        if key not in config:
            raise KeyError(f"'{key}' is not a config key of the runs")
        have = config[key]
        if isinstance(have, float):
            try:
                if float(value) != have:
                    return False
            except ValueError:
                return False
        elif str(have).lower() != value.lower():
            return False
    return True


def point(run: dict[str, Any], last: int, tail: int) -> tuple[float, float, float] | None:
    """(ASR at round `last`, mean ASR over the `tail` rounds up to it, accuracy at `last`);
    None when the run did not reach round `last`."""
    rows = [r for r in run["rows"] if r["round"] <= last]
    if not rows or rows[-1]["round"] != last:
        return None
    return rows[-1]["asr"], statistics.fmean(r["asr"] for r in rows[-tail:]), rows[-1]["benign_acc"]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(
    runs: list[dict[str, Any]], x: str, last: int, tail: int
) -> list[tuple[Any, list[int], list[tuple[float, float]]]]:
    """Per value of `x` (sorted): the seeds and (mean, sd) of ASR, tail ASR and accuracy."""
    groups: dict[Any, list[tuple[int, tuple[float, float, float]]]] = {}
    for run in runs:
        p = point(run, last, tail)
        if p is None:
            print(f"# {run['dir']}: fewer than {last} rounds, left out", file=sys.stderr)
            continue
        groups.setdefault(run["config"][x], []).append((int(run["config"]["seed"]), p))
    out = []
    for value in sorted(groups):
        g = sorted(groups[value])
        seeds = [s for s, _ in g]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{x} = {value}: seed listed twice ({seeds}); narrow --where")
        out.append((value, seeds, [mean_sd([p[i] for _, p in g]) for i in range(3)]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--x", required=True, help="the config key on the x-axis")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--round", type=int, default=40)
    p.add_argument("--tail", type=int, default=10)
    p.add_argument("--figure", type=Path)
    args = p.parse_args(argv)
    where = []
    for item in args.where:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--where {item!r}: expected KEY=VALUE")
        where.append((key, value))
    if not args.root.is_dir():
        p.error(f"{args.root} is not a directory")
    runs = [r for r in load(args.root) if matches(r["config"], where)]
    if not runs:
        p.error("no run matches")
    rows = table(runs, args.x, args.round, args.tail)
    first = args.round - args.tail + 1
    print(f"| {args.x} | seeds | ASR @ round {args.round} | ASR, mean of rounds "
          f"{first}-{args.round} | accuracy @ round {args.round} |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for value, seeds, stats in rows:
        cells = " | ".join(f"{m:.3f} ± {s:.3f}" if len(seeds) > 1 else f"{m:.3f}" for m, s in stats)
        print(f"| {value} | {','.join(map(str, seeds))} | {cells} |")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs = [r[0] for r in rows]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, (label, color) in enumerate(
            ((f"ASR @ {args.round}", "tab:red"), (f"ASR, last {args.tail}", "tab:orange"),
             (f"accuracy @ {args.round}", "tab:blue"))
        ):  # fmt: skip
            ax.errorbar(xs, [r[2][i][0] for r in rows], yerr=[r[2][i][1] for r in rows],
                        marker="o", capsize=3, label=label, color=color)  # fmt: skip
        ax.set(xlabel=args.x, ylim=(0, 1))
        ax.set_title(", ".join(f"{k}={v}" for k, v in where if k.startswith(("invariant", "trim"))))
        ax.legend(fontsize=8)
        fig.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
