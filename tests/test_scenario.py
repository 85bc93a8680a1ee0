"""Threat scenario schedule, roles and the mitigation-rounds calculator."""

from __future__ import annotations

import pytest

from client_app.node import NodeIdentity
from immunefl.experiments import resolve_config
from server_app.experiment import attack_summary
from server_app.mitigation import asr_threshold, mitigation_rounds
from server_app.scenario import ThreatScenario
from task.roles import malicious_partitions
from task.runconfig import RunConfig
from task.schema import ConfigError
from tests.conftest import typed_config


def cfg(**kw) -> RunConfig:
    return typed_config(**{"attack": "targeted", "num-malicious": 5, **kw})


MAL = list(range(95, 100))
BEN = list(range(95))


def test_explicit_schedule_counts_and_membership() -> None:
    s = ThreatScenario(cfg(**{"adv-rounds": "3,7"}), BEN, MAL)
    assert s.adversarial_rounds(10) == [3, 7]
    for t in range(1, 11):
        plan = s.plan(t)
        assert len(plan.partitions) == 10 == len(set(plan.partitions))
        if t in (3, 7):
            assert plan.adversarial and len(plan.malicious) == 5 and len(plan.benign) == 5
            assert set(plan.malicious) <= set(MAL) and set(plan.benign) <= set(BEN)
        else:
            assert not plan.adversarial and plan.malicious == [] and set(plan.benign) <= set(BEN)


def test_probabilistic_schedule_is_seeded_and_about_right() -> None:
    a = ThreatScenario(cfg(**{"adv-round-prob": 0.1}), BEN, MAL).adversarial_rounds(1000)
    b = ThreatScenario(cfg(**{"adv-round-prob": 0.1}), BEN, MAL).adversarial_rounds(1000)
    c = ThreatScenario(cfg(**{"adv-round-prob": 0.1, "seed": 1}), BEN, MAL).adversarial_rounds(1000)
    assert a == b != c
    assert 70 < len(a) < 130


def test_schedule_and_sampling_do_not_depend_on_the_defense() -> None:
    base = cfg(**{"adv-round-prob": 0.2})
    plans = [ThreatScenario(base, BEN, MAL).plan(t) for t in range(1, 60)]
    for defense in (
        {"client-defense": "wbc", "wbc-s": 0.9},
        {"strategy": "median"},
        {"client-defense": "ldp", "strategy": "invariant"},
    ):
        other = ThreatScenario(cfg(**{**base.as_mapping(), **defense}), BEN, MAL)
        assert [other.plan(t) for t in range(1, 60)] == plans


def test_continuous_mode_samples_everyone() -> None:
    s = ThreatScenario(cfg(**{"attack-mode": "continuous", "num-malicious": 20}), list(range(80)),
                       list(range(80, 100)))  # fmt: skip
    plans = [s.plan(t) for t in range(1, 200)]
    share = sum(len(p.malicious) for p in plans) / sum(len(p.partitions) for p in plans)
    assert 0.15 < share < 0.25  # 20% of clients are malicious
    assert all(p.adversarial == bool(p.malicious) for p in plans)


def test_roles_from_run_config_or_node_config() -> None:
    run = cfg(**{"num-partitions": 10, "num-malicious": 3})
    assert malicious_partitions(10, run) == (7, 8, 9)
    assert malicious_partitions(
        10, cfg(**{**run.as_mapping(), "malicious-placement": "first"})
    ) == (0, 1, 2)
    assert (
        NodeIdentity.from_configs({"partition-id": 8, "num-partitions": 10}, run).role
        == "malicious"
    )
    assert (
        NodeIdentity.from_configs({"partition-id": 1, "num-partitions": 10}, run).role == "benign"
    )
    node_cfg = {"partition-id": 1, "num-partitions": 10, "role": "malicious"}
    ident = NodeIdentity.from_configs(node_cfg, run)
    assert ident.role == "malicious"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"attack": "targeted"}, "needs 'num-malicious' >= 1"),
        ({"attack": "targeted", "num-malicious": "5"}, "needs adversarial rounds"),
        ({"attack": "targeted", "num-malicious": "3", "adv-rounds": "4"}, "'malicious-per-round'"),
        ({"adv-rounds": "4,x"}, "'adv-rounds'"),
        ({"adv-rounds": "500"}, "outside [1, num-server-rounds]"),
        ({"attack": "laser"}, "'attack' is 'laser'; valid: none, targeted"),
        ({"attack": "edge-case", "num-malicious": "5", "adv-rounds": "2"}, "edge-case-file"),
        (
            {"attack-alpha": "1.5", "attack": "targeted", "num-malicious": "5", "adv-rounds": "2"},
            "'attack-alpha'",
        ),
    ],
)
def test_bad_threat_configs_are_named(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, overrides)
    assert needle in str(info.value)


def test_mitigation_rounds_by_hand() -> None:
    conf = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.2, 5: 0.95, 6: 0.9, 7: 0.8, 8: 0.9, 9: 0.99, 10: 0.7}
    # attack at 2: below 0.5 at round 3 -> 1; attack at 5: above until next attack at 9 -> ">3";
    # attack at 9: never below until the end (10) -> ">1"
    assert mitigation_rounds(conf, [2, 5, 9], 0.5, 10) == {2: 1, 5: ">3", 9: ">1"}
    assert mitigation_rounds({1: 0.2}, [1], 0.5, 1) == {1: 0}  # never took hold
    assert mitigation_rounds({3: 0.9, 4: 0.8, 5: 0.6, 6: 0.4}, [3], 0.5, 6) == {3: 3}
    assert asr_threshold({1: 0.02, 2: 0.04, 3: 0.9}, 3) == pytest.approx(0.08)


def test_attack_summary_uses_mis_conf_or_asr() -> None:
    rows = [{"round": r, "adversarial": r == 2, "mis_conf": c}
            for r, c in enumerate([0.1, 0.9, 0.8, 0.4], start=1)]  # fmt: skip
    s = attack_summary(rows, cfg(**{"adv-rounds": "2"}), [2])
    assert s["adversarial_rounds"] == [2] and s["mitigation_rounds"] == {"2": 2}
