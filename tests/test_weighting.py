"""What the weight cap withstands (the formula against `cap_weights`), and `weighting` (issue 26):
``equal`` and ``assigned`` give a liar's claimed example count no weight at all."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord

from immunefl.experiments import resolve_config
from strategies.updates import cap_weights
from task.schema import PROJECT_ROOT, ConfigError
from tests.test_strategies import NODES, global_state, make, reply


@pytest.fixture(autouse=True)
def _identity(task_identity: None) -> None:
    """Flower stamps messages with the running task's identity (see conftest)."""


def liar_share(q: float, r: float) -> float:
    """The weight share of a fraction q of colluding liars claiming the cap r x median."""
    return q * r / (q * r + 1 - q)


@pytest.mark.parametrize("r", [1.0, 1.5, 2.0, 3.0, 5.0])
@pytest.mark.parametrize("n", [4, 5, 10, 20])
def test_the_liars_share_is_the_formula_and_a_majority_exactly_above_one_over_1_plus_r(
    n: int, r: float
) -> None:
    for k in range(1, n // 2 + 1):  # while the (lower) median is an honest claim
        claims = [600.0] * (n - k) + [1e30] * k  # colluding liars, each claiming the most
        w, _ = cap_weights(claims, [None] * n, cap_ratio=r)
        share = sum(w[n - k :]) / sum(w)
        if k == 1 and r >= n - 1:  # one liar at the cap would hold half: lowered to honest
            assert share == pytest.approx(1 / n)
            continue
        assert share == pytest.approx(liar_share(k / n, r))
        majority = Fraction(k, n) > 1 / Fraction(1 + r).limit_denominator()
        assert (share > 0.5) == majority, (k, n, r, share)
    w, _ = cap_weights([600.0] * 3 + [1e30] * 2, [None] * 5, cap_ratio=2.0)
    assert sum(w[3:]) / sum(w) == pytest.approx(4 / 7)  # 2 of 5 take 57 % at r = 2


def _round(strategy, claims: list[float]) -> tuple[torch.Tensor, list]:
    msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
    states = [{"w": torch.full((4, 3), float(i)), "b": torch.zeros(3), "steps": torch.tensor(5)}
              for i in range(len(claims))]  # fmt: skip
    arrays, metrics = strategy.aggregate_train(
        1, [reply(m, s, c) for m, s, c in zip(msgs, states, claims, strict=False)]
    )
    return arrays.to_torch_state_dict()["w"], strategy.last_screened.capped


def test_equal_weighting_gives_a_lying_claim_nothing() -> None:
    claims = [600.0] * (len(NODES) - 1) + [1e30]  # update i is all i: the mean is visible
    claimed, capped = _round(make("fedavg"), claims)
    assert capped  # today's weights: the liar is capped at 2 x median, still twice as heavy
    strategy = make("fedavg", weighting="equal")
    strategy.weighting = "equal"  # the ServerApp sets it from the config (server_app/app.py)
    equal, capped = _round(strategy, claims)
    mean = sum(range(len(claims))) / len(claims)
    assert torch.allclose(equal, torch.full((4, 3), mean)) and not capped
    assert float(claimed[0, 0]) > mean  # the liar (the largest update) pulled the claimed mean


def test_assigned_weighting_uses_the_servers_sizes_not_the_claims() -> None:
    strategy = make("fedavg", weighting="assigned")
    strategy.weighting = "assigned"  # the ServerApp sets these (server_app/app.py)
    strategy.assigned_sizes.update({node: 100.0 * (i + 1) for i, node in enumerate(NODES)})
    claims = [1e30] + [1.0] * (len(NODES) - 1)
    w, _ = _round(strategy, claims)
    sizes = [100.0 * (i + 1) for i in range(len(NODES))]
    expected = sum(i * s for i, s in enumerate(sizes)) / sum(sizes)
    assert float(w[0, 0]) == pytest.approx(expected)


def test_weighting_is_checked_and_assigned_is_refused_where_the_server_cannot_know_sizes() -> None:
    assert resolve_config(None, {"weighting": "equal"})["weighting"] == "equal"
    with pytest.raises(ConfigError, match="'weighting' is 'mean'; valid: claimed, equal, assigned"):
        resolve_config(None, {"weighting": "mean"})
    out = subprocess.run(
        [sys.executable, "-m", "immunefl.cli", "deploy", "run", "--superlink", "127.0.0.1:9",
         "--insecure", "--set", "weighting=assigned", "--set", "num-partitions=2",
         "--set", "clients-per-round=2"],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "'weighting' assigned" in out.stderr and "Traceback" not in out.stderr
