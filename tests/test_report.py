"""`immunefl report` on a fixture results directory."""

from __future__ import annotations

from pathlib import Path

from immunefl.config import load_schema
from immunefl.report import report
from server_app.app import attack_summary
from server_app.results import RunRecorder, summarize


def _run(root: Path, name: str, seed: int, confs: list[float], **cfg) -> None:
    config = {**load_schema(), "run-name": name, "seed": seed, "attack": "targeted",
              "adv-rounds": "2", **cfg}  # fmt: skip
    rec = RunRecorder(root / name)
    rec.write_config(config)
    for r, c in enumerate(confs, start=1):
        rec.append_round({"round": r, "adversarial": r == 2, "benign_acc": 0.5 + 0.1 * r,
                          "benign_loss": 1.0, "mis_conf": c, "round_seconds": 1.0})  # fmt: skip
    summary = summarize(rec.rows, 5.0)
    summary.update(attack_summary(rec.rows, config, [2]))
    rec.write_summary(summary)


def test_report_tables(tmp_path: Path) -> None:
    _run(tmp_path, "a0", 0, [0.1, 0.9, 0.8, 0.6, 0.4, 0.3])
    _run(tmp_path, "a1", 1, [0.1, 0.95, 0.9, 0.7, 0.7, 0.6])
    _run(tmp_path, "w0", 0, [0.1, 0.9, 0.2, 0.1, 0.1, 0.1], **{"client-defense": "wbc"})
    text = report([tmp_path])
    assert "| fedavg | iid | 2 | 1.100 +- 0.000 | 0.550 | 3, >4 |" in text
    assert "| fedavg + FL-WBC s=0.4 | iid | 1 |" in text and "| 1 |" in text
    assert "| a1 | fedavg | iid | 1 | 1.100 | 0.950 | 0.900 | 0.700 | 0.600 | 2: >4 |" in text
