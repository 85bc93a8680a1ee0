"""Behaviour is unchanged: two real runs must reproduce their saved rounds.jsonl bit for bit.

A refactor (issue 17: one typed config, one messages module, attack interfaces) must not move a
single number. This test runs, with real `flwr run` simulations,

- ``default``: the default experiment (``configs/default.yaml``), seed 0, 10 rounds;
- ``attack``: the same with a pixel-trigger backdoor from 10 malicious partitions in rounds 3
  and 6, FL-WBC on the benign clients and the Invariant Aggregator on the server, 6 rounds,

and compares every row with ``tests/golden/<name>.jsonl`` without the wall-time keys
(``server_app.results.TIMING_KEYS``). On the machine the files were saved on (same CPU model,
instruction set torch dispatches to, torch and NumPy versions: ``tests/golden/machine.json``)
the comparison is exact, to the last bit of every float. On another machine, floating-point
kernels may round differently, so integers, strings and lists must still be equal and floats
agree to 0.05 (the test says which comparison it made).

Regenerate, only for a change that is *meant* to change results, and say so in the commit:

    IMMUNEFL_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from server_app.results import TIMING_KEYS
from task.schema import PROJECT_ROOT
from tests.test_e2e_flwr import _launch, _rows

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).parent / "golden"
SCENARIOS = {
    "default": ["--set", "num-server-rounds=10"],
    "attack": [
        "--set", "num-server-rounds=6", "--set", "attack=backdoor", "--set", "num-malicious=10",
        "--set", "adv-rounds=3,6", "--set", "client-defense=wbc", "--set", "strategy=invariant",
    ],
}  # fmt: skip
FLOAT_TOL = 0.05


def machine() -> dict[str, str]:
    """What decides floating-point results besides our code."""
    import numpy
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "machine": platform.machine(),
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _differences(got: Any, want: Any, path: str, exact: bool) -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        extra = sorted(set(got) ^ set(want))
        out = [f"{path}: keys {extra} are in one and not the other"] if extra else []
        for k in sorted(set(got) & set(want)):
            out += _differences(got[k], want[k], f"{path}.{k}", exact)
        return out
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True))
                for d in _differences(g, w, f"{path}[{i}]", exact)]  # fmt: skip
    if isinstance(want, float) and isinstance(got, float) and not exact:
        same = (math.isnan(got) and math.isnan(want)) or abs(got - want) <= FLOAT_TOL
        return [] if same else [f"{path}: {got!r} != {want!r} (tolerance {FLOAT_TOL})"]
    if got == want or (isinstance(want, float) and math.isnan(want) and math.isnan(got)):
        return []
    return [f"{path}: {got!r} != {want!r}"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rounds_are_bit_identical_to_the_saved_runs(
    name: str, tmp_path: Path, fmnist_dir: Path
) -> None:
    out = _launch(
        tmp_path, str(PROJECT_ROOT / "configs" / "default.yaml"), *SCENARIOS[name],
        "--set", f"data-dir={fmnist_dir}", "--set", f"results-dir={tmp_path / 'r'}",
        "--set", f"run-name={name}", "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = _strip(_rows(tmp_path / "r" / name))
    golden, saved_on = GOLDEN / f"{name}.jsonl", GOLDEN / "machine.json"
    if os.environ.get("IMMUNEFL_REGENERATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        saved_on.write_text(json.dumps(machine(), indent=1, sort_keys=True) + "\n")
        pytest.skip(f"regenerated {golden}")
    want = [json.loads(x) for x in golden.read_text().splitlines()]
    exact = json.loads(saved_on.read_text()) == machine()
    assert len(rows) == len(want)
    if name == "attack":  # the scenario really attacked, in the rounds it names
        assert [r["round"] for r in rows if r["adversarial"]] == [3, 6]
        assert all(r["malicious_aggregated"] > 0 for r in rows if r["adversarial"])
    problems = _differences(rows, want, name, exact)
    how = "bit-exact (same machine)" if exact else f"floats within {FLOAT_TOL} (other machine)"
    assert not problems, f"compared {how}:\n" + "\n".join(problems[:40])
