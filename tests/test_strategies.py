"""Strategies on real Flower Messages: screening, skipping, agreement with Flower's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg

from immunefl.experiments import resolve_config
from strategies import STRATEGIES, build_strategy
from task.runconfig import RunConfig
from task.schema import ConfigError
from tests.conftest import typed_config

NODES = list(range(101, 111))


@pytest.fixture(autouse=True)
def _identity(task_identity: None) -> None:
    """Flower stamps messages with the running task's identity (see conftest)."""


def make(name: str, **overrides):
    cfg = typed_config(**{"strategy": name, "device": "cpu", **overrides})
    return build_strategy(cfg, lambda r: NODES)


def global_state() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(4, 3), "b": torch.zeros(3), "steps": torch.tensor(5)}


def reply(msg: Message, state: dict, n: float | None = 10) -> Message:
    metrics = MetricRecord({"num-examples": n, "train_loss": 1.0} if n is not None else {})
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)


def round_trip(strategy, states: list[dict], weights=None):
    msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
    weights = weights or [10] * len(states)
    replies = [reply(m, s, w) for m, s, w in zip(msgs, states, weights, strict=False)]
    return strategy.aggregate_train(1, replies)


def benign_states(k: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "w": torch.randn(4, 3, generator=g),
            "b": torch.randn(3, generator=g),
            "steps": torch.tensor(5 + i),
        }
        for i in range(k)
    ]


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed-mean", "invariant", "krum", "cdp"])
def test_garbage_replies_are_rejected_counted_and_the_round_goes_on(name: str) -> None:
    good = benign_states(7)
    nan = {**good[0], "w": torch.full((4, 3), float("nan"))}
    wrong_shape = {**good[0], "w": torch.zeros(5, 3)}
    huge = {**good[0], "w": torch.full((4, 3), 1e6)}
    strategy = make(name, **{"max-update-norm": 1000.0, "krum-f": 1, "trim-beta": 0.1})
    arrays, metrics = round_trip(strategy, [*good, nan, wrong_shape, huge])
    assert metrics["rejected_replies"] == 3
    assert metrics["aggregated_replies"] == 7 or name == "krum"
    new = arrays.to_torch_state_dict()
    assert torch.isfinite(new["w"]).all() and new["w"].shape == (4, 3)
    assert float(new["w"].abs().max()) < 10  # the 1e6 update never got in
    assert metrics["aggregate_seconds"] >= 0


def test_fedavg_on_pseudo_gradients_equals_weighted_average_of_models() -> None:
    states = benign_states(3)
    arrays, metrics = round_trip(make("fedavg"), states, weights=[2, 3, 4])  # none capped
    expected = sum(s["w"] * w for s, w in zip(states, [2, 3, 4], strict=True)) / 9
    torch.testing.assert_close(arrays.to_torch_state_dict()["w"], expected)
    assert arrays.to_torch_state_dict()["steps"].item() == 6  # integer buffer: median
    assert metrics["client.train_loss"] == 1.0


def test_bad_weight_and_missing_metrics_are_rejected() -> None:
    states = benign_states(3)
    _, metrics = round_trip(make("fedavg"), states, weights=[10, -1, float("nan")])
    assert metrics["rejected_replies"] == 2 and metrics["aggregated_replies"] == 1


def test_below_min_replies_the_round_is_skipped() -> None:
    strategy = make("fedavg", **{"min-replies": 3})
    states = benign_states(3)
    states[0] = {**states[0], "w": torch.full((4, 3), float("inf"))}
    arrays, metrics = round_trip(strategy, states)
    assert arrays is None and metrics["rejected_replies"] == 1
    assert metrics["aggregated_replies"] == 0  # two were accepted, none aggregated


def test_rule_that_cannot_run_skips_the_round_instead_of_crashing() -> None:
    strategy = make("trimmed-mean", **{"trim-beta": 0.4})  # fine for 10, not for 2 replies
    arrays, metrics = round_trip(strategy, benign_states(2))
    assert arrays is None and metrics["aggregated_replies"] == 0


def test_error_replies_count_as_failed_not_aggregated() -> None:
    strategy = make("median")
    msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
    from flwr.app import Error

    replies = [reply(m, s) for m, s in zip(msgs[:3], benign_states(3), strict=True)]
    replies.append(Message(Error(code=1, reason="client crashed"), reply_to=msgs[3]))
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics["aggregated_replies"] == 3


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("median", FedMedian()), ("trimmed-mean", FedTrimmedAvg(beta=0.2))],
)
def test_same_result_as_flowers_rule_on_the_same_replies(ours: str, theirs) -> None:
    states = [{k: v for k, v in s.items() if k != "steps"} for s in benign_states(10, seed=4)]
    strategy = make(ours, **{"trim-beta": 0.2})
    msgs = list(
        strategy.configure_train(
            1,
            ArrayRecord({k: v for k, v in global_state().items() if k != "steps"}),
            ConfigRecord(),
            None,
        )
    )
    replies = [reply(m, s) for m, s in zip(msgs, states, strict=True)]
    mine, _ = strategy.aggregate_train(1, replies)
    ref, _ = theirs.aggregate_train(1, replies)
    for key in ("w", "b"):
        np.testing.assert_allclose(mine[key].numpy(), ref[key].numpy(), rtol=1e-5, atol=1e-6)


