"""What a sweep costs beyond its rounds: the sweep engine (one Flower run for all points) vs one
Flower run per point, measured side by side in one invocation.

Workload: `--points` points (seeds 0..P-1) of `--rounds` rounds each, FMNIST, 100 IID clients,
10 per round, the CNN, E=1, B=32 (the default experiment's setting).

- engine: ``immunefl sweep FILE`` (all points in one Flower run on warm nodes);
- separate: ``immunefl run`` once per point (a new Flower run, app install, actors, data loads).

Printed: wall time of each side, the steady round time (median of every point's rounds after its
first), ``wall / (points x rounds x steady round)`` for each side (target for the engine:
<= 1.15), and the worst ratio of a point's first round to the steady round (target <= 1.2).

    python benchmarks/sweep_overhead.py --points 8 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _round_times(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]
    return [float(r["round_seconds"]) for r in rows]


def _cli(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "immunefl.cli", *args, "--quiet"], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - t0


def measure(points: int, rounds: int, tmp: Path) -> dict[str, dict[str, float]]:
    sweep = tmp / "sweep.yaml"
    seeds = ", ".join(str(s) for s in range(points))
    sweep.write_text(f"num-server-rounds: {rounds}\nseed: [{seeds}]\nsave-model: false\n")
    out: dict[str, dict[str, float]] = {}
    wall = _cli("sweep", str(sweep), "--set", f"results-dir={tmp / 'r'}", "--set", "run-name=eng",
                "--flwr-home", str(tmp / "h1"))  # fmt: skip
    out["engine"] = {"wall": wall, "dirs": [tmp / "r" / "eng" / f"seed={s}" for s in range(points)]}
    t0 = time.perf_counter()
    for s in range(points):
        _cli("run", "--set", f"num-server-rounds={rounds}", "--set", f"seed={s}", "--set",
             "save-model=false", "--set", f"results-dir={tmp / 'r'}", "--set", f"run-name=sep{s}",
             "--flwr-home", str(tmp / "h2"))  # fmt: skip
    out["separate"] = {"wall": time.perf_counter() - t0,
                       "dirs": [tmp / "r" / f"sep{s}" for s in range(points)]}  # fmt: skip
    for side in out.values():
        times = [_round_times(d) for d in side.pop("dirs")]  # type: ignore[union-attr]
        steady = statistics.median(t for ts in times for t in ts[1:])
        side["steady_round"] = steady
        side["wall_over_rounds"] = side["wall"] / (points * rounds * steady)
        side["worst_first_round"] = max(ts[0] for ts in times) / steady
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="immunefl-sweep-bench-") as tmp:
        res = measure(args.points, args.rounds, Path(tmp))
    for side, r in res.items():
        print(f"{side:9} wall {r['wall']:7.1f}s  steady round {r['steady_round']:.2f}s  "
              f"wall / (points x rounds x steady) {r['wall_over_rounds']:.2f}x  "
              f"worst first round {r['worst_first_round']:.2f}x")  # fmt: skip
    print(f"engine vs separate: {res['separate']['wall'] / res['engine']['wall']:.2f}x faster")


if __name__ == "__main__":
    main()
