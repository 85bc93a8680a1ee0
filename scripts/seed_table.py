"""Mean +- sd over seeds of published sweep results (the tables of docs/results.md).

Each argument is a directory holding one sweep per seed (``<sweep>-s<seed>/<point>/``, each point
with ``config.json``, ``rounds.jsonl`` and ``summary.json``, as in ``docs/data/``). Points are
grouped by their directory name across the seeds; a point that is missing or did not finish in
a seed is reported as such, never averaged in.

    python scripts/seed_table.py docs/data/attacks-new
    python scripts/seed_table.py docs/data/defenses-no-attack --baseline strategy=fedavg
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def _fmt(values: list[float], scale: float, digits: int) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def collect(root: Path) -> dict[str, dict[int, dict]]:
    """point name -> seed -> {"summary": ..., "rows": the rounds}."""
    points: dict[str, dict[int, dict]] = {}
    for sweep in sorted(p for p in root.iterdir() if p.is_dir()):
        for point in sorted(p for p in sweep.iterdir() if p.is_dir()):
            config = json.loads((point / "config.json").read_text())
            summary_path = point / "summary.json"
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            rows = [json.loads(x) for x in (point / "rounds.jsonl").read_text().splitlines()]
            points.setdefault(point.name, {})[int(config["seed"])] = {
                "summary": summary, "rows": rows}  # fmt: skip
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--baseline", default="", help="point name the 'vs' column compares to, "
                        "per seed (default: the no-attack point of the same rule)")  # fmt: skip
    args = parser.parse_args(argv)
    points = collect(args.root)
    seeds = sorted({s for by_seed in points.values() for s in by_seed})
    print(f"seeds found: {seeds}")
    print("| point | seeds | final benign acc % | vs baseline, same seed, points | final ASR % "
          "| max ASR % | not delivered rounds | aggregation s/round (median) "
          "| status |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, by_seed in points.items():
        done = {s: r for s, r in by_seed.items() if r["summary"].get("status") == "completed"}
        if args.baseline:
            base_name = args.baseline
        else:  # attack=X_strategy=Y... -> attack=none_strategy=Y...
            head, _, rest = name.partition("_")
            base_name = f"attack=none_{rest}" if head.startswith("attack=") else ""
        base = points.get(base_name, {})
        accs = [r["summary"]["final_benign_acc"] for r in done.values()]
        deltas = [r["summary"]["final_benign_acc"] - base[s]["summary"]["final_benign_acc"]
                  for s, r in done.items() if s in base and base[s]["summary"]
                  and name != base_name]  # fmt: skip
        asr = [r["rows"][-1]["asr"] for r in done.values() if "asr" in r["rows"][-1]]
        max_asr = [max(row["asr"] for row in r["rows"]) for r in done.values()
                   if "asr" in r["rows"][-1]]  # fmt: skip
        agg = [statistics.median(row["aggregate_seconds"] for row in r["rows"])
               for r in done.values()]  # fmt: skip
        undelivered = sorted({tuple(r["summary"].get("attack_not_delivered_rounds", []))
                              for r in done.values()})  # fmt: skip
        missing = [s for s in seeds if s not in done]
        status = "completed" if not missing else f"missing/unfinished seeds {missing}"
        print(f"| {name} | {','.join(map(str, sorted(done)))} | {_fmt(accs, 100, 1)} | "
              f"{_fmt(deltas, 100, 2) if deltas else '-'} | {_fmt(asr, 100, 1)} | "
              f"{_fmt(max_asr, 100, 1)} | {undelivered if undelivered != [()] else '[]'} | "
              f"{_fmt(agg, 1, 3)} | {status} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
