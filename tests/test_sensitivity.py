"""scripts/sensitivity.py: per-value mean ± sd over seeds from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script


def _run(root: Path, name: str, config: dict, asr: list[float], acc: float) -> None:
    d = root / name / "point"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    rows = [{"round": i + 1, "asr": a, "benign_acc": acc} for i, a in enumerate(asr)]
    (d / "rounds.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_groups_by_the_value_filters_and_averages_over_seeds(tmp_path: Path, capsys) -> None:
    s = load_script("sensitivity")
    base = {"strategy": "invariant", "invariant-alpha": 0.25, "attack-collude": False}
    _run(tmp_path, "a-seed0", {**base, "seed": 0, "invariant-tau": 0.1}, [0.9, 0.5, 0.3], 0.7)
    _run(tmp_path, "a-seed1", {**base, "seed": 1, "invariant-tau": 0.1}, [0.9, 0.7, 0.5], 0.8)
    _run(tmp_path, "b-seed0", {**base, "seed": 0, "invariant-tau": 0.4}, [0.2, 0.2, 0.1], 0.6)
    other = {**base, "attack-collude": True, "seed": 2, "invariant-tau": 0.1}
    _run(tmp_path, "c-seed2", other, [1.0, 1.0, 1.0], 0.9)  # filtered out by --where
    _run(tmp_path, "d-seed2", {**base, "seed": 2, "invariant-tau": 0.4}, [0.5], 0.5)  # short
    args = [str(tmp_path), "--x", "invariant-tau", "--round", "3", "--tail", "2",
            "--where", "attack-collude=false", "--where", "invariant-alpha=0.25"]  # fmt: skip
    assert s.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| 0.1 | 0,1 | 0.400 ± 0.141 | 0.500 ± 0.141 | 0.750 ± 0.071 |"
    assert lines[3] == "| 0.4 | 0 | 0.100 | 0.150 | 0.600 |"  # seed 2 stopped early: left out


def test_an_unknown_key_or_a_seed_twice_is_an_error(tmp_path: Path) -> None:
    s = load_script("sensitivity")
    cfg = {"strategy": "invariant", "seed": 0, "invariant-tau": 0.1}
    _run(tmp_path, "a", cfg, [0.5], 0.5)
    _run(tmp_path, "b", cfg, [0.5], 0.5)
    with pytest.raises(KeyError, match="no-such-key"):
        s.main([str(tmp_path), "--x", "invariant-tau", "--round", "1", "--where", "no-such-key=1"])
    with pytest.raises(ValueError, match="seed listed twice"):
        s.main([str(tmp_path), "--x", "invariant-tau", "--round", "1"])
