"""Overhead of running FedAvg through Flower's simulation engine vs a plain PyTorch loop.

Both sides run the same workload in one invocation: the FL-WBC paper's Fashion-MNIST setting
(100 IID clients, 10 per round, CNN, E=1, B=32, SGD lr 0.01), the same seeded client sampling,
the same local training code and the same server-side evaluation on the full test split after
every round.

- baseline: one Python process, clients trained one after another (torch's default threads);
  half of its rounds run before the Flower run and half after it (same process, the model
  carried over), so a change in background load during the benchmark hits both sides;
- flwr: `immunefl run` (private local SuperLink, `flwr run`, Ray actors with 1 CPU each).

Printed: steady-state seconds per round (median over rounds after `--warmup`), whole-command wall
time, the fixed cost (wall minus the sum of round times: start-up + shutdown), their ratios, and
the peak summed RSS of each side's whole process tree (the SuperLink is detached, so the tree is
found by a tag in the environment, sampled every 0.25 s).

    python benchmarks/sim_overhead.py --rounds 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class TreeMemory:
    """Peaks of the summed RSS and of the summed PSS (shared pages split between the processes
    that map them: what the tree really holds) of all processes whose environment holds `tag`
    (or self), and the per-process PSS at the PSS peak (`top`)."""

    def __init__(self, tag: str | None = None) -> None:
        self.needle = f"IMMUNEFL_BENCH_TAG={tag}".encode() if tag else None
        self.peak = 0
        self.peak_pss = 0
        self.top: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _pids(self) -> list[int]:
        if self.needle is None:
            return [os.getpid()]
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if self.needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
            except OSError:
                continue
        return pids

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = self._pids()
            self.peak = max(self.peak, sum(_rss_of(p) for p in pids))
            pss = [(_pss_of(p), _name_of(p)) for p in pids]
            if sum(x for x, _ in pss) > self.peak_pss:
                self.peak_pss = sum(x for x, _ in pss)
                self.top = sorted(pss, reverse=True)
            time.sleep(0.25)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _proc_kib(pid: int, file: str, field: str) -> int:
    """Bytes of a ``field: N kB`` line of ``/proc/<pid>/<file>`` (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rss_of(pid: int) -> int:
    return _proc_kib(pid, "status", "VmRSS:")


def _pss_of(pid: int) -> int:
    return _proc_kib(pid, "smaps_rollup", "Pss:")


def _name_of(pid: int) -> str:
    """A short name: the module or script a Python process runs, else the executable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for i, w in enumerate(words):
        if w == "-m" and i + 1 < len(words):
            return words[i + 1]
    named = [Path(w).name for w in words[:3] if not w.startswith("-")]
    return " ".join(named[-2:]) or "?"


class Baseline:
    """Plain single-process FedAvg with the project's own data, sampling, training, evaluation.

    `run(first, last)` runs rounds ``first..last`` and may be called again to continue: the
    benchmark runs half of the rounds before the Flower run and half after it, so both sides
    see the same machine (a background load that comes or goes during the measurement
    shows on both sides instead of skewing the ratio).
    """

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.model = None
        self.round_seconds: list[float] = []
        self.eval_seconds: list[float] = []
        self.wall = 0.0
        self.acc = float("nan")

    def run(self, first: int, last: int) -> None:
        t_start = time.perf_counter()
        import torch

        from server_app.sampling import sample_partitions
        from task.allocator import configure_allocator
        from task.data import load_dataset
        from task.models import build_model, init_model
        from task.partition import cached_partitions
        from task.seeding import torch_generator
        from task.training import evaluate, train_sgd

        configure_allocator()  # the process set-up the ServerApp and ClientApp do
        torch.set_num_threads(os.cpu_count() or 1)
        cfg = self.cfg
        ds = load_dataset("fmnist")
        parts = cached_partitions("fmnist", "", "iid", cfg["num-partitions"], cfg["seed"], 0.5)
        if self.model is None:
            self.model = init_model("cnn-fmnist", "fmnist", cfg["seed"])
        model = self.model
        device = torch.device("cpu")
        for r in range(first, last + 1):
            t0 = time.perf_counter()
            states, weights = [], []
            for pid in sample_partitions(
                cfg["seed"], r, range(cfg["num-partitions"]), cfg["clients-per-round"]
            ):
                client = build_model("cnn-fmnist", "fmnist")
                client.load_state_dict(model.state_dict())
                res = train_sgd(
                    client,
                    ds,
                    ds.train,
                    parts[pid],
                    epochs=1,
                    batch_size=32,
                    lr=0.01,
                    momentum=0.0,
                    generator=torch_generator(cfg["seed"], "client-data", r, pid),
                    device=device,
                )
                states.append(client.state_dict())
                weights.append(res.num_examples)
            total = sum(weights)
            model.load_state_dict(
                {
                    k: sum(s[k] * (w / total) for s, w in zip(states, weights, strict=True))
                    for k in states[0]
                }
            )
            t_eval = time.perf_counter()
            _, self.acc = evaluate(model, ds, ds.test, device)
            self.eval_seconds.append(time.perf_counter() - t_eval)
            self.round_seconds.append(time.perf_counter() - t0)
        self.wall += time.perf_counter() - t_start


def run_flwr(rounds: int, cfg: dict, tag: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, IMMUNEFL_BENCH_TAG=tag)
        cmd = [
            sys.executable,
            "-m",
            "immunefl.cli",
            "run",
            "--quiet",
            "--flwr-home",
            f"{tmp}/flwr",
            "--set",
            f"results-dir={tmp}/results",
            "--set",
            "run-name=bench",
            "--set",
            f"num-server-rounds={rounds}",
            "--set",
            f"seed={cfg['seed']}",
            "--set",
            "save-model=false",
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise RuntimeError(f"immunefl run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        rows = [
            json.loads(x)
            for x in Path(f"{tmp}/results/bench/rounds.jsonl").read_text().splitlines()
        ]
    return {
        "wall": wall,
        "rounds": [r["round_seconds"] for r in rows],
        "acc": rows[-1]["benign_acc"],
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = {"num-partitions": 100, "clients-per-round": 10, "seed": args.seed}

    baseline = Baseline(cfg)
    half = (args.rounds + 1) // 2
    with TreeMemory() as mem_base:
        baseline.run(1, half)
    tag = uuid.uuid4().hex
    with TreeMemory(tag) as mem_flwr:
        flwr = run_flwr(args.rounds, cfg, tag)
    with TreeMemory() as mem_base_2:
        baseline.run(half + 1, args.rounds)
    mem_base.peak = max(mem_base.peak, mem_base_2.peak)
    mem_base.peak_pss = max(mem_base.peak_pss, mem_base_2.peak_pss)
    # the plain loop's whole command: its start-up once, then every round (both halves)
    base = {"wall": baseline.wall, "rounds": baseline.round_seconds, "acc": baseline.acc,
            "eval": baseline.eval_seconds}  # fmt: skip

    def steady(res: dict) -> float:
        if res is base:  # each half of the plain loop has its warm-up rounds
            return statistics.median(
                res["rounds"][args.warmup : half] + res["rounds"][half + args.warmup :]
            )
        return statistics.median(res["rounds"][args.warmup :])

    def fixed(res: dict) -> float:
        return res["wall"] - sum(res["rounds"])

    print(f"rounds={args.rounds} warmup={args.warmup} machine: {os.cpu_count()} CPUs")
    print(f"{'':28}{'baseline':>12}{'flwr':>12}{'ratio':>10}")
    rows = [
        ("steady s/round (median)", steady(base), steady(flwr)),
        ("whole command wall s", base["wall"], flwr["wall"]),
        ("fixed start+stop s", fixed(base), fixed(flwr)),
        ("first round s", base["rounds"][0], flwr["rounds"][0]),
        ("peak tree RSS MiB", mem_base.peak / 2**20, mem_flwr.peak / 2**20),
        ("final benign acc", base["acc"], flwr["acc"]),
    ]
    for name, b, f in rows:
        print(f"{name:28}{b:12.3f}{f:12.3f}{f / b:10.3f}")
    rows_after = flwr["rows"][args.warmup :]

    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in rows_after)

    print(
        f"flwr round breakdown (medians): train phase {med('train_phase_seconds'):.3f}s "
        f"(a node's own work {med('client.seconds'):.3f}s x {cfg['clients-per-round']} nodes), "
        f"server evaluation {med('eval_seconds'):.3f}s, aggregation {med('aggregate_seconds'):.3f}s"
    )
    before, after = base["rounds"][args.warmup : half], base["rounds"][half + args.warmup :]
    if before and after:
        print(f"baseline steady s/round before / after the flwr run: "
              f"{statistics.median(before):.3f} / {statistics.median(after):.3f}")  # fmt: skip
    print(f"baseline round breakdown (medians): evaluation "
          f"{statistics.median(base['eval'][args.warmup:]):.3f}s")  # fmt: skip
    print(f"RATIO steady_state={steady(flwr) / steady(base):.3f} (target <= 1.10)")
    print(f"RATIO whole_command={flwr['wall'] / base['wall']:.3f} (target <= 1.25)")
    print(f"RATIO first_round={flwr['rounds'][0] / steady(flwr):.3f} of a steady round "
          f"(target <= 1.2)")  # fmt: skip
    print(f"RATIO peak_memory={mem_flwr.peak / mem_base.peak:.3f} (target <= 2)")
    print(f"peak PSS MiB: baseline {mem_base.peak_pss / 2**20:.0f}, flwr "
          f"{mem_flwr.peak_pss / 2**20:.0f} ({mem_flwr.peak_pss / mem_base.peak_pss:.2f}x); "
          "flwr per process at its peak:")  # fmt: skip
    for pss, name in mem_flwr.top:
        print(f"  {pss / 2**20:7.0f}  {name[:70]}")
    print(f"FIXED flwr start+shutdown={fixed(flwr):.1f}s (target <= 10 s)")


if __name__ == "__main__":
    main()