def test_invariant_reports_mask_density() -> None:
    g = torch.Generator().manual_seed(0)
    states = []
    for _ in range(10):
        w = torch.randn(4, 3, generator=g)
        w[0] = 1.0 + torch.rand(3, generator=g)  # row 0: all clients agree (positive)
        states.append({"w": w, "b": torch.randn(3, generator=g), "steps": torch.tensor(5)})
    arrays, metrics = round_trip(make("invariant", **{"invariant-tau": 0.6}), states)
    assert 3 / 15 <= metrics["mask_density"] <= 1.0
    assert metrics["masked_out_fraction"] == pytest.approx(1 - metrics["mask_density"])
    assert metrics["trimmed_count"] == 6  # ceil(0.25 * 10) = 3 per side
    w = arrays.to_torch_state_dict()["w"]
    assert bool((w[0] > 0).all())


def test_dp_fixed_wrapper_screens_then_clips_and_adds_noise() -> None:
    strategy = make("dp-fixed", **{"dp-clip": 0.1, "dp-noise-multiplier": 0.0})
    states = benign_states(10)
    states[0] = {**states[0], "b": torch.full((3,), float("nan"))}
    arrays, metrics = round_trip(strategy, states)
    assert metrics["rejected_replies"] == 1
    new = arrays.to_torch_state_dict()
    norm = torch.sqrt(sum((v.float() ** 2).sum() for k, v in new.items() if k != "steps"))
    assert float(norm) <= 0.1 + 1e-5  # mean of clipped updates


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"strategy": "trimmed-mean", "trim-beta": "0.5"}, "'trim-beta' 0.5"),
        ({"strategy": "invariant", "invariant-tau": "1.0"}, "'invariant-tau' must be in [0, 1)"),
        (
            {"strategy": "invariant", "invariant-alpha": "0.45", "clients-per-round": "2"},
            "'invariant-alpha'",
        ),
        ({"strategy": "krum", "krum-f": "4"}, "Krum needs clients-per-round > 2*f + 2"),
        ({"strategy": "bulyan", "krum-f": "2"}, "Bulyan needs"),
        ({"strategy": "rlr", "rlr-theta": "11"}, "'rlr-theta'"),
        ({"strategy": "cdp", "cdp-clip": "0"}, "'cdp-clip' must be a finite number > 0"),
        ({"min-replies": "11"}, "'min-replies' (11)"),
        ({"max-update-norm": "-1"}, "'max-update-norm'"),
    ],
)
def test_invalid_hyperparameters_fail_before_round_one(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(None, overrides)
    assert needle in str(info.value)


def test_every_registered_strategy_builds_from_defaults() -> None:
    for name in STRATEGIES:
        cfg = RunConfig.from_mapping(resolve_config(None, {"strategy": name}))
        assert build_strategy(cfg, lambda r: NODES) is not None


def test_aggregation_does_not_depend_on_reply_arrival_order() -> None:
    g = torch.Generator().manual_seed(1)
    states = [{"w": torch.randn(4, 3, generator=g) * 1e3, "b": torch.randn(3, generator=g),
               "steps": torch.tensor(5)} for _ in range(10)]  # fmt: skip
    results = []
    for order in (list(range(10)), list(reversed(range(10))), [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]):
        strategy = make("fedavg")
        msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
        replies = [reply(msgs[i], states[i], 10 + i) for i in order]
        arrays, _ = strategy.aggregate_train(1, replies)
        results.append(arrays.to_torch_state_dict()["w"])
    assert all(torch.equal(results[0], r) for r in results[1:])  # bit-identical


@pytest.mark.parametrize("name", ["fedavg", "krum", "multikrum", "bulyan", "dp-fixed", "median"])
def test_replies_with_different_metric_keys_aggregate_and_average_per_key(name: str) -> None:
    """Attackers and FL-WBC nodes report different metrics; no rule may fail on that, and a key
    is averaged over the nodes that sent it (not diluted by the ones that did not)."""
    strategy = make(name, **{"krum-f": 1, "clients-per-round": 10})
    msgs = list(strategy.configure_train(1, ArrayRecord(global_state()), ConfigRecord(), None))
    replies = []
    for i, (m, s) in enumerate(zip(msgs, benign_states(10), strict=True)):
        if i < 3:  # "malicious": only the weight and a flag
            metrics = MetricRecord({"num-examples": 10, "attacked": 1})
        else:
            metrics = MetricRecord({"num-examples": 10, "attacked": 0, "train_loss": 2.0,
                                    "wbc_perturbed_fraction": 0.5})  # fmt: skip
        replies.append(Message(RecordDict({"arrays": ArrayRecord(s), "metrics": metrics}),
                               reply_to=m))  # fmt: skip
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics["aggregated_replies"] == 10
    assert metrics["client.train_loss"] == pytest.approx(2.0)  # Flower's helper would say 1.4
    assert metrics["client.wbc_perturbed_fraction"] == pytest.approx(0.5)
    assert metrics["client.attacked"] == pytest.approx(0.3)


@pytest.mark.parametrize(("name", "f"), [("krum", 1), ("multikrum", 1), ("bulyan", 1)])
def test_flowers_distance_rules_leave_a_far_update_out(name: str, f: int) -> None:
    """Krum's score (the squared distances to the n - f - 2 nearest others) is largest for an
    update far from the honest cluster, so none of Flower's three rules lets it in."""
    honest = [{**s, "w": 0.1 * s["w"] + 1.0, "b": 0.1 * s["b"] + 1.0} for s in benign_states(6)]
    far = {**honest[0], "w": torch.full((4, 3), 50.0), "b": torch.full((3,), 50.0)}
    strategy = make(name, **{"krum-f": f, "multikrum-m": 3, "clients-per-round": 10})
    arrays, metrics = round_trip(strategy, [*honest, far])
    assert metrics["rejected_replies"] == 0  # the far update passed screening: the rule decides
    w = arrays.to_torch_state_dict()["w"]
    assert float(w.max()) < 2.0  # nothing of the 50s reached the model
