"""`immunefl matrix`: the file format, its expansion, and the report of a (fixture) matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from immunefl.matrix import expand_matrix, point_name
from immunefl.matrix_report import load_cells, matrix_report, ranking
from server_app.experiment import attack_summary
from server_app.results import RunRecorder, summarize
from task.schema import ConfigError, load_schema
from tests.conftest import typed_config

FILE = """
description: two attacks, three defenses
base: {num-server-rounds: 3, num-partitions: 10, clients-per-round: 5}
attacks:
  - {name: none, attack: none}
  - {name: sign-flip, attack: sign-flip, num-malicious: 2, attack-mode: continuous}
defenses:
  - {name: fedavg, strategy: fedavg}
  - {name: median, strategy: median}
  - {name: fedavg+wbc, strategy: fedavg, client-defense: wbc}
seeds: [0, 1]
presets:
  quick: {seeds: [0], num-server-rounds: 1}
"""


def _file(tmp_path: Path, text: str = FILE) -> Path:
    f = tmp_path / "m.yaml"
    f.write_text(text)
    return f


def test_every_attack_meets_every_defense_for_every_seed(tmp_path: Path) -> None:
    points = expand_matrix(_file(tmp_path))
    assert len(points) == 2 * 3 * 2
    cells = [c for c, _ in points]
    assert cells[0] == {"defense": "fedavg", "attack": "none", "seed": 0}
    cfg = dict(points[-1][1])
    assert (cfg["strategy"], cfg["client-defense"], cfg["attack"], cfg["seed"]) == (
        "fedavg", "wbc", "sign-flip", 1)  # fmt: skip
    assert cfg["num-server-rounds"] == 3 and cfg["num-partitions"] == 10
    assert point_name(cells[-1]) == "fedavg+wbc__sign-flip__s1"


def test_presets_and_extra_axes(tmp_path: Path) -> None:
    quick = expand_matrix(_file(tmp_path), preset="quick")
    assert len(quick) == 6 and all(c["num-server-rounds"] == 1 for _, c in quick)
    f = _file(tmp_path, FILE.replace("seeds: [0, 1]", "seeds: [0]\ndirichlet-alpha: [0.1, 1.0]"))
    points = expand_matrix(f, {"partitioning": "dirichlet"})
    assert len(points) == 12 and points[1][0] == {"defense": "fedavg", "attack": "none",
                                                 "dirichlet-alpha": 1.0, "seed": 0}  # fmt: skip
    assert point_name(points[1][0]) == "fedavg__none__dirichlet-alpha=1.0__s0"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (("strategy: median", "strategy: medain"), "'strategy' is 'medain'; valid: fedavg"),
        (("attack: sign-flip", "attack: sign-flop"), "valid: none, targeted"),
        (("client-defense: wbc", "client-defence: wbc"), "unknown key 'client-defence'"),
        (("- {name: median,", "- {name: fedavg,"), "'defenses' names fedavg more than once"),
        (("seeds: [0, 1]", "seeds: zero"), "'seeds' must be a non-empty list of integers"),
        (("seeds: [0, 1]", "seeds: [0]\nnum-malicious: [1, 2]"), "sets num-malicious, which"),
    ],
)
def test_bad_names_and_keys_are_named_before_anything_runs(tmp_path, change, needle) -> None:
    with pytest.raises(ConfigError) as info:
        expand_matrix(_file(tmp_path, FILE.replace(*change)))
    assert needle in str(info.value)


def _point(root: Path, cell: dict, acc: list[float], asr: list[float] | None = None,
           delivered: bool = True, failed: bool = False) -> dict:  # fmt: skip
    name = point_name(cell)
    attack = "none" if cell["attack"] == "none" else "backdoor"
    config = {**load_schema(), "run-name": name, "attack": attack, "seed": cell["seed"],
              "attack-mode": "continuous", "num-malicious": 2}  # fmt: skip
    rec = RunRecorder(root / name)
    rec.write_config(config)
    if not failed:
        for r, a in enumerate(acc, 1):
            row = {"round": r, "adversarial": attack != "none", "benign_acc": a,
                   "benign_loss": 1.0, "round_seconds": 1.0, "model_updated": True,
                   "malicious_aggregated": 1 if delivered else 0}  # fmt: skip
            if asr is not None:
                row["asr"] = asr[r - 1]
            rec.append_round(row)
        summary = summarize(rec.rows, 3.0)
        summary.update(attack_summary(rec.rows, typed_config(**config), []))
        summary["status"] = "completed"
        rec.write_summary(summary)
    return {"cell": cell, "run_name": name, "ok": not failed}


def test_the_report_ranks_by_worst_case_and_never_counts_an_undelivered_attack(tmp_path):
    pts = []
    for seed in (0, 1):
        pts += [
            _point(tmp_path, {"defense": "fedavg", "attack": "none", "seed": seed}, [0.8, 0.9]),
            _point(tmp_path, {"defense": "fedavg", "attack": "bd", "seed": seed}, [0.8, 0.85],
                   [0.5, 0.9 + 0.02 * seed]),
            _point(tmp_path, {"defense": "median", "attack": "none", "seed": seed}, [0.8, 0.88]),
            _point(tmp_path, {"defense": "median", "attack": "bd", "seed": seed}, [0.8, 0.87],
                   [0.1, 0.05], delivered=seed == 0),
            _point(tmp_path, {"defense": "krum", "attack": "none", "seed": seed}, [0.7, 0.8]),
            _point(tmp_path, {"defense": "krum", "attack": "bd", "seed": seed}, [0.7, 0.6],
                   [0.2, 0.3], failed=seed == 1),
        ]  # fmt: skip
    (tmp_path / "matrix.json").write_text(json.dumps({"file": "m.yaml", "points": pts}))
    cells, _ = load_cells(tmp_path)
    by = {(c.defense, c.attack): c for c in cells}
    assert by[("median", "bd")].state == "n/d" and by[("krum", "bd")].state == "failed"
    rows = {r["defense"]: r for r in ranking(cells)}
    assert rows["fedavg"]["worst_acc"] == pytest.approx(0.85)
    assert rows["fedavg"]["worst_attack_metric"] == pytest.approx(0.91)
    assert rows["median"]["left_out"] == ["bd (n/d)"]  # never shown as defended
    assert rows["krum"]["left_out"] == ["bd (failed)"]
    assert rows["median"]["clean_cost"] == pytest.approx(0.02)
    text = matrix_report(tmp_path, tmp_path / "out")
    assert "| fedavg | 0.900 +- 0.000 | 0.850 +- 0.000 |" in text
    assert (
        "| median | 0.880 +- 0.000 | n/d |" in text and "| krum | 0.800 +- 0.000 | failed |" in text
    )
    assert "| 1 | fedavg | 0.850 | bd | 0.910 |" in text
    for kind in ("accuracy", "attack-end", "attack-max"):
        assert (tmp_path / "out" / f"matrix-{kind}.png").stat().st_size > 1000
        assert (tmp_path / "out" / f"matrix-{kind}.svg").exists()
    assert (tmp_path / "out" / "report.md").read_text() == text


@pytest.mark.slow
def test_the_matrix_runs_reports_marks_a_failed_point_and_resumes(matrix_one_node: Path) -> None:
    import subprocess

    from task.schema import PROJECT_ROOT

    out = (matrix_one_node / "stdout.txt").read_text()
    root = matrix_one_node / "r" / "mx"
    assert "6 points in one Flower run" in out
    meta = json.loads((root / "matrix.json").read_text())
    assert [p["ok"] for p in meta["points"]] == [True, True, True, True, False, False]
    report = (root / "report.md").read_text()
    assert "| buggy | failed | failed |" in report
    assert (root / "matrix-accuracy.png").stat().st_size > 1000
    done = root / "median__sign-flip__s0" / "summary.json"
    mtime = done.stat().st_mtime
    args = json.loads((matrix_one_node / "args.json").read_text())
    again = subprocess.run(
        [*args, "--resume", str(root), "--flwr-home", str(matrix_one_node / "h2")],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=PROJECT_ROOT,
    )
    assert "resuming the sweep: 4 points finished, 2 to run" in again.stdout, again.stderr
    assert done.stat().st_mtime == mtime  # no finished point runs again
