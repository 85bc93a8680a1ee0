"""What sharing reference trainings between the attackers of one round saves
(`attacks.shared_estimates`).

Real Fashion-MNIST, 100 IID partitions of 600 images, 20 malicious, batch 64, momentum 0.9, one
epoch: the regime of `configs/invariant-pretrained-fmnist.yaml`. One simulated round in one
worker process with ``--attackers`` attackers, each crafting the adaptive label-flip attack (it
estimates the 20 malicious partitions' benign updates, as ALIE, IPM and the adaptive edge-case
attack do): once with the cache (the code path) and once emptied before every attacker (what
each attacker paid before). Both must send the same tensors; the ratio of median wall times is
printed (expected about (20 + k) / (21 k) for k attackers).

    python benchmarks/attack_sharing.py --attackers 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attackers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from attacks import AttackContext, craft_malicious, shared_estimates
    from task.data import load_dataset
    from task.models import build_model, init_model
    from task.roles import malicious_partitions
    from task.runconfig import RunConfig

    torch.set_num_threads(args.threads)
    cfg = RunConfig.defaults(**{
        "attack": "label-flip", "attack-adaptive": True, "num-partitions": 100,
        "num-malicious": 20, "clients-per-round": 20, "batch-size": 64, "momentum": 0.9,
        "lr": 0.01, "local-epochs": 1, "attack-local-epochs": 1, "attack-mode": "continuous",
    })  # fmt: skip
    ds = load_dataset("fmnist")
    parts = tuple(torch.arange(i * 600, (i + 1) * 600) for i in range(100))
    malicious = malicious_partitions(100, cfg)
    global_state = init_model("cnn-fmnist", "fmnist", 0).state_dict()

    def attacker(pid: int) -> AttackContext:
        return AttackContext(
            config=cfg, dataset=ds, partition_id=pid, indices=parts[pid], partitions=parts,
            malicious=malicious, server_round=1, global_state=global_state,
            build_model=lambda: build_model("cnn-fmnist", "fmnist"), device=torch.device("cpu"),
        )  # fmt: skip

    def one_round(share: bool) -> tuple[float, list[torch.Tensor]]:
        shared_estimates.clear()
        sent = []
        t0 = time.perf_counter()
        for pid in malicious[: args.attackers]:
            if not share:
                shared_estimates.clear()
            state = craft_malicious(attacker(pid))
            sent.append(torch.cat([v.reshape(-1).float() for v in state.values()]))
        return time.perf_counter() - t0, sent

    shared_t, separate_t = [], []
    for _ in range(args.repeat):
        t, with_sharing = one_round(True)
        shared_t.append(t)
        t, without = one_round(False)
        separate_t.append(t)
        if not all(torch.equal(a, b) for a, b in zip(with_sharing, without, strict=True)):
            raise SystemExit("sharing changed what an attacker sends")
    k = args.attackers
    print(
        f"one round, {k} adaptive attackers in one process, 20 malicious partitions of 600 "
        f"images, B=64, E=1, {args.threads} thread(s), {args.repeat} repeats; identical updates"
    )
    print(f"separate : median {statistics.median(separate_t):.2f}s")
    print(f"shared   : median {statistics.median(shared_t):.2f}s")
    print(
        f"RATIO shared/separate (median) = "
        f"{statistics.median(shared_t) / statistics.median(separate_t):.3f} "
        f"(expected ~{(20 + k) / (21 * k):.3f})"
    )


if __name__ == "__main__":
    main()
