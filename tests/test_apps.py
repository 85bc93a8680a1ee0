"""ClientApp handlers and the base strategy, driven with real Flower Messages (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from client_app.app import train, whoami
from client_app.faults import ClientAppError
from strategies import STRATEGIES, build_strategy
from task.models import init_model
from task.schema import load_schema
from tests.conftest import typed_config


@pytest.fixture(autouse=True)
def _identity(task_identity: None) -> None:
    """Flower stamps messages with the running task's identity (see conftest)."""


def _context(node_config: dict, **overrides) -> Context:
    cfg = {**load_schema(), **overrides}
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=cfg)


def _train_msg(state: dict, server_round: int = 1) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": server_round})}
    )
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def test_client_train_trains_its_partition(fmnist_dir: Path) -> None:
    state = init_model("cnn-fmnist", "fmnist", 0).state_dict()
    ctx = _context({"partition-id": 3, "num-partitions": 100})
    reply = train(_train_msg(state), ctx)
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 600 and metrics["steps"] == 19 and metrics["attacked"] == 0
    new = reply.content["arrays"].to_torch_state_dict()
    assert set(new) == set(state)
    assert not torch.equal(new["fc.weight"], state["fc.weight"])
    again = train(_train_msg(state), ctx).content["arrays"].to_torch_state_dict()
    assert all(torch.equal(new[k], again[k]) for k in new)  # same seed, round, partition
    other_round = train(_train_msg(state, 2), ctx).content["arrays"].to_torch_state_dict()
    assert not torch.equal(new["fc.weight"], other_round["fc.weight"])  # data order per round


def test_malicious_node_attacks_only_when_configured(fmnist_dir: Path) -> None:
    state = init_model("cnn-fmnist", "fmnist", 0).state_dict()
    threat = {"num-malicious": 5, "attack": "targeted", "adv-rounds": "2",
              "attack-local-epochs": 1}  # fmt: skip
    malicious = _context({"partition-id": 97, "num-partitions": 100}, **threat)
    reply = train(_train_msg(state), malicious)
    assert reply.content["metrics"]["attacked"] == 1
    attacked = reply.content["arrays"].to_torch_state_dict()
    benign = train(_train_msg(state), _context({"partition-id": 97, "num-partitions": 100}))
    assert benign.content["metrics"]["attacked"] == 0
    msg = _train_msg(state)
    msg.content["config"]["benign-override"] = True  # the AEP counterfactual's request
    override = train(msg, malicious)
    assert override.content["metrics"]["attacked"] == 0
    honest = override.content["arrays"].to_torch_state_dict()
    assert not torch.equal(attacked["fc.weight"], honest["fc.weight"])


def test_whoami_reports_identity_and_role() -> None:
    msg = Message(RecordDict(), dst_node_id=7, message_type="query.whoami")
    info = whoami(msg, _context({"partition-id": 4, "num-partitions": 100})).content["whoami"]
    assert dict(info) == {"partition-id": 4, "num-partitions": 100, "role": "benign",
                          "num-examples": 600}  # fmt: skip
    ctx = _context({"partition-id": 4, "num-partitions": 100, "role": "malicious"})
    assert whoami(msg, ctx).content["whoami"]["role"] == "malicious"
    assert whoami(msg, ctx).content["whoami"]["num-examples"] == 600  # no attack configured
    # a weight-boosting attacker (the FL-WBC authors' mal_boost) claims its boosted size from
    # discovery on, so the discovery cap does not undo its boost; a scaling attacker does not
    weight = {"attack": "targeted", "attack-boost-mode": "weight", "attack-boost": 5.0,
              "num-malicious": 5, "adv-rounds": "2"}  # fmt: skip
    boosted = _context({"partition-id": 4, "num-partitions": 100, "role": "malicious"}, **weight)
    assert whoami(msg, boosted).content["whoami"]["num-examples"] == 3000
    scaled = _context({"partition-id": 4, "num-partitions": 100, "role": "malicious"},
                      **{**weight, "attack-boost-mode": "scale"})  # fmt: skip
    assert whoami(msg, scaled).content["whoami"]["num-examples"] == 600


@pytest.mark.parametrize(
    ("node_config", "needle"),
    [
        ({}, "partition-id"),
        ({"partition-id": 100, "num-partitions": 100}, "outside [0, 100)"),
        ({"partition-id": 1, "num-partitions": 10}, "num-partitions=10 differs"),
        ({"partition-id": 1, "num-partitions": 100, "role": "evil"}, "role='evil'"),
    ],
)
def test_bad_node_config_is_named(node_config: dict, needle: str) -> None:
    msg = Message(RecordDict(), dst_node_id=7, message_type="query.whoami")
    with pytest.raises(ClientAppError) as info:  # the node's error, with its traceback
        whoami(msg, _context(node_config))
    assert needle in str(info.value) and "Traceback" in str(info.value)


def _reply(to: Message, state: dict, n: int) -> Message:
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord(state),
                "metrics": MetricRecord({"num-examples": n, "train_loss": float(n)}),
            }
        ),
        reply_to=to,
    )


def test_fedavg_trains_exactly_the_selected_nodes_and_averages_by_examples() -> None:
    chosen = {1: [11, 12, 13], 2: [14]}
    strategy = build_strategy(typed_config(strategy="fedavg"), lambda r: chosen[r])
    assert isinstance(strategy, STRATEGIES["fedavg"])
    arrays = ArrayRecord({"w": torch.zeros(3)})
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord(), grid=None))
    assert [m.metadata.dst_node_id for m in msgs] == [11, 12, 13]
    assert all(m.metadata.message_type == MessageType.TRAIN for m in msgs)
    assert all(m.content["config"]["server-round"] == 1 for m in msgs)
    values = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 0.0, 0.0]), torch.ones(3)]
    weights = [200, 300, 400]  # none capped (strategies.updates.cap_weights)
    replies = [_reply(m, {"w": v}, n) for m, v, n in zip(msgs, values, weights, strict=True)]
    new, metrics = strategy.aggregate_train(1, replies)
    expected = sum(v * n for v, n in zip(values, weights, strict=True)) / sum(weights)
    np.testing.assert_allclose(new.to_torch_state_dict()["w"].numpy(), expected.numpy(), rtol=1e-6)
    assert metrics["client.train_loss"] == pytest.approx(sum(n * n for n in weights) / sum(weights))
    assert [
        m.metadata.dst_node_id for m in strategy.configure_train(2, arrays, ConfigRecord(), None)
    ] == [14]
    assert list(strategy.configure_evaluate(1, arrays, ConfigRecord(), None)) == []


def test_unknown_strategy_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: fedavg"):
        build_strategy(typed_config(strategy="nope"), lambda r: [])
