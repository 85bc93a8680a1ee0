"""End-to-end: every attack of issue 30 through a real `flwr run` sweep, against one no-attack
baseline of the same seed (one `immunefl sweep`, one SuperLink, 10 clients, 2 rounds), on the
first 6000 training and 2000 test images of the real Fashion-MNIST (600 per client).

Round 1 is benign in every point (so all points share the model after it), round 2 is
adversarial with 2 attackers among 6 clients (Fang-Krum's bound: 6 >= 2c + 2). Every attack
must be delivered (both malicious updates reach the rule). What one attacked round can show:

- label flipping: benign accuracy below the baseline's (measured 0.541 vs 0.591);
- the backdoors: ASR up from round 1 (measured 0.026 -> 1.0 for both);
- Mimic: both attackers send one benign node's exact update (the replay of
  `attacks.knowledge` is bit-exact);
- Min-Max, Min-Sum, Fang (both): every attacker sends the update the attack computes (identical
  for Min-Max/Min-Sum/Fang-Krum). Not an accuracy threshold: one early round of 2 of 6 clients
  moves accuracy little and not always down (measured on this subset: min-max/std 0.561,
  min-sum/sign 0.574, fang-trmean/partial 0.586, fang-krum 0.573 vs 0.591; on the whole set
  all four ended above the baseline's, 0.768-0.771 vs 0.762). Their effect over many rounds is
  in docs/results.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from task.schema import PROJECT_ROOT

pytestmark = pytest.mark.slow

UNTARGETED = ("min-max", "min-sum", "fang-trmean", "fang-krum", "label-flip")
# one round cannot show a pure slow-down: with p = -mu/|mu| (the default) Min-Max/Min-Sum send a
# shorter benign step, which can help early (measured on the whole set: 0.7685 vs 0.7622); the
# std and sign perturbations and Fang's partial-knowledge values reverse small coordinates
VARIANT = {
    "min-max": ", minmax-perturbation: std",
    "min-sum": ", minmax-perturbation: sign",
    "fang-trmean": ", attack-knowledge: partial",
}
BACKDOORS = ("model-replacement", "neurotoxin")
SWEEP = """\
num-partitions: 10
clients-per-round: 6
num-server-rounds: 2
num-malicious: 2
malicious-per-round: 2
adv-rounds: "2"
attack-local-epochs: 2
save-model: false
variants:
""" + "".join(
    f"  - {{attack: {a}{VARIANT.get(a, '')}}}\n" for a in ("none", *UNTARGETED, "mimic", *BACKDOORS)
)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "rounds.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, fmnist_subset_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("attacks")
    (tmp / "attacks.yaml").write_text(SWEEP)
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "sweep", str(tmp / "attacks.yaml"),
         "--flwr-home", str(tmp / "flwr-home"), "--set", f"results-dir={tmp / 'res'}",
         "--set", "run-name=atk", "--set", f"data-dir={fmnist_subset_dir}", "--quiet"],
        capture_output=True, text=True, timeout=1500, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return tmp / "res" / "atk"


def test_every_new_attack_is_delivered_and_moves_its_metric(sweep: Path) -> None:
    base = _rows(sweep / "attack=none")
    assert [r["adversarial"] for r in base] == [False, False]
    for attack in (*UNTARGETED, "mimic", *BACKDOORS):
        (run,) = [d for d in sweep.iterdir() if d.name.split("_")[0] == f"attack={attack}"]
        rows = _rows(run)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed", (attack, summary)
        assert summary["attack_not_delivered_rounds"] == [], (attack, summary)
        assert [r["adversarial"] for r in rows] == [False, True], attack
        assert all(r["malicious_aggregated"] == 2 for r in rows[1:]), (attack, rows)
        assert rows[0]["benign_acc"] == pytest.approx(base[0]["benign_acc"])  # same round 1
        if attack == "label-flip":
            assert rows[-1]["benign_acc"] < base[-1]["benign_acc"] - 0.02, (attack, rows, base)
        elif attack in BACKDOORS:
            assert rows[-1]["asr"] > rows[0]["asr"] + 0.2, (attack, rows)
        else:  # a shared update appears twice (Min-Max/Min-Sum/Fang-Krum), Mimic's three times
            norms = [round(x, 4) for x in rows[-1]["update_norms"]]
            repeats = max(norms.count(x) for x in norms)
            if attack == "mimic":
                assert repeats == 3, (attack, norms)
            elif attack != "fang-trmean":  # Fang's trimmed-mean values are drawn per attacker
                assert repeats == 2, (attack, norms)
